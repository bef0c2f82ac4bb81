"""Security by default: loopback-only ports, TorchServe token authorisation carried by the gateway."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import httpx
import psutil
from conftest import ZOO, stack_settings
from gatewayutil import running_gateway

from loadtests.resources import group_processes
from twinserve import stack as native
from twinserve.supervisor import Supervisor
from gateway.backends.torchserve_keys import read_keys
from twinserve.launchers.torchserve import renew
from twinserve.launchers.torchserve import model_states


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


def test_gateway_carries_torchserve_token_auth_across_expired_and_replaced_keys(build_dir: Path, tmp_path: Path) -> None:
    # keys live 6 s: `up` outlives the first management key, the gateway outlives the first inference key
    settings = stack_settings(tmp_path / "run", build_dir, models="tabular", torchserve_token_auth=True, torchserve_token_expiration_min=0.1)
    key_file = settings.run_dir / "torchserve" / "key_file.json"
    native.up(settings, ("torchserve",))
    try:
        base = f"http://127.0.0.1:{settings.torchserve_inference_port}"
        management = f"http://127.0.0.1:{settings.torchserve_management_port}"
        body = b'{"instances": [[' + b",".join([b"1.0"] * 30) + b"]]}"
        json_type = {"Content-Type": "application/json"}
        direct = httpx.post(f"{base}/predictions/tabular", content=body, headers=json_type)
        assert direct.status_code in (400, 401)  # TorchServe refuses a call without its inference key
        gw = {"torchserve_url": base, "torchserve_management_url": management, "torchserve_key_file": str(key_file), "failover": False, "models": "tabular"}
        with running_gateway(**gw) as g:
            first = read_keys(key_file)["inference"]
            assert httpx.post(f"{g}/v1/models/tabular:predict", content=body).status_code == 200
            time.sleep(7)
            expired = httpx.post(f"{base}/predictions/tabular", content=body, headers={**json_type, "Authorization": f"Bearer {first}"})
            assert expired.status_code == 400 and b"InvalidKeyException" in expired.content, "the key should have expired"
            assert model_states(settings) == {"tabular": "READY"}  # `status` renews the expired management key
            # `twinserve status` from a shell without the stack's environment: it describes what `up`
            # started (token auth on, tabular only), not the defaults of that shell
            plain = stack_settings(settings.run_dir, build_dir)
            assert not plain.torchserve_token_auth and plain.model_list == ZOO.split(",")
            row = next(r for r in native.status(plain) if r["service"] == "torchserve")
            assert row["models"] == {"tabular": "READY"}, row
            r = httpx.post(f"{g}/v1/models/tabular:predict", content=body)
            assert r.status_code == 200, r.text
            assert r.headers["x-backend"] == "torchserve"
            renewed = read_keys(key_file)["inference"]
            assert renewed != first
            assert httpx.get(f"{g}/v1/models/tabular").json()["backends"]["torchserve"] == "READY"  # management key renewed too
            # someone else replaces the key: the gateway takes the new one from the file
            assert renew(management, key_file, "inference")
            assert read_keys(key_file)["inference"] != renewed
            r = httpx.post(f"{g}/v1/models/tabular:predict", content=body)
            assert r.status_code == 200, r.text
        # a key that cannot be renewed is the gateway's fault, not the client's: 502 that says so
        with running_gateway(**{**gw, "torchserve_key_file": "", "torchserve_token": "wrong"}) as g:
            r = httpx.post(f"{g}/v1/models/tabular:predict", content=body)
            assert r.status_code == 502, r.text
            assert "refused the gateway's key" in r.json()["error"]
    finally:
        native.down(settings)
    assert not key_file.exists(), "TorchServe's key file outlived `twinserve down`"
