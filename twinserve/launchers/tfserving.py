"""How to start the native TF backend: the real tensorflow_model_server when on PATH, else the compatible server."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from twinserve.supervisor import Launch, poll_models, ready_when_all
from twinserve.launchers import tfserving_config as config
from twinserve.settings import ROOT, StackSettings

BINARY = "tensorflow_model_server"
COMPAT_NAME = "twinserve TF-Serving-compatible server (NOT TensorFlow Serving)"


def choose(settings: StackSettings) -> tuple[list[str], str]:
    """The command prefix and the implementation label that every status and report shows."""
    binary = shutil.which(BINARY)
    if settings.tf_backend == "binary" and not binary:
        raise FileNotFoundError(f"TWINSERVE_TF_BACKEND=binary but {BINARY} is not on PATH")
    if binary and settings.tf_backend != "compat":
        return [binary], f"TensorFlow Serving ({binary})"
    from importlib import metadata

    return [sys.executable, "-m", "services.tfserving.compat.server"], f"{COMPAT_NAME}, TensorFlow {metadata.version('tensorflow')}"


def version_state(answer: object) -> str:
    versions = answer.get("model_version_status", []) if isinstance(answer, dict) else []
    return "READY" if any(v.get("state") == "AVAILABLE" for v in versions) else ",".join(v.get("state", "?") for v in versions) or "NO VERSION"


def model_states(settings: StackSettings, timeout: float = 2.0) -> dict[str, str]:
    base = f"http://{settings.host}:{settings.tfserving_rest_port}"
    return poll_models(lambda name: f"{base}/v1/models/{name}", settings.model_list, version_state, timeout=timeout)


def launch(settings: StackSettings, run_dir: Path) -> Launch:
    work = run_dir / "tfserving"
    work.mkdir(parents=True, exist_ok=True)
    base = (settings.build_dir / "tfserving").resolve()
    missing = [n for n in settings.model_list if not any((base / n).glob("*/saved_model.pb"))]
    if missing:
        raise FileNotFoundError(f"SavedModels missing under {base}: {', '.join(missing)} (run `twinserve export`)")
    files = config.write_all(settings, base, work)
    prefix, implementation = choose(settings)
    cmd = [
        *prefix,
        f"--port={settings.tfserving_grpc_port}",
        f"--rest_api_port={settings.tfserving_rest_port}",
        f"--model_config_file={files['models']}",
        "--enable_batching=true",
        f"--batching_parameters_file={files['batching']}",
        f"--monitoring_config_file={files['monitoring']}",
        f"--tensorflow_intra_op_parallelism={settings.tf_threads}",
        f"--tensorflow_inter_op_parallelism={settings.tf_threads}",
    ]
    if prefix[0] != shutil.which(BINARY):
        # the compatible server can bind loopback only; the real binary binds all interfaces
        cmd += [f"--rest_api_host={settings.host}", f"--grpc_host={settings.host}"]
    h = settings.host

    return Launch(
        name="tfserving",
        cmd=cmd,
        ports=[settings.tfserving_grpc_port, settings.tfserving_rest_port],
        ready=ready_when_all(lambda: model_states(settings, timeout=1.0)),
        urls={
            "rest": f"http://{h}:{settings.tfserving_rest_port}",
            "grpc": f"{h}:{settings.tfserving_grpc_port}",
            "metrics": f"http://{h}:{settings.tfserving_rest_port}/monitoring/prometheus/metrics",
        },
        implementation=implementation,
        # TensorFlow's info and warning lines off, its errors kept. The CUDA lines a CPU-only machine
        # prints at start-up are not reachable by any such variable without hiding real errors too:
        # the compatible server drops exactly those itself (services/tfserving/compat/cuda_noise.py).
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": str(settings.tf_threads)},
        cwd=ROOT,
        log_max_mb=settings.log_max_mb,
    )
