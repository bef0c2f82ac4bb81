"""How to start the native TorchServe and tell when its models are ready."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from twinserve.supervisor import Launch, poll_models, ready_when_all
from twinserve.launchers import torchserve_config as config
from gateway.backends.torchserve_keys import KEY_FILE, TOKEN_PATH, read_keys
from twinserve.settings import StackSettings


def auth_header(path: str | Path, kind: str) -> dict[str, str]:
    key = read_keys(path).get(kind)
    return {"Authorization": f"Bearer {key}"} if key else {}


def renew(management_url: str, path: str | Path, kind: str, timeout: float = 5.0) -> bool:
    """Ask TorchServe for a new key of this kind (keys expire, 60 min by default); True when it wrote one."""
    api = read_keys(path).get("API")
    if not api:
        return False
    try:
        r = httpx.get(f"{management_url}{TOKEN_PATH}", params={"type": kind}, headers={"Authorization": f"Bearer {api}"}, timeout=timeout)
    except httpx.HTTPError:
        return False
    return r.status_code == 200


def key_file(settings: StackSettings) -> Path:
    return settings.run_dir / "torchserve" / KEY_FILE


def worker_state(answer: object) -> str:
    workers = answer[0].get("workers", []) if isinstance(answer, list) and answer else []
    ready = [w for w in workers if w.get("status") == "READY"]
    return "READY" if workers and len(ready) == len(workers) else f"{len(ready)}/{len(workers)} workers ready"


def model_states(settings: StackSettings, timeout: float = 2.0) -> dict[str, str]:
    """READY when every worker of the model is READY; the worker states otherwise; DOWN when unreachable."""
    base = f"http://{settings.host}:{settings.torchserve_management_port}"

    def poll() -> dict[str, str]:
        headers = auth_header(key_file(settings), "management") if settings.torchserve_token_auth else None
        return poll_models(lambda name: f"{base}/models/{name}", settings.model_list, worker_state, headers, timeout)

    states = poll()
    # an expired key reads as NOT LOADED (400), TorchServe's answer to a refused key
    if settings.torchserve_token_auth and any(s.endswith(("(400)", "(401)")) for s in states.values()) and renew(base, key_file(settings), "management"):
        states = poll()
    return states


def launch(settings: StackSettings, run_dir: Path) -> Launch:
    work = run_dir / "torchserve"
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    store = (settings.build_dir / "model-store").resolve()
    missing = [n for n in settings.model_list if not (store / f"{n}.mar").exists()]
    if missing:
        raise FileNotFoundError(f"TorchServe archives missing in {store}: {', '.join(missing)} (run `twinserve export`)")
    cfg = config.write(settings, store, work / "config.properties")
    cmd = [
        str(Path(sys.executable).parent / "torchserve"),
        "--start",
        "--foreground",
        "--ncs",
        *([] if settings.torchserve_token_auth else ["--disable-token-auth"]),
        "--ts-config", str(cfg),
        "--model-store", str(store),
    ]
    if settings.torchserve_token_auth:
        key_file(settings).unlink(missing_ok=True)  # a stale key would pass for a fresh one
    env = {
        "TEMP": str(tmp),  # pid file and worker sockets: one folder per instance
        "LOG_LOCATION": str(work / "logs"),
        "METRICS_LOCATION": str(work / "logs"),
        "OMP_NUM_THREADS": str(settings.torch_threads),
        "MKL_NUM_THREADS": str(settings.torch_threads),
        "TWINSERVE_TORCH_THREADS": str(settings.torch_threads),
    }
    h = settings.host

    return Launch(
        name="torchserve",
        cmd=cmd,
        ports=[
            settings.torchserve_inference_port,
            settings.torchserve_management_port,
            settings.torchserve_metrics_port,
            settings.torchserve_grpc_inference_port,
            settings.torchserve_grpc_management_port,
        ],
        ready=ready_when_all(lambda: model_states(settings, timeout=1.0)),
        urls={
            "inference": f"http://{h}:{settings.torchserve_inference_port}",
            "management": f"http://{h}:{settings.torchserve_management_port}",
            "metrics": f"http://{h}:{settings.torchserve_metrics_port}/metrics",
        },
        implementation=f"TorchServe {_version('torchserve')}",
        env=env,
        cwd=work,
        extra={"temp_dir": str(tmp)},
        log_max_mb=settings.log_max_mb,
    )


def _version(dist: str) -> str:
    from importlib import metadata

    return metadata.version(dist)
