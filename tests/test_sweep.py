"""Sweeps (issue #15 item 3) and the bottleneck (item 4): the pure rules on synthetic steps, the
open loop's latency from the intended send time against a slow server, and one short real sweep."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import bench_and_report
from gatewayutil import answering_backend

from loadtests import bench, sweep


def steps(load: list[float], rps: list[float], p99: list[float] | None = None, key: str = "users") -> list[dict]:
    p99 = p99 or [5.0] * len(load)
    return [{key: u, "rps": r, "p50_ms": p / 2, "p99_ms": p, "failures": 0} for u, r, p in zip(load, rps, p99)]


def test_the_sweep_stops_when_throughput_stops_growing_or_p99_passes_the_objective() -> None:
    assert sweep.stop_reason([], 50) is None
    assert sweep.stop_reason(steps([1], [100]), 50) is None
    assert sweep.stop_reason(steps([1, 2], [100, 190]), 50) is None
    assert "grew 4.0%" in sweep.stop_reason(steps([1, 2], [100, 104]), 50)
    assert sweep.stop_reason(steps([1, 2], [100, 105.1]), 50) is None  # 5% is enough to go on
    assert "objective" in sweep.stop_reason(steps([1, 2], [100, 190], [5, 60]), 50)
    assert "failed" in sweep.stop_reason([*steps([1], [100]), {"users": 2, "rps": 190, "p99_ms": 5, "failures": 3}], 50)


def test_the_knee_is_the_last_step_before_the_gain_falls_below_half_of_proportional() -> None:
    # doubling users: +90%, +80% (efficiency 0.9, 0.8), then +30% (0.3 < 0.5): the knee is the 4-user step
    k = sweep.knee(steps([1, 2, 4, 8], [100, 190, 342, 445]), "users")
    assert k["index"] == 2 and k["load"] == 4 and k["rps"] == 342 and k["reached"] and abs(k["efficiency_after"] - 0.3) < 0.01
    # open loop: offered 100 → 200 → 400, achieved 100, 200, 250 (efficiency 0.25 on the last step)
    k = sweep.knee(steps([100, 200, 400], [99, 198, 250], key="rate"), "rate")
    assert k["load"] == 200 and k["reached"]
    k = sweep.knee(steps([1, 2, 4], [100, 200, 390]), "users")
    assert k["index"] == 2 and not k["reached"]  # every step stayed proportional: not reached
    assert sweep.knee([], "users") is None


def test_the_bottleneck_names_the_saturated_component() -> None:
    cpu = sweep.shares({"stack": 0.4, "gateway": 0.95 * 4, "load generator": 0.8 * 4}, 4.0, 2)
    assert cpu["gateway"] == {"cores": 0.95, "machine_share": 0.475}
    neck = sweep.bottleneck(cpu, 2, 0.7)
    assert neck["saturated"] == "gateway" and "0.95 of a core" in neck["why"]
    neck = sweep.bottleneck(sweep.shares({"stack": 2.0, "load generator": 3.6}, 4.0, 2), 2, 0.92)
    assert neck["saturated"] == "load generator"
    neck = sweep.bottleneck(sweep.shares({"stack": 5.6, "load generator": 2.0}, 4.0, 2), 2, 0.5)
    assert neck["saturated"] == "stack" and neck["machine_share"] == 0.95  # the machine was busy: its largest consumer
    neck = sweep.bottleneck(sweep.shares({"stack": 2.0, "load generator": 1.0}, 4.0, 2), 2, 0.25)
    assert neck["saturated"] is None
    # the machine measured busier than the components (other processes): judged on the machine, the largest component named
    neck = sweep.bottleneck(sweep.shares({"stack": 2.0, "load generator": 1.0}, 4.0, 2), 2, 0.25, machine_busy=0.93)
    assert neck["saturated"] == "stack" and neck["machine_share"] == 0.93
    # a via-gateway row whose gateway saturated says it measured the gateway
    (w,) = bench.bottleneck_warnings([{"model": "tabular", "target": "gateway-tfserving", "via_gateway": True, "bottleneck": {"saturated": "gateway", "why": "x"}}])
    assert "this measured the gateway, not the stacks" in w


def test_a_stack_pinned_at_one_core_is_named_saturated() -> None:
    """The mobilenet sweep: the stack at 0.94–1.0 of a core on 2 cores, the machine 60–70% busy,
    reported "nothing saturated". One worker or one busy thread: one core is the stack's limit."""
    for used in (0.94, 0.97, 1.0):
        cpu = sweep.shares({"stack": used * 4, "load generator": 0.3 * 4}, 4.0, 2)
        neck = sweep.bottleneck(cpu, 2, 0.2, machine_busy=0.65)
        assert neck["saturated"] == "stack", neck
        assert "a core's worth" in neck["why"] and set(neck) == {"saturated", "why", "machine_share"}
    assert "the stack used 1.00 cores" in neck["why"]
    named = sweep.bottleneck(sweep.shares({"stack": 0.97 * 4}, 4.0, 2), 2, 0.2, machine_busy=0.65, stack="torchserve")
    assert named["why"].startswith("the stack (torchserve) used 0.97 of a core, a core's worth") and "65% busy" in named["why"]
    # below the line: nothing, and the wording says the stack was checked too
    neck = sweep.bottleneck(sweep.shares({"stack": 0.85 * 4}, 4.0, 2), 2, 0.2, machine_busy=0.6)
    assert neck["saturated"] is None and "nor the stack" in neck["why"]
    # precedence: a saturated gateway or locust invalidates the figures, so it is named before the stack
    both = sweep.shares({"stack": 0.97 * 4, "gateway": 0.93 * 4, "load generator": 0.1 * 4}, 4.0, 2)
    assert sweep.bottleneck(both, 2, 0.1, stack="tfserving")["saturated"] == "gateway"
    assert sweep.bottleneck(sweep.shares({"stack": 0.97 * 4}, 4.0, 2), 2, 0.95, stack="tfserving")["saturated"] == "load generator"
    # the routed gateway's "stack" sums both stacks: one core there may be two halves
    assert sweep.bottleneck(sweep.shares({"stack": 1.0 * 4}, 4.0, 2), 2, 0.1, machine_busy=0.6, stack="routed", stacks=2)["saturated"] is None


def neck(saturated: str | None) -> dict:
    return {"components": {}, "saturated": saturated, "why": f"{saturated} why", "machine_share": 0.5}


def test_a_sweep_names_a_gateway_saturated_at_any_step_before_its_knee() -> None:
    """With the stack rule the knee's step often names the stack; a gateway saturated at a later
    step must still reach the sweep's bottleneck (and so its warning)."""
    points = [{"users": u, "bottleneck": neck(s)} for u, s in ((1, None), (2, "stack"), (4, "gateway"))]
    assert sweep.sweep_bottleneck(points, 1)["saturated"] == "gateway"
    points[2]["bottleneck"] = neck("load generator")
    assert sweep.sweep_bottleneck(points, 1)["saturated"] == "load generator"
    points[2]["bottleneck"] = neck("stack")
    assert sweep.sweep_bottleneck(points, 0)["saturated"] == "stack"  # the knee's had none: the last step's
    points[2]["bottleneck"] = neck(None)
    assert sweep.sweep_bottleneck(points, 0) is points[0]["bottleneck"]
    assert sweep.sweep_bottleneck([], None) == {}


def test_sweep_wording_counts_users_and_says_what_not_reached_means() -> None:
    assert sweep.load_text(1, "users") == "1 user" and sweep.load_text(8, "users") == "8 users"
    assert sweep.load_text(200, "rate") == "200 req/s offered"
    assert "fell 6.5%" in sweep.stop_reason(steps([1, 2], [100, 93.5]), 50)
    one = steps([1], [20])
    assert sweep.knee_text(sweep.knee(one, "users"), one, "users") == "not found: one step only (1 user: 20.0 req/s)"
    four = steps([1, 2, 4], [100, 200, 390])
    assert sweep.knee_text(sweep.knee(four, "users"), four, "users").startswith("not reached: throughput still scaled up to the last step (4 users")
    bent = steps([1, 2, 4, 8], [100, 190, 342, 445])
    assert sweep.knee_text(sweep.knee(bent, "users"), bent, "users", ", p99 5 ms") == "at 4 users: 342.0 req/s, p99 5 ms"


def sweep_summary() -> dict:
    """A sweep run as bench.summarise and `twinserve bench` write it: no results, the sweeps' points."""
    def sweep_of(target: str, rps: list[float], via: bool) -> dict:
        points = []
        for u, r in zip([1, 2, 4], rps):
            comps = {"stack": {"cores": 0.5 * u / 2, "machine_share": 0.125 * u}, "load generator": {"cores": 0.1, "machine_share": 0.05}}
            points.append({"users": u, "rate": 0.0, "rps": r, "p50_ms": 4.0, "p99_ms": 9.0, "failures": 0, "window_s": 4.01,
                           "latency_us": {"p50": 4000, "p99": 9000, "count": 100},
                           "bottleneck": {"components": comps, **sweep.bottleneck(comps, 2, 0.1)}})
        k = sweep.knee(points, "users")
        return {"model": "tabular", "target": target, "kind": "concurrency (closed loop)", "load_key": "users", "slo_p99_ms": 50.0,
                "points": points, "stopped": "last step reached", "knee": k, "via_gateway": via, "bottleneck": points[k["index"]]["bottleneck"]}

    return {
        "results": [], "ramp": [], "ratios": [], "warnings": [],
        "sweep": [sweep_of("torchserve", [100, 190, 380], False), sweep_of("tfserving", [120, 230, 300], False)],
        "environment": {"versions": {}, "machine": {"cpu_count": 2, "time": "t"}, "tfserving_implementation": "twinserve TF-Serving-compatible server"},
        "stack": {"batch size": 8}, "locust_dir": "/nonexistent",
        "config": {"profile": "sweep", "warmup_s": 1, "repetitions": 3, "ramp_step_s": 4, "duration_s": None, "slo_p99_ms": 50.0, "rates": [], "users": 16},
    }


def test_a_sweep_report_has_its_steps_and_no_empty_results_table(tmp_path: Path) -> None:
    from loadtests import report

    report.write(sweep_summary(), tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Results" not in md  # a header with no rows was printed before
    assert "## Sweep steps (one run each)" in md and "| tabular | torchserve | 1 user | 100.0 |" in md and "| tabular | tfserving | 4 users | 300.0 |" in md
    assert "not reached: throughput still scaled up to the last step (4 users: 380.0 req/s" in md  # torchserve kept scaling
    assert "at 2 users: 230.0 req/s" in md and "1 users" not in md
    assert "stack 1.00 cores (50%)" in md  # cores, the unit of the rule, beside the machine share
    assert "one run per sweep step (no repetitions)" in md and "repetitions with the target order rotated" not in md
    assert "HDR histograms" in md  # the steps' latency is HDR's, not locust's rounded figures
    assert "no verdict" not in md and "direct at 4 users" in md
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Results" not in page and "<h2>Sweep steps (one run each)</h2>" in page and "<td>1 user</td>" in page
    assert "<thead><tr><th>model</th><th>target</th><th>req/s</th>" not in page


def test_open_loop_latency_is_taken_from_the_intended_send_time(tmp_path: Path) -> None:
    """A server that answers 10 req/s at most, offered 20 req/s by one user for 3 s: from the actual
    send each answer takes 100 ms; from the intended send time the backlog adds up to ~1.5 s."""
    with answering_backend(200, b"{}", delay=lambda: 0.1, serial=True) as url:  # one request at a time, 100 ms each
        cfg = bench.BenchConfig(models=["tabular"], targets=["tfserving"], urls={"tfserving": url}, out=tmp_path, profile="open", users=1, duration_s=3, warmup_s=0, repetitions=1, rate=20)
        run = bench.measured_run(cfg, bench.TARGETS["tfserving"], "tabular", 0, 1, 3, "slow", {}, 20.0)
    f = run.figures
    assert 20 <= f.requests <= 40, f.requests  # about 10 req/s for 3 s
    assert f.p50_ms > 500 and f.max_ms > 1000, (f.p50_ms, f.max_ms)  # the queueing behind the slow answers is counted
    assert f.latency_us["p99"] > 1_000_000
    assert run.rate == 20.0


@pytest.fixture(scope="module")
def short_sweep(stack, urls: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("sweep")
    cfg = bench.BenchConfig(
        models=["tabular"], targets=["tfserving"], urls={"tfserving": urls["tfserving"]}, out=out, profile="sweep",
        warmup_s=1, ramp_users=[1, 2], ramp_step_s=3, window_s=1.0,
    )
    return bench_and_report(cfg, stack), out


def test_a_short_real_sweep_writes_the_curve_knee_and_bottleneck(short_sweep: tuple[dict, Path]) -> None:
    summary, out = short_sweep
    (s,) = summary["sweep"]
    assert s["target"] == "tfserving" and s["load_key"] == "users"
    assert 1 <= len(s["points"]) <= 2 and s["points"][0]["users"] == 1 and s["points"][0]["rps"] > 0
    assert s["knee"]["load"] in (1, 2) and s["stopped"]
    for p in s["points"]:
        comps = p["bottleneck"]["components"]
        assert {"stack", "load generator"} <= set(comps) and all(0 <= c["machine_share"] <= 1.2 for c in comps.values())
        assert "saturated" in p["bottleneck"] and 0 < p["bottleneck"]["machine_busy"] <= 1.0
    assert (out / "curve_tabular.png").stat().st_size > 10_000
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["sweep"][0]["knee"] == s["knee"]
    md = (out / "report.md").read_text()
    assert "Sweep: latency against throughput, the knee and the bottleneck" in md and "curve_tabular.png" in md
    assert "curve_tabular.png" in (out / "report.html").read_text()


def test_the_cli_takes_a_rate_sweep_and_refuses_bad_rates(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "twinserve.cli", "bench", "--profile", "sweep", "--rates", "100,x", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "--rates" in proc.stderr


def test_an_open_loop_sweep_finds_its_knee_where_p99_passes_the_objective() -> None:
    """Throughput keeps up with the offered rate while the queue builds: latency shows the knee."""
    from loadtests import sweep as sw

    points = [{"rate": r, "rps": 0.98 * r, "p99_ms": p99} for r, p99 in ((100, 15.0), (400, 21.0), (800, 30.0), (1600, 211.0))]
    k = sw.knee(points, "rate", slo_p99_ms=100)
    assert k is not None and k["load"] == 800 and k["reached"]
    assert not sw.knee(points, "rate")["reached"]  # on throughput alone the knee is never reached
