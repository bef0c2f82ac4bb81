"""Security by default: loopback-only ports, TorchServe token authorisation carried by the gateway."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import httpx
import psutil
from conftest import stack_settings
from gatewayutil import running_gateway

from loadtests.resources import group_processes
from services import stack as native
from services.supervisor import Supervisor


def loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped is not None:  # the JVM binds ::ffff:127.0.0.1
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_every_native_port_listens_on_loopback_only(stack) -> None:  # type: ignore[no-untyped-def]
    pids = {p.pid for svc in Supervisor(stack.run_dir).running().values() for p in group_processes(svc.pgid)}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    ports = {c.laddr.port for c in listening}
    for port in (stack.torchserve_inference_port, stack.torchserve_management_port, stack.torchserve_metrics_port, stack.tfserving_rest_port, stack.tfserving_grpc_port, stack.gateway_port):
        assert port in ports
    exposed = [f"{c.laddr.ip}:{c.laddr.port}" for c in listening if not loopback(c.laddr.ip)]
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_gateway_carries_torchserve_token_auth(build_dir: Path, tmp_path: Path) -> None:
    settings = stack_settings(tmp_path / "run", build_dir, models="tabular", torchserve_token_auth=True)
    native.up(settings, ("torchserve",))
    try:
        base = f"http://127.0.0.1:{settings.torchserve_inference_port}"
        body = b'{"instances": [[' + b",".join([b"1.0"] * 30) + b"]]}"
        direct = httpx.post(f"{base}/predictions/tabular", content=body, headers={"Content-Type": "application/json"})
        assert direct.status_code in (400, 401)  # TorchServe refuses a call without its inference key
        key_file = settings.run_dir / "torchserve" / "key_file.json"
        assert key_file.exists()
        gw = {
            "torchserve_url": base,
            "torchserve_management_url": f"http://127.0.0.1:{settings.torchserve_management_port}",
            "torchserve_key_file": str(key_file),
            "failover": False,
            "models": "tabular",
        }
        with running_gateway(**gw) as g:
            r = httpx.post(f"{g}/v1/models/tabular:predict", content=body)
            assert r.status_code == 200, r.text
            assert httpx.get(f"{g}/v1/models/tabular").json()["backends"]["torchserve"] == "READY"
    finally:
        native.down(settings)
