"""What a newcomer meets: settings that take effect, one-line setting errors, clean protocol errors,
a gateway log that says what it runs with, status that describes what runs (issue #19)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import psutil
import pytest
from conftest import free_port
from gatewayutil import backends, dead_url, running_gateway

ROOT = Path(__file__).resolve().parent.parent
ROW = b",".join([b"1.5"] * 29)
SPELLINGS = [b"NaN", b"Infinity", b"-Infinity", b"1e999"]



@pytest.mark.parametrize("spelling", SPELLINGS)
def test_non_finite_spellings_are_a_400_naming_them_on_every_protocol(urls: dict, spelling: bytes) -> None:
    g = urls["gateway"]
    bodies = {
        "/v1/models/tabular:predict": b'{"instances": [[' + spelling + b"," + ROW + b"]]}",
        "/v1/models/tabular:predict?backend=tfserving": b'{"inputs": {"features": [[' + ROW + b"," + spelling + b"]]}}",
        "/v2/models/tabular/infer": b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 30], "data": [' + spelling + b"," + ROW + b"]}]}",
    }
    for path, body in bodies.items():
        r = httpx.post(f"{g}{path}", content=body, timeout=30)
        assert r.status_code == 400, (path, r.text)
        error = r.json()
        assert error["type"] == "non_finite" and "non-finite" in error["error"], (path, error)
    ok = httpx.post(f"{g}/v1/models/tabular:predict", content=b'{"instances": [[0.5,' + ROW + b"]]}", timeout=30)
    assert ok.status_code == 200


def test_tf_serving_verbs_the_gateway_does_not_serve_say_so(urls: dict) -> None:
    for verb in ("classify", "regress"):
        r = httpx.post(f"{urls['gateway']}/v1/models/tabular:{verb}", content=b'{"examples": [{}]}')
        assert r.status_code == 501, r.text
        error = r.json()
        assert error["type"] == "not_implemented" and ":predict" in error["error"] and verb in error["error"]
    assert httpx.post(f"{urls['gateway']}/v1/models/nope:classify", content=b"{}").status_code == 404


def test_readiness_and_predict_name_a_dead_backend_alike(urls: dict) -> None:
    with running_gateway(**{**backends(urls), "tfserving_url": dead_url()}, failover=False, primary="tfserving") as g:
        ready = httpx.get(f"{g}/readyz").json()
        predict = httpx.post(f"{g}/v1/models/tabular:predict", content=b'{"instances": [[0.5,' + ROW + b"]]}", timeout=30)
    assert "connection refused" in ready["models"]["tabular"]["tfserving"], ready
    assert predict.status_code == 503 and "connection refused" in predict.json()["error"]


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"TWINSERVE_GATEWAY_ROUTING": "foo"}, ["TWINSERVE_GATEWAY_ROUTING='foo'", "'fixed', 'weighted' or 'mirror'"]),
        ({"TWINSERVE_GATEWAY_WEIGHTS": "torchserve=lots"}, ["TWINSERVE_GATEWAY_WEIGHTS", "name=number"]),
        ({"TWINSERVE_GATEWAY_BACKENDS": "torchserve,onnx"}, ["TWINSERVE_GATEWAY_BACKENDS", "onnx", "tfserving"]),
        ({"TWINSERVE_GATEWAY_PRIMARY": "tfservin"}, ["TWINSERVE_GATEWAY_PRIMARY='tfservin'", "torchserve, tfserving"]),
    ],
)
def test_a_bad_gateway_setting_is_one_line_naming_it(env: dict[str, str], names: list[str]) -> None:
    run = subprocess.run([sys.executable, "-m", "gateway.serve"], cwd=ROOT, env={**os.environ, "TWINSERVE_GATEWAY_PORT": str(free_port()), "TWINSERVE_GATEWAY_GRPC_PORT": str(free_port()), **env}, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    for name in names:
        assert name in lines[0], lines[0]


def test_a_taken_grpc_port_is_one_line_naming_it() -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        test_a_bad_gateway_setting_is_one_line_naming_it({"TWINSERVE_GATEWAY_GRPC_PORT": str(port)}, [f"gRPC port 127.0.0.1:{port}", "in use", "TWINSERVE_GATEWAY_GRPC_PORT"])


def test_a_bad_stack_setting_is_one_line_naming_it() -> None:
    env = {**os.environ, "TWINSERVE_TF_BACKEND": "gpu", "TWINSERVE_BATCH_SIZE": "eight"}
    run = subprocess.run([str(Path(sys.executable).parent / "twinserve"), "status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert "TWINSERVE_TF_BACKEND='gpu'" in run.stderr and "'auto', 'binary' or 'compat'" in run.stderr
    assert "TWINSERVE_BATCH_SIZE='eight'" in run.stderr


def test_gateway_log_has_a_start_line_and_sampled_access_lines_without_payloads(urls: dict) -> None:
    """The gateway's own process, as `twinserve up` starts it, with every request sampled."""
    port = free_port()
    env = {
        **os.environ,
        **{f"TWINSERVE_GATEWAY_{k.upper()}": v for k, v in backends(urls).items()},
        "TWINSERVE_GATEWAY_PORT": str(port),
        "TWINSERVE_GATEWAY_GRPC_PORT": str(free_port()),
        "TWINSERVE_GATEWAY_ACCESS_LOG_SAMPLE": "1",
        "TWINSERVE_GATEWAY_API_KEYS": "sekret-key",
    }
    proc = subprocess.Popen([sys.executable, "-m", "gateway.serve"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        g = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{g}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "gateway did not start"
            time.sleep(0.1)
        marker = 0.123456789
        body = orjson.dumps({"instances": [[marker] * 30]})
        for i in range(3):
            r = httpx.post(f"{g}/v1/models/tabular:predict", content=body, headers={"X-API-Key": "sekret-key", "X-Request-ID": f"newcomer-{i}"}, timeout=30)
            assert r.status_code == 200
        time.sleep(0.5)  # the access log is written by a background thread
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    start = [line for line in err.splitlines() if "settings in effect" in line]
    assert len(start) == 1 and "routing=fixed" in start[0] and "api_keys=<1 set>" in start[0], err
    assert "sekret-key" not in err
    access = [line for line in err.splitlines() if "newcomer-" in line]
    assert len(access) == 3 and all(" 200 " in line and "backend=torchserve" in line for line in access), access
    assert str(marker)[:6] not in err  # no payload value is ever logged


def test_up_binds_the_gateway_where_twinserve_gateway_host_says(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """TWINSERVE_GATEWAY_HOST takes effect under `twinserve up`, not only under `twinserve gateway`."""
    from twinserve import stack as native

    settings = stack.model_copy(update={"gateway_port": free_port(), "gateway_grpc_port": free_port(), "gateway_host": "127.0.0.2", "run_dir": tmp_path / "run"})
    started = native.up(settings, ("gateway",))
    try:
        pids = {started["gateway"].pid, *(c.pid for c in psutil.Process(started["gateway"].pid).children(recursive=True))}
        bound = {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids}
        assert ("127.0.0.2", settings.gateway_port) in bound, bound
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{settings.gateway_port}/healthz", timeout=2)
        row = next(r for r in native.status(settings) if r["service"] == "gateway")
        assert row["running"] and all("READY" in s for s in row["models"].values()), row
    finally:
        native.down(settings)
