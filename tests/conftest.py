"""Session fixtures: artifacts are exported once, each server starts once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from models.export import DEFAULT_BUILD, export_model  # noqa: E402
from models.spec import MODEL_NAMES  # noqa: E402
from twinserve.supervisor import free_port, group_members  # noqa: E402,F401  (re-exported for the tests)


OWN_MODEL = "pairnet"
ROW_MODELS = ("digits", "tabular", "resnet")  # the zoo's models of one float input, sent as rows
ZOO = ",".join([*ROW_MODELS, "mobilenet"])


@pytest.fixture(scope="session")
def build_dir() -> Path:
    """The default build folder with every model exported (a cache hit when up to date)."""
    for name in MODEL_NAMES:
        export_model(name, DEFAULT_BUILD)
    return DEFAULT_BUILD


@pytest.fixture(scope="session")
def own_model(build_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A model that is not in the zoo (PairNet: float32 [4] and int64 [3] in, two outputs), written
    with PyTorch and TensorFlow and imported the user's way, `twinserve import`, into a copy of the
    manifest. The session's stack serves it beside the zoo (TWINSERVE_MANIFEST, inherited by every
    process the tests start)."""
    import shutil
    import subprocess
    import sys

    from tests.ownmodel import MODEL_FILE, write_pair

    folder = tmp_path_factory.mktemp("own")
    manifest = folder / "twinserve.toml"
    shutil.copy(Path(__file__).resolve().parent.parent / "twinserve.toml", manifest)
    weights, saved, samples = write_pair(folder / "src")
    cmd = [sys.executable, "-m", "twinserve.cli", "--manifest", str(manifest), "import", "--name", OWN_MODEL,
           "--pytorch", str(weights), "--savedmodel", str(saved), "--model-file", str(MODEL_FILE), "--class", "PairNet",
           "--samples", str(samples), "--out", str(build_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    os.environ["TWINSERVE_MANIFEST"] = str(manifest)
    return {"manifest": manifest, "output": proc.stdout, "samples": samples}


def stack_settings(run_dir: Path, build: Path, models: str = ZOO, **extra: object):
    """Settings for a native stack on free loopback ports, so tests never clash with a running `twinserve up`."""
    from twinserve.settings import StackSettings

    return StackSettings(
        torchserve_inference_port=free_port(),
        torchserve_management_port=free_port(),
        torchserve_metrics_port=free_port(),
        torchserve_grpc_inference_port=free_port(),
        torchserve_grpc_management_port=free_port(),
        tfserving_grpc_port=free_port(),
        tfserving_rest_port=free_port(),
        kserve_http_port=free_port(),
        kserve_grpc_port=free_port(),
        gateway_port=free_port(),
        gateway_grpc_port=free_port(),
        run_dir=run_dir,
        build_dir=build,
        models=models,
        **extra,
    )


@pytest.fixture(scope="session")
def stack(build_dir: Path, own_model: dict, tmp_path_factory: pytest.TempPathFactory):
    """TorchServe, the TF backend, the KServe stack (ONNX Runtime) and the gateway, started once by
    the project's own launcher, serving the zoo and the imported model."""
    from twinserve import stack as native

    settings = stack_settings(tmp_path_factory.mktemp("run"), build_dir, models=f"{ZOO},{OWN_MODEL}")
    started = native.up(settings)
    pgids = [svc.pgid for svc in started.values()]
    try:
        yield settings
    finally:
        native.down(settings)
        leftover = group_members(pgids)
        assert not leftover, f"processes left behind after down: {leftover}"


@pytest.fixture(scope="session")
def urls(stack) -> dict[str, str]:
    h = stack.host
    return {
        "torchserve": f"http://{h}:{stack.torchserve_inference_port}",
        "management": f"http://{h}:{stack.torchserve_management_port}",
        "ts_metrics": f"http://{h}:{stack.torchserve_metrics_port}",
        "tfserving": f"http://{h}:{stack.tfserving_rest_port}",
        "grpc": f"{h}:{stack.tfserving_grpc_port}",
        "kserve": f"http://{h}:{stack.kserve_http_port}",
        "kserve_grpc": f"{h}:{stack.kserve_grpc_port}",
        "gateway": f"http://{h}:{stack.gateway_port}",
        "gateway_grpc": f"{h}:{stack.gateway_grpc_port}",
    }


@pytest.fixture(scope="session")
def samples(build_dir: Path) -> dict:
    """Real rows for digits and tabular, seeded ones for resnet, with the exports' expected outputs."""
    import numpy as np

    from models.export import DEFAULT_SEED, Artifacts, load_savedmodel, parity_inputs
    from models.spec import SPECS

    out = {}
    for name in ROW_MODELS:
        spec = SPECS[name]
        x = parity_inputs(spec, DEFAULT_SEED)[0][:32].astype(np.float32)
        expected = load_savedmodel(Artifacts(build_dir, name).savedmodel, spec)(x)
        out[name] = (x, expected)
    return out


def bench_and_report(cfg, stack) -> dict:  # type: ignore[no-untyped-def]
    """A bench configuration run against the session's stack (its CPU measured by process group) and
    its report written to cfg.out, as `twinserve bench` writes one: the summary."""
    from loadtests import bench, report
    from twinserve.supervisor import Supervisor

    pgids = {n: s.pgid for n, s in Supervisor(stack.run_dir).running().items()}
    summary = bench.summarise(cfg, bench.run(cfg, pgids))
    summary["environment"] = {"versions": {}, "machine": {"cpu_count": 2, "time": "t"}, "tfserving_implementation": "twinserve-tf-compat"}
    summary["stack"] = {"batch size": 8}
    summary["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()}
    summary["locust_dir"] = str(cfg.out / "locust")
    report.write(summary, cfg.out)
    return summary
