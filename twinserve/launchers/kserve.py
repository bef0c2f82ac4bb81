"""How to start the third stack natively: KServe's model server running ONNX Runtime (services/kserve/),
from its own environment (.venv-kserve: kserve's pins conflict with the project's, see the Makefile)."""

from __future__ import annotations

import json
from pathlib import Path

from twinserve.supervisor import Launch, poll_models, ready_when_all
from twinserve.settings import ROOT, StackSettings


def onnx_dir(settings: StackSettings) -> Path:
    return (settings.build_dir / "onnx").resolve()


def unserved(settings: StackSettings) -> dict[str, str]:
    """The models this stack cannot serve, each with the export's reason (no ONNX graph was made:
    a TorchScript file, a bytes input other than the image model's...)."""
    out = {}
    for name in settings.model_list:
        if (onnx_dir(settings) / name / "model.onnx").is_file():
            continue
        try:
            reason = json.loads((settings.build_dir / name / "manifest.json").read_text()).get("onnx", {}).get("reason")
        except (OSError, ValueError):
            reason = None
        out[name] = reason or "no ONNX export (run `twinserve export`)"
    return out


def served(settings: StackSettings) -> list[str]:
    skip = unserved(settings)
    return [m for m in settings.model_list if m not in skip]


def model_states(settings: StackSettings, timeout: float = 2.0) -> dict[str, str]:
    """Each model's readiness on the stack; a model with no ONNX export is NOT SERVED, with the reason."""
    base = f"http://{settings.host}:{settings.kserve_http_port}"
    skip = unserved(settings)  # read once: each model's manifest
    models = [m for m in settings.model_list if m not in skip]
    states = poll_models(lambda name: f"{base}/v1/models/{name}", models, lambda a: "READY" if isinstance(a, dict) and a.get("ready") else "NOT READY", timeout=timeout)
    return {**states, **{m: f"NOT SERVED ({why})" for m, why in skip.items()}}


def launch(settings: StackSettings, run_dir: Path) -> Launch:
    python = settings.kserve_python
    if not Path(python).is_file():
        raise FileNotFoundError(f"{python} is missing: the KServe stack runs from its own environment; run `make setup` (or set TWINSERVE_STACKS without kserve)")
    models = served(settings)
    if not models:
        raise FileNotFoundError(f"no ONNX exports under {onnx_dir(settings)} for {settings.models} (run `twinserve export`)")
    h = settings.host
    cmd = [
        str(python), "-m", "services.kserve.server",
        f"--model_dir={onnx_dir(settings)}",
        f"--models={','.join(models)}",
        f"--host={h}",
        f"--http_port={settings.kserve_http_port}",
        f"--grpc_port={settings.kserve_grpc_port}",
        f"--workers={settings.kserve_workers}",
        f"--threads={settings.kserve_threads}",
        f"--parallel_runs={settings.workers}",  # one inference at a time per worker, like the other stacks
    ]
    from importlib import metadata

    return Launch(
        name="kserve",
        cmd=cmd,
        ports=[settings.kserve_http_port, settings.kserve_grpc_port],
        ready=ready_when_all(lambda: {m: s for m, s in model_states(settings, timeout=1.0).items() if not s.startswith("NOT SERVED")}),
        urls={"rest": f"http://{h}:{settings.kserve_http_port}", "grpc": f"{h}:{settings.kserve_grpc_port}", "metrics": f"http://{h}:{settings.kserve_http_port}/metrics"},
        implementation=f"KServe model server + ONNX Runtime {metadata.version('onnxruntime')}",
        env={"OMP_NUM_THREADS": str(settings.kserve_threads)},
        cwd=ROOT,
        log_max_mb=settings.log_max_mb,
    )
