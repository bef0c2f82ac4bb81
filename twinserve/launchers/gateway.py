"""How to start the gateway natively (uvicorn, loopback) and tell when it is ready."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from twinserve.supervisor import Launch
from gateway.settings import GatewaySettings
from twinserve.settings import ROOT, StackSettings


def gateway_env(stack: StackSettings) -> dict[str, str]:
    """Point the gateway at the stack's ports; any TWINSERVE_GATEWAY_* already set still wins."""
    h = stack.host
    return {
        "TWINSERVE_GATEWAY_TORCHSERVE_URL": f"http://{h}:{stack.torchserve_inference_port}",
        "TWINSERVE_GATEWAY_TORCHSERVE_MANAGEMENT_URL": f"http://{h}:{stack.torchserve_management_port}",
        "TWINSERVE_GATEWAY_TFSERVING_URL": f"http://{h}:{stack.tfserving_rest_port}",
        "TWINSERVE_GATEWAY_KSERVE_URL": f"http://{h}:{stack.kserve_http_port}",
        "TWINSERVE_GATEWAY_BACKENDS": ",".join(stack.stack_list),
        "TWINSERVE_GATEWAY_PRIMARY": stack.stack_list[0] if stack.stack_list else "torchserve",
        "TWINSERVE_GATEWAY_MODELS": stack.models,
        "TWINSERVE_GATEWAY_PORT": str(stack.gateway_port),
        "TWINSERVE_GATEWAY_GRPC_PORT": str(stack.gateway_grpc_port),
        "TWINSERVE_GATEWAY_HOST": stack.gateway_bind,
        **({"TWINSERVE_GATEWAY_TORCHSERVE_KEY_FILE": str(stack.run_dir / "torchserve" / "key_file.json")} if stack.torchserve_token_auth else {}),
    }


def command() -> list[str]:
    """Host, port and workers come from the TWINSERVE_GATEWAY_* environment (see gateway/serve.py)."""
    return [sys.executable, "-m", "gateway.serve"]


def model_states(stack: StackSettings, timeout: float = 2.0) -> dict[str, str]:
    try:
        r = httpx.get(f"{stack.gateway_url}/readyz", timeout=timeout)
        data = r.json()
    except (httpx.HTTPError, ValueError):
        return {m: "DOWN" for m in stack.model_list}
    return {m: ", ".join(f"{b} {s}" for b, s in backends.items()) for m, backends in data.get("models", {}).items()}


def launch(stack: StackSettings, run_dir: Path, overrides: dict[str, str] | None = None) -> Launch:
    """overrides: gateway settings by field name (routing="weighted", ...), above the environment."""
    import os

    env = gateway_env(stack)
    env.update({k: v for k, v in os.environ.items() if k.startswith("TWINSERVE_GATEWAY_") and k not in ("TWINSERVE_GATEWAY_PORT", "TWINSERVE_GATEWAY_GRPC_PORT", "TWINSERVE_GATEWAY_HOST")})
    env.update({f"TWINSERVE_GATEWAY_{k.upper()}": str(v) for k, v in (overrides or {}).items()})
    settings = GatewaySettings(**{k[len("TWINSERVE_GATEWAY_"):].lower(): v for k, v in env.items()})
    url = stack.gateway_url

    def ready() -> tuple[bool, str]:
        try:
            r = httpx.get(f"{url}/readyz", timeout=1.0)
        except httpx.HTTPError:
            return False, "starting"
        return r.status_code == 200, "ready" if r.status_code == 200 else "waiting for backends"

    return Launch(
        name="gateway",
        cmd=command(),
        ports=[stack.gateway_port, *([stack.gateway_grpc_port] if stack.gateway_grpc_port else [])],
        ready=ready,
        urls={"api": url, "docs": f"{url}/docs", "metrics": f"{url}/metrics", **({"grpc": stack.gateway_grpc_target} if stack.gateway_grpc_port else {})},
        implementation=f"FastAPI gateway ({settings.workers} worker(s), backends {settings.backends}, routing {settings.routing})",
        env=env,
        cwd=ROOT,
        log_max_mb=stack.log_max_mb,
    )
