"""The third stack through the gateway: KServe's model server running ONNX Runtime (gateway/backends/kserve.py).

Against the session's real stacks; the failover test kills a private KServe server of its own.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import numpy as np
import orjson
from conftest import stack_settings
from gatewayutil import backends, running_gateway

from twinserve.supervisor import Supervisor


def rows(samples: dict, model: str = "tabular", n: int = 2) -> bytes:
    return orjson.dumps({"instances": samples[model][0][:n]}, option=orjson.OPT_SERIALIZE_NUMPY)


def test_the_third_stack_answers_like_the_others(urls: dict, samples: dict) -> None:
    """The same V1 body to each stack directly: KServe's V1 path takes TF Serving's JSON and answers it."""
    x, expected = samples["tabular"]
    answers = {}
    for stack, path in (("tfserving", "/v1/models/tabular:predict"), ("kserve", "/v1/models/tabular:predict"), ("torchserve", "/predictions/tabular")):
        r = httpx.post(f"{urls[stack]}{path}", content=rows(samples, n=8), headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 200, (stack, r.text)
        answers[stack] = np.asarray(r.json()["predictions"])
    for stack, got in answers.items():
        assert np.abs(got - expected[:8]).max() <= 1e-4, stack


def test_bad_input_straight_to_the_stack_is_a_clear_400(urls: dict) -> None:
    r = httpx.post(f"{urls['kserve']}/v1/models/tabular:predict", content=b'{"instances": [[1.0, 2.0]]}', timeout=10)
    assert r.status_code == 400
    message = r.json()["error"]
    assert "features" in message and "30" in message  # names the input and the shape it takes


def test_explanations_are_a_clear_501_that_does_not_fail_over(urls: dict, samples: dict) -> None:
    """ONNX Runtime serves no gradients: asking KServe for an explanation is said plainly, not
    answered by another stack behind the client's back (a 501 is what the stack cannot do, not a failure)."""
    r = httpx.post(f"{urls['gateway']}/v1/models/tabular:explain?backend=kserve", content=rows(samples, n=1), timeout=30)
    assert r.status_code == 501, r.text
    error = r.json()
    assert error["type"] == "not_implemented" and error["backend"] == "kserve"
    assert "explanations" in error["error"] and "x-failover-from" not in r.headers
    ok = httpx.post(f"{urls['gateway']}/v1/models/tabular:explain?backend=torchserve", content=rows(samples, n=1), timeout=60)
    assert ok.status_code == 200, ok.text  # the circuit did not count the 501 against anyone
    assert httpx.get(f"{urls['gateway']}/readyz").json()["circuits"]["kserve"] == "closed"


def test_weighted_split_over_three_stacks(urls: dict, samples: dict) -> None:
    with running_gateway(**backends(urls), routing="weighted", weights="torchserve=1,tfserving=1,kserve=1") as g:
        with httpx.Client(timeout=30) as client:
            served = [client.post(f"{g}/v1/models/tabular:predict", content=rows(samples, n=1)).headers["x-backend"] for _ in range(90)]
    counts = {s: served.count(s) for s in ("torchserve", "tfserving", "kserve")}
    assert sum(counts.values()) == 90 and min(counts.values()) >= 10, counts


def test_failover_when_the_kserve_stack_is_killed(urls: dict, samples: dict, build_dir: Path, tmp_path: Path) -> None:
    """A private KServe server is the primary; SIGKILLed mid-run, every request is still answered, by
    the next stack, saying who failed; started again, it serves again after the breaker's cooldown."""
    from twinserve.launchers import kserve as launcher

    private = stack_settings(tmp_path / "run", build_dir, models="tabular")
    sup = Supervisor(private.run_dir)
    sup.start([launcher.launch(private, private.run_dir)], timeout=120)
    gw = {**backends(urls), "kserve_url": f"http://127.0.0.1:{private.kserve_http_port}", "backends": "kserve,tfserving,torchserve"}
    try:
        with running_gateway(**gw, primary="kserve", failover=True, breaker_failures=2, breaker_cooldown_s=1.0, timeout_s=2.0) as g:
            with httpx.Client(timeout=30) as client:
                def send() -> httpx.Response:
                    return client.post(f"{g}/v1/models/tabular:predict", content=rows(samples, n=1))

                assert all(r.status_code == 200 and r.headers["x-backend"] == "kserve" for r in [send() for _ in range(5)])
                os.killpg(sup.load()["kserve"].pgid, signal.SIGKILL)
                sup.stop(["kserve"])
                during = [send() for _ in range(10)]
                assert all(r.status_code == 200 for r in during), [r.text for r in during if r.status_code != 200]
                assert all(r.headers["x-backend"] == "tfserving" and r.headers["x-failover-from"] == "kserve" for r in during)
                assert client.get(f"{g}/readyz").json()["circuits"]["kserve"] == "open"
                sup.start([launcher.launch(private, private.run_dir)], timeout=120)
                import time

                time.sleep(1.2)
                after = [send() for _ in range(3)]
                assert all(r.status_code == 200 and r.headers["x-backend"] == "kserve" for r in after)
    finally:
        sup.stop()
