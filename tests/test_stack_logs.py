"""The stacks' logs stay readable and bounded (issue #19 point 6).

TorchServe wrote about four lines per request to the log the supervisor captures (23.6 MB after one
`make demo`), and the TF backend's log began with CUDA errors on a machine that has no GPU. Now:
TorchServe's per-request lines are off unless TWINSERVE_TORCHSERVE_REQUEST_LOGS=true, the expected
CUDA noise is dropped, and every log file of a service is capped (TWINSERVE_LOG_MAX_MB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import group_members, stack_settings

from twinserve.logcap import CAPTURED_CMD, write_capped
from twinserve.logcap import command as capture_command
from twinserve.supervisor import Supervisor

REQUESTS = 200
ROW = b'{"instances": [[' + b",".join([b"0.5"] * 30) + b"]]}"
CUDA_NOISE = ("cuInit", "cuda drivers", "absl::InitializeLog")


def lines(path: Path) -> int:
    return len(path.read_bytes().splitlines())


def send(url: str, n: int = REQUESTS, clients: int = 8) -> None:
    """n requests from several clients at once, so server-side batches form as under load."""

    def one(_: int) -> int:
        with httpx.Client(timeout=30) as client:
            return client.post(url, content=ROW, headers={"Content-Type": "application/json"}).status_code

    with ThreadPoolExecutor(clients) as pool:
        assert set(pool.map(one, range(n))) == {200}


def test_requests_leave_the_stacks_logs_alone(stack) -> None:  # type: ignore[no-untyped-def]
    services = Supervisor(stack.run_dir).load()
    ts_log, tf_log = Path(services["torchserve"].log), Path(services["tfserving"].log)
    ts_files = stack.run_dir / "torchserve" / "logs"
    time.sleep(1)  # start-up lines settle
    before = {"torchserve": lines(ts_log), "tfserving": lines(tf_log), "ts_log": lines(ts_files / "ts_log.log")}
    send(f"http://{stack.host}:{stack.torchserve_inference_port}/predictions/tabular")
    send(f"http://{stack.host}:{stack.tfserving_rest_port}/v1/models/tabular:predict")
    time.sleep(1)
    grown = {"torchserve": lines(ts_log) - before["torchserve"], "tfserving": lines(tf_log) - before["tfserving"], "ts_log": lines(ts_files / "ts_log.log") - before["ts_log"]}
    print(f"log lines added by {REQUESTS} requests per stack: {grown}")
    assert grown["torchserve"] < 20, ts_log.read_text()[-3000:]
    assert grown["ts_log"] < 20
    assert grown["tfserving"] < 20, tf_log.read_text()[-3000:]
    assert (ts_files / "access_log.log").stat().st_size == 0  # the access log is a per-request log
    text = ts_log.read_text()
    assert "Torchserve version: 0.12.0" in text and "Model server started." in text  # start-up lines stay
    assert "State change WORKER_STARTED -> WORKER_MODEL_LOADED" in text
    tf_text = tf_log.read_text()
    assert "twinserve-tf-compat: REST on" in tf_text
    noise = [line for line in tf_text.splitlines() if any(n in line for n in CUDA_NOISE)]
    assert not noise, noise


def test_request_logs_come_back_on_request_and_every_file_is_capped(build_dir: Path, tmp_path: Path) -> None:
    """TWINSERVE_TORCHSERVE_REQUEST_LOGS=true restores TorchServe's own verbosity; with a 50 kB cap
    the captured log and TorchServe's ts_log each roll once and stay near the cap."""
    from twinserve import stack as native

    cap_mb = 0.05
    settings = stack_settings(tmp_path / "run", build_dir, models="tabular", torchserve_request_logs=True, log_max_mb=cap_mb)
    started = native.up(settings, names=("torchserve",))
    pgids = [s.pgid for s in started.values()]
    try:
        log = Path(started["torchserve"].log)
        send(f"http://{settings.host}:{settings.torchserve_inference_port}/predictions/tabular")
        time.sleep(1)
    finally:
        native.down(settings)
    assert not group_members(pgids), "a process of the stack (the log writer included) survived `down`"
    cap = int(cap_mb * 1024 * 1024)
    rolled = log.with_name(log.name + ".1")
    assert rolled.exists() and log.stat().st_size <= cap and rolled.stat().st_size <= cap
    assert lines(log) + lines(rolled) >= REQUESTS  # the per-request lines are back
    ts_files = settings.run_dir / "torchserve" / "logs"
    assert (ts_files / "ts_log.1.log").exists() and (ts_files / "access_log.log").stat().st_size > 0
    slack = 4096  # log4j checks the size before an event, so a file ends at most one event past the cap
    assert all(f.stat().st_size <= cap + slack for f in ts_files.iterdir()), {f.name: f.stat().st_size for f in ts_files.iterdir()}
    assert not list(ts_files.glob("*.gz"))  # no daily roll-over: two files per log at most


def test_the_capping_writer_keeps_whole_lines_under_the_cap(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    payload = b"".join(b"line %04d %s\n" % (i, b"x" * (i % 50)) for i in range(2000))
    pid = os.fork()
    if pid == 0:  # the service: writes its output in odd-sized pieces, then ends
        os.close(read_end)
        for i in range(0, len(payload), 777):
            os.write(write_end, payload[i : i + 777])
        os._exit(0)
    os.close(write_end)
    path = tmp_path / "svc.log"
    write_capped(read_end, str(path), 1000, 1)  # reads to end of file, then closes read_end
    os.waitpid(pid, 0)
    current, rolled = path.read_bytes(), path.with_name("svc.log.1").read_bytes()
    assert 0 < len(current) <= 1000 and 0 < len(rolled) <= 1000
    assert not path.with_name("svc.log.2").exists()
    assert rolled.endswith(b"\n") and payload.endswith(rolled + current)  # whole lines, the newest ones, in order


def test_a_captured_service_keeps_its_pid_and_exit_code_and_its_writer_leaves_with_it(tmp_path: Path) -> None:
    """The shim becomes the service (exec): the PID started is the service's, its exit code is the
    service's, and the writer, in the same process group, leaves when the service has gone."""
    path = tmp_path / "svc.log"
    script = "import os, sys\nfor i in range(500): print('line', i, 'y' * 60)\nprint('pid', os.getpid(), flush=True)\nprint('bye', file=sys.stderr)\nsys.exit(7)"
    env = {**os.environ, CAPTURED_CMD: json.dumps([sys.executable, "-c", script])}
    proc = subprocess.Popen(capture_command(path, 4096), env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    assert proc.wait(timeout=30) == 7
    deadline = time.monotonic() + 10
    while group_members([proc.pid]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_members([proc.pid])
    current, rolled = path.read_text(), path.with_name("svc.log.1").read_text()
    assert current.endswith(f"pid {proc.pid}\nbye\n")  # stdout and stderr alike, from the PID started
    assert len(current) <= 4096 and len(rolled) <= 4096
    assert not path.with_name("svc.log.2").exists()


@pytest.mark.parametrize("missing", ["no-such-program-twinserve", "/nonexistent/bin/server"])
def test_a_missing_program_is_a_clear_start_failure(tmp_path: Path, missing: str) -> None:
    from twinserve.supervisor import Launch, SupervisorError

    launch = Launch("svc", [missing], [], lambda: (False, "waiting"), {}, "test")
    with pytest.raises(SupervisorError, match="cannot start"):
        Supervisor(tmp_path).start([launch], timeout=5)
