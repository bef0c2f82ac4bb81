"""Routing policies and fault handling: in-process gateways with their own settings, in front of the real stacks."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import httpx
import orjson
from conftest import stack_settings
from gatewayutil import answering_backend, backends, dead_url, hanging_backend, running_gateway

from twinserve.supervisor import Supervisor


def body(samples: dict, model: str = "tabular", rows: int = 1) -> bytes:
    return orjson.dumps({"instances": samples[model][0][:rows]}, option=orjson.OPT_SERIALIZE_NUMPY)



def mirror_count(g: str, result: str) -> float:
    for line in httpx.get(f"{g}/metrics").text.splitlines():
        if line.startswith("twinserve_gateway_mirror_total{") and f'result="{result}"' in line and 'model="tabular"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_weighted_routing_splits_traffic(urls: dict, samples: dict) -> None:
    n = 400
    with running_gateway(**backends(urls), routing="weighted", weights="torchserve=80,tfserving=20") as g:
        with httpx.Client(timeout=30) as client:
            served = [client.post(f"{g}/v1/models/tabular:predict", content=body(samples)).headers["x-backend"] for _ in range(n)]
    share = served.count("torchserve") / n
    # binomial(400, 0.8): sd = 0.02; 4 sd either side
    assert 0.72 <= share <= 0.88, share
    assert served.count("torchserve") + served.count("tfserving") == n


def test_mirror_records_agreement_and_never_touches_the_client(urls: dict, samples: dict) -> None:
    with running_gateway(**backends(urls), routing="mirror", primary="torchserve") as g:
        agree0, disagree0 = mirror_count(g, "agree"), mirror_count(g, "disagree")  # one registry per process
        for _ in range(5):
            r = httpx.post(f"{g}/v1/models/tabular:predict", content=body(samples))
            assert r.status_code == 200 and r.headers["x-backend"] == "torchserve"
        deadline = time.monotonic() + 10
        while mirror_count(g, "agree") - agree0 < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert mirror_count(g, "agree") - agree0 == 5
        assert mirror_count(g, "disagree") - disagree0 == 0


def test_mirror_target_down_leaves_the_client_unaffected(urls: dict, samples: dict) -> None:
    settings = {**backends(urls), "tfserving_url": dead_url()}
    with running_gateway(**settings, routing="mirror", primary="torchserve", failover=False) as g:
        failed0, agree0 = mirror_count(g, "error") + mirror_count(g, "skipped"), mirror_count(g, "agree")
        for _ in range(4):
            r = httpx.post(f"{g}/v1/models/tabular:predict", content=body(samples))
            assert r.status_code == 200 and r.headers["x-backend"] == "torchserve"
        deadline = time.monotonic() + 10
        while mirror_count(g, "error") + mirror_count(g, "skipped") - failed0 < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert mirror_count(g, "error") + mirror_count(g, "skipped") - failed0 == 4
        assert mirror_count(g, "agree") - agree0 == 0


def test_backend_down_without_failover_is_a_503_naming_it(urls: dict, samples: dict) -> None:
    with running_gateway(**{**backends(urls), "tfserving_url": dead_url()}, primary="tfserving", failover=False) as g:
        r = httpx.post(f"{g}/v1/models/tabular:predict", content=body(samples))
    assert r.status_code == 503
    assert r.json() == {"error": r.json()["error"], "type": "backend_unavailable", "backend": "tfserving"} and isinstance(r.json()["error"], str)


def test_hanging_backend_gets_a_bounded_504(urls: dict, samples: dict) -> None:
    with hanging_backend() as stuck, running_gateway(**{**backends(urls), "tfserving_url": stuck}, primary="tfserving", failover=False, timeout_s=1.0) as g:
        started = time.monotonic()
        r = httpx.post(f"{g}/v1/models/tabular:predict", content=body(samples), timeout=30)
        elapsed = time.monotonic() - started
    assert r.status_code == 504 and r.json()["backend"] == "tfserving"
    assert elapsed < 10  # bounded by the gateway's timeout, not the client's


def test_hanging_backend_fails_over(urls: dict, samples: dict) -> None:
    with hanging_backend() as stuck, running_gateway(**{**backends(urls), "tfserving_url": stuck}, primary="tfserving", failover=True, timeout_s=1.0) as g:
        r = httpx.post(f"{g}/v1/models/tabular:predict", content=body(samples), timeout=30)
    assert r.status_code == 200
    assert r.headers["x-backend"] == "kserve" and r.headers["x-failover-from"] == "tfserving"  # the next in the failover order


def test_concurrency_limit_answers_429_with_retry_after(urls: dict, samples: dict) -> None:
    with hanging_backend() as stuck, running_gateway(**{**backends(urls), "tfserving_url": stuck}, primary="tfserving", failover=False, timeout_s=3.0, max_in_flight=2) as g:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(lambda _: httpx.post(f"{g}/v1/models/tabular:predict", content=body(samples), timeout=30), range(6)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(429) == 4 and codes.count(504) == 2, codes
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.headers["retry-after"] == "1" and limited.json()["type"] == "overloaded"


def test_backend_5xx_is_a_502(samples: dict) -> None:
    """A stack answering 500 is hard to provoke for real: a loopback server plays that stack."""
    with answering_backend(500, b'{"error": "boom"}') as tf_url:
        with running_gateway(tfserving_url=tf_url, backends="tfserving", primary="tfserving", failover=False) as g:
            r = httpx.post(f"{g}/v1/models/tabular:predict", content=body(samples), timeout=30)
    assert r.status_code == 502, r.text
    error = r.json()
    assert error["type"] == "backend_bad_gateway" and error["backend"] == "tfserving" and "boom" in error["error"]


def test_failover_when_a_stack_stops_mid_run_and_the_breaker_cycles(urls: dict, samples: dict, build_dir: Path, tmp_path: Path) -> None:
    """A second, private TF backend is the primary; it is stopped mid-run and started again."""
    from twinserve.launchers import tfserving as launcher

    tf_settings = stack_settings(tmp_path / "run", build_dir, models="tabular")
    sup = Supervisor(tf_settings.run_dir)
    sup.start([launcher.launch(tf_settings, tf_settings.run_dir)], timeout=120)
    tf_url = f"http://127.0.0.1:{tf_settings.tfserving_rest_port}"
    gw = {**backends(urls), "tfserving_url": tf_url}
    try:
        with running_gateway(**gw, primary="tfserving", failover=True, breaker_failures=2, breaker_cooldown_s=1.0, timeout_s=2.0) as g:
            with httpx.Client(timeout=30) as client:
                def send() -> httpx.Response:
                    return client.post(f"{g}/v1/models/tabular:predict", content=body(samples))

                before = [send() for _ in range(5)]
                assert all(r.status_code == 200 and r.headers["x-backend"] == "tfserving" for r in before)
                sup.stop(["tfserving"])
                during = [send() for _ in range(10)]
                assert all(r.status_code == 200 for r in during), [r.text for r in during if r.status_code != 200]
                assert all(r.headers["x-backend"] == "kserve" and r.headers["x-failover-from"] == "tfserving" for r in during)  # the next in order
                assert client.get(f"{g}/readyz").json()["circuits"]["tfserving"] == "open"

                sup.start([launcher.launch(tf_settings, tf_settings.run_dir)], timeout=120)
                time.sleep(1.2)  # past the cooldown: the next request is the probe
                after = [send() for _ in range(3)]
                assert all(r.status_code == 200 and r.headers["x-backend"] == "tfserving" for r in after)
                assert client.get(f"{g}/readyz").json()["circuits"]["tfserving"] == "closed"
                metrics = client.get(f"{g}/metrics").text
                assert 'twinserve_gateway_failovers_total{from_backend="tfserving",model="tabular",to_backend="kserve"}' in metrics
    finally:
        sup.stop()


def test_api_keys_when_configured(urls: dict, samples: dict) -> None:
    with running_gateway(**backends(urls), api_keys="s3cret,other") as g:
        assert httpx.post(f"{g}/v1/models/tabular:predict", content=body(samples)).status_code == 401
        assert httpx.post(f"{g}/v1/models/tabular:predict", content=body(samples), headers={"X-API-Key": "wrong"}).status_code == 401
        assert httpx.post(f"{g}/v1/models/tabular:predict", content=body(samples), headers={"X-API-Key": "s3cret"}).status_code == 200
        assert httpx.post(f"{g}/v1/models/tabular:predict", content=body(samples), headers={"Authorization": "Bearer other"}).status_code == 200
        assert httpx.get(f"{g}/healthz").status_code == 200
