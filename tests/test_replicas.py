"""Several replicas per stack: discovery, balancing, ejection and readiness.

The serving tests put a gateway in front of two real TF backends (the session's and a private one
that is stopped under load and started again) and of the session's TorchServe next to an address
where nothing listens. Discovery's bookkeeping (names re-resolved to more, fewer or no addresses)
is tested on the replica set itself: this machine has no DNS that answers a name with several
addresses; the compose smoke (`services/docker/smoke.sh`) proves that path with Docker's DNS.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
from conftest import stack_settings
from gatewayutil import running_gateway
from prometheus_client.parser import text_string_to_metric_families

from gateway.replicas import ReplicaSet, Source, parse_sources
from twinserve.supervisor import Supervisor


def body(samples: dict) -> bytes:
    return orjson.dumps({"instances": samples["tabular"][0][:1]}, option=orjson.OPT_SERIALIZE_NUMPY)


def replica_counts(gateway: str, backend: str) -> dict[tuple[str, str], float]:
    """(replica, outcome) -> attempts, from the gateway's /metrics."""
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{gateway}/metrics").text):
        if family.name == "twinserve_gateway_replica_requests":
            for s in family.samples:
                if s.name.endswith("_total") and s.labels["backend"] == backend:
                    out[s.labels["replica"], s.labels["outcome"]] = s.value
    return out


def delta(after: dict, before: dict, replica: str, outcome: str) -> float:
    return after.get((replica, outcome), 0.0) - before.get((replica, outcome), 0.0)


def label(url: str) -> str:
    return url.removeprefix("http://")


def test_two_replicas_share_the_load_one_dies_under_load_nothing_is_lost_and_it_comes_back(urls: dict, samples: dict, build_dir: Path, tmp_path: Path) -> None:
    from twinserve.launchers import tfserving as launcher

    private = stack_settings(tmp_path / "run", build_dir, models="tabular")
    sup = Supervisor(private.run_dir)
    sup.start([launcher.launch(private, private.run_dir)], timeout=120)
    a, b = urls["tfserving"], f"http://127.0.0.1:{private.tfserving_rest_port}"
    gw = {"backends": "tfserving", "primary": "tfserving", "failover": False, "models": "tabular", "tfserving_url": f"{a},{b}", "breaker_failures": 2, "breaker_cooldown_s": 1.0, "timeout_s": 5.0}
    try:
        with running_gateway(**gw) as g, httpx.Client(timeout=30) as client:
            ready = client.get(f"{g}/readyz").json()
            assert ready["ready"] and ready["replicas"]["tabular"]["tfserving"] == {label(a): "READY", label(b): "READY"}
            assert client.get(f"{g}/v1/models/tabular").json()["replicas"]["tfserving"] == {label(a): "READY", label(b): "READY"}

            start = replica_counts(g, "tfserving")
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda _: httpx.post(f"{g}/v1/models/tabular:predict", content=body(samples), timeout=30), range(60)))
            assert all(r.status_code == 200 for r in answers), [r.text for r in answers if r.status_code != 200]
            spread = replica_counts(g, "tfserving")
            share = {r: delta(spread, start, label(r), "ok") for r in (a, b)}
            assert sum(share.values()) == 60 and min(share.values()) >= 10, share  # both replicas took a real share

            # load from 3 threads while replica b is stopped, then started again
            results: list[int] = []
            stop = threading.Event()

            def load() -> None:
                with httpx.Client(timeout=30) as c:
                    while not stop.is_set():
                        results.append(c.post(f"{g}/v1/models/tabular:predict", content=body(samples)).status_code)

            threads = [threading.Thread(target=load) for _ in range(3)]
            for t in threads:
                t.start()
            try:
                time.sleep(1.0)
                before_kill = replica_counts(g, "tfserving")
                sup.stop(["tfserving"])
                time.sleep(2.0)
                killed = replica_counts(g, "tfserving")
                down = client.get(f"{g}/readyz").json()
                assert down["ready"], down  # the stack is ready while any replica is
                assert down["replicas"]["tabular"]["tfserving"][label(a)] == "READY"
                assert down["replicas"]["tabular"]["tfserving"][label(b)].startswith("DOWN")
                assert down["load"]["tfserving"][label(b)]["ejected"] is True
                served_while_down = delta(killed, before_kill, label(a), "ok")
                assert delta(killed, before_kill, label(b), "failed") >= 1  # it was tried, failed and ejected
                assert served_while_down > 0

                sup.start([launcher.launch(private, private.run_dir)], timeout=120)
                time.sleep(1.5)  # past the cooldown: a probe puts it back
                back_at = replica_counts(g, "tfserving")
                time.sleep(2.0)
                back = replica_counts(g, "tfserving")
            finally:
                stop.set()
                for t in threads:
                    t.join(timeout=30)
            assert results and all(s == 200 for s in results), f"{sum(s != 200 for s in results)} of {len(results)} failed: {sorted(set(results))}"
            assert delta(back, back_at, label(b), "ok") > 0, "the restarted replica did not serve again"
            assert client.get(f"{g}/readyz").json()["load"]["tfserving"][label(b)]["ejected"] is False
    finally:
        sup.stop()


def test_a_replica_where_nothing_listens_is_ejected_and_its_management_api_asked_at_its_own_address(urls: dict, samples: dict) -> None:
    """TorchServe at the session's address and at 127.0.0.2 (same ports, nothing listening there):
    every request is served, the dead replica is ejected, and its state comes from its own
    management port."""
    port = urls["torchserve"].rsplit(":", 1)[1]
    mport = urls["management"].rsplit(":", 1)[1]
    dead = f"127.0.0.2:{port}"
    gw = {"backends": "torchserve", "primary": "torchserve", "failover": False, "models": "tabular", "torchserve_url": f"{urls['torchserve']},http://{dead}", "torchserve_management_url": urls["management"], "breaker_failures": 2, "breaker_cooldown_s": 30.0}
    with running_gateway(**gw) as g, httpx.Client(timeout=30) as client:
        start = replica_counts(g, "torchserve")
        answers = [client.post(f"{g}/v1/models/tabular:predict", content=body(samples)) for _ in range(20)]
        assert all(r.status_code == 200 and r.headers["x-backend"] == "torchserve" for r in answers)
        after = replica_counts(g, "torchserve")
        assert delta(after, start, dead, "failed") == 2  # tried until ejected (2 failures), then left alone
        assert delta(after, start, label(urls["torchserve"]), "ok") == 20
        ready = client.get(f"{g}/readyz").json()
        states = ready["replicas"]["tabular"]["torchserve"]
        assert states[label(urls["torchserve"])] == "READY"
        assert states[dead] == "DOWN (unreachable (connection refused))", states  # asked at 127.0.0.2:<management port>
        assert ready["models"]["tabular"]["torchserve"] == "READY" and ready["load"]["torchserve"][dead]["ejected"]
        ejected = [s for s in text_string_to_metric_families(client.get(f"{g}/metrics").text) if s.name == "twinserve_gateway_replica_ejected"]
        assert any(x.labels["replica"] == dead and x.value == 1 for x in ejected[0].samples)
        assert mport != port


def test_every_replica_down_is_a_503_naming_one_and_ejects_both() -> None:
    """Each request tries every replica in rotation before it fails: one request ejects both."""
    gw = {"backends": "tfserving", "primary": "tfserving", "failover": False, "models": "tabular", "tfserving_url": "http://127.0.0.2:9,http://127.0.0.3:9", "breaker_failures": 1, "breaker_cooldown_s": 30.0}
    with running_gateway(**gw) as g, httpx.Client(timeout=30) as client:
        start = replica_counts(g, "tfserving")
        first = client.post(f"{g}/v1/models/tabular:predict", json={"instances": [[0.0] * 30]})
        assert first.status_code == 503 and first.json()["type"] == "backend_unavailable", first.text
        assert any(f"tfserving is unreachable at 127.0.0.{i}:9 (connection refused)" == first.json()["error"] for i in (2, 3)), first.text
        after = replica_counts(g, "tfserving")
        assert all(delta(after, start, f"127.0.0.{i}:9", "failed") == 1 for i in (2, 3))
        ready = client.get(f"{g}/readyz")
        assert ready.status_code == 503 and all(v["ejected"] for v in ready.json()["load"]["tfserving"].values())
        assert ready.json()["models"]["tabular"]["tfserving"] == "DOWN (unreachable (connection refused))"


# discovery and selection, on the replica set itself ---------------------------------------------

def replica_set(urls: str = "http://stack.example:8501", failures: int = 2) -> ReplicaSet:
    """A set whose names did not resolve at construction (no such host here); tests feed addresses."""
    return ReplicaSet("tfserving", urls, failures, 30.0, 0)


def feed(rs: ReplicaSet, *answers: list[str] | str) -> None:
    rs._apply(list(zip(rs.sources, answers)))


def test_re_resolving_adds_and_removes_replicas_and_keeps_the_state_of_those_that_stay() -> None:
    rs = replica_set()
    assert rs.replicas == [] and "stack.example did not resolve" in rs.nothing_to_pick(set())
    feed(rs, ["10.0.0.1", "10.0.0.2"])
    first, second = rs.replicas
    assert [r.label for r in rs.replicas] == ["10.0.0.1:8501", "10.0.0.2:8501"] and first.origin == "http://10.0.0.1:8501"
    second.record("failed", True)
    second.record("failed", True)
    assert second.breaker.state == "open"
    feed(rs, ["10.0.0.2", "10.0.0.3"])  # a scale event: .1 gone, .3 new, .2 kept with its breaker
    assert [r.label for r in rs.replicas] == ["10.0.0.2:8501", "10.0.0.3:8501"]
    assert rs.replicas[0] is second and second.breaker.state == "open"
    feed(rs, "Name or service not known")  # a DNS hiccup keeps the last replicas
    assert [r.label for r in rs.replicas] == ["10.0.0.2:8501", "10.0.0.3:8501"] and rs.unresolved
    feed(rs, ["fd00::5"])
    assert [r.label for r in rs.replicas] == ["[fd00::5]:8501"] and rs.replicas[0].origin == "http://[fd00::5]:8501"


def test_power_of_two_choices_prefers_the_less_busy_and_skips_the_ejected() -> None:
    rs = replica_set()
    feed(rs, ["10.0.0.1", "10.0.0.2"])
    one, two = rs.replicas
    one.in_flight = 5
    assert all(rs.pick(set()) is two for _ in range(20))
    two.record("failed", True)
    two.record("failed", True)  # ejected
    assert all(rs.pick(set()) is one for _ in range(20))
    assert rs.pick({one}) is None and "every replica is out of rotation" in rs.nothing_to_pick({one})
    two.breaker.opened_at -= 31  # the cooldown is over: exactly one probe is let through
    one.in_flight = 0
    picks = [rs.pick({one}) for _ in range(3)]
    assert picks[0] is two and picks[1:] == [None, None]
    two.record("ok", True)
    assert two.breaker.state == "closed"


def test_a_lone_replica_is_never_ejected() -> None:
    rs = replica_set()
    feed(rs, ["10.0.0.1"])
    only = rs.replicas[0]
    for _ in range(5):
        only.record("failed", rs.ejects)
    assert rs.pick(set()) is only and only.breaker.state == "closed"


def test_sources_are_checked_and_only_plain_http_names_are_resolved() -> None:
    assert parse_sources("http://a:1, https://b:2,http://127.0.0.1:3,http://localhost:4", "x") == [
        Source("http", "a", 1, True), Source("https", "b", 2, False), Source("http", "127.0.0.1", 3, False), Source("http", "localhost", 4, False),
    ]
    for bad, words in (("tfserving:8501", "is not an http(s)://host[:port] URL"), ("http://a:1/v1", "has a path"), (" , ", "no URL given")):
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
            parse_sources(bad, "x")


def test_a_replica_found_later_joins_the_rotation_once_it_serves_every_model() -> None:
    import asyncio

    rs = replica_set()
    feed(rs, ["10.0.0.1"])  # a replica found after start-up: not warm yet
    feed(rs, ["10.0.0.1", "10.0.0.2"])
    one, two = rs.replicas
    one.warm = True  # as if it had passed its check earlier
    assert not two.warm and all(rs.pick(set()) is one for _ in range(20))
    assert rs.pick({one}) is two  # a cold replica is tried when no warm one is left
    answers = {"10.0.0.2:8501": [False, True]}

    async def ready(replica):  # the replica's models load between two looks
        return answers[replica.label].pop(0)

    asyncio.run(rs.warm_up(ready))
    assert not two.warm
    asyncio.run(rs.warm_up(ready))
    assert two.warm and {rs.pick(set()) for _ in range(50)} == {one, two}
