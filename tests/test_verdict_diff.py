"""The report's verdict and `twinserve report diff`, on summaries built here (no bench, no stack)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from statistics import median

import pytest

from loadtests import diff as rundiff
from loadtests import verdict as runverdict

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "twinserve.cli"]
COMPAT = "twinserve TF-Serving-compatible server (twinserve-tf-compat/2.21.0), NOT TensorFlow Serving"
TARGETS = {
    "torchserve": ("torchserve", False, None), "tfserving": ("tfserving", False, None),
    "gateway-torchserve": ("torchserve", True, "gateway"), "gateway-tfserving": ("tfserving", True, "gateway"),
}


def entry(model: str, target: str, rps: list[float], p99: list[float], *, us: bool = False, stable: bool | None = None, server: dict | None = None) -> dict:
    """One target as bench.summarise writes it; `us` adds the per-repetition latency_us of new summaries."""
    stack, via, front = TARGETS[target]
    reps = []
    for r, p in zip(rps, p99):
        rep = {"rps": r, "p50_ms": round(p / 2), "p99_ms": round(p)}
        if us:
            rep["latency_us"] = {"p50": p * 500, "p90": p * 800, "p95": p * 900, "p99": p * 1000, "p99.9": p * 1500, "max": p * 2000, "mean": p * 600, "count": 1000}
        reps.append(rep)
    out = {
        "model": model, "target": target, "stack": stack, "via_gateway": via, "front": front, "repetitions": reps,
        "requests": 1000, "failures": 0, "median": {"rps": median(rps), "p50_ms": median(p99) / 2, "p99_ms": median(p99)},
        "spread": {"rps": [min(rps), max(rps)], "p99_ms": [min(p99), max(p99)]}, "server": server or {},
    }
    if stable is not None:
        out["stable"] = stable
    return out


def summary(*results: dict, impl: str = COMPAT, **extra: object) -> dict:
    return {"results": list(results), "environment": {"tfserving_implementation": impl, "machine": {"time": "t"}}, "config": {"repetitions": 3, "users": 8}, **extra}


def row(rows: list[dict], path: str) -> dict:
    return next(r for r in rows if r["path"] == path)


# --- the verdict ---------------------------------------------------------------------------------


def test_the_verdict_names_the_faster_stack_and_the_factor() -> None:
    s = summary(entry("m", "torchserve", [100, 102, 101], [10, 11, 12]), entry("m", "tfserving", [200, 202, 201], [20, 21, 22]))
    r = row(runverdict.verdict(s), "direct")
    assert r["throughput"]["faster"] == "tfserving"
    assert r["throughput"]["factor"] == pytest.approx(201 / 101)
    assert r["p99"]["faster"] == "torchserve"  # lower p99 is faster
    assert r["p99"]["factor"] == pytest.approx(21 / 11)
    assert r["throughput"]["significant"] is True and r["throughput"]["chance"] == pytest.approx(0.1)  # 2 / C(6, 3)
    assert r["tf_label"] == "the TF-Serving-compatible server"


def test_overlapping_ranges_are_within_noise() -> None:
    s = summary(entry("m", "torchserve", [100, 150, 120], [10, 11, 12]), entry("m", "tfserving", [140, 160, 130], [12, 13, 14]))
    r = row(runverdict.verdict(s), "direct")
    assert r["throughput"]["faster"] == "tfserving"
    assert r["throughput"]["significant"] is False and "within noise" in r["throughput"]["claim"]
    assert r["p99"]["significant"] is False  # 12 on both sides: touching ranges count as overlapping


def test_fewer_than_three_repetitions_make_no_claim() -> None:
    s = summary(entry("m", "torchserve", [100, 101], [10, 11]), entry("m", "tfserving", [300, 301], [30, 31]))
    r = row(runverdict.verdict(s), "direct")
    assert r["throughput"]["faster"] == "tfserving"  # the factor is still stated
    assert r["throughput"]["significant"] is None
    assert "not enough repetitions (n=2 < 3): no claim" in r["throughput"]["claim"]
    assert "no claim" in runverdict.markdown_block(s)


def test_a_target_marked_unstable_gets_no_claim() -> None:
    s = summary(entry("m", "torchserve", [100, 101, 102], [10, 11, 12], stable=False), entry("m", "tfserving", [300, 301, 302], [30, 31, 32], stable=True))
    r = row(runverdict.verdict(s), "direct")
    assert r["throughput"]["significant"] is None and "not stable" in r["throughput"]["claim"]


def test_microsecond_percentiles_are_preferred_and_old_summaries_still_read() -> None:
    new = entry("m", "torchserve", [100, 101, 102], [10.4, 10.5, 10.6], us=True)
    assert runverdict.values(new, "p99") == pytest.approx([10.4, 10.5, 10.6])  # from latency_us, not the rounded p99_ms
    old = entry("m", "torchserve", [100, 101, 102], [10, 11, 12])
    del old["repetitions"]
    assert runverdict.values(old, "rps") == [100, 102]  # the min–max spread of an old summary
    assert runverdict.repetitions(old, "rps") == 2


def gateway_run(direct_ts: float, via_ts: float, *, cpu: bool) -> dict:
    """Direct TorchServe/TF ratio direct_ts, via the gateway via_ts; three repetitions, tight."""
    def three(x: float) -> list[float]:
        return [x * 0.99, x, x * 1.01]

    gw = {"stack": {"cpu_ms_per_request": 0.7}, "gateway": {"cpu_ms_per_request": 0.95}} if cpu else {}
    return summary(
        entry("m", "torchserve", three(1000 * direct_ts), [20, 21, 22], server={"stack": {"cpu_ms_per_request": 1.5}} if cpu else None),
        entry("m", "tfserving", three(1000), [12, 13, 14], server={"stack": {"cpu_ms_per_request": 0.7}} if cpu else None),
        entry("m", "gateway-torchserve", three(580 * via_ts), [24, 25, 26], server=gw),
        entry("m", "gateway-tfserving", three(580), [24, 25, 26], server=gw),
    )


def test_a_gateway_that_saturated_first_is_flagged() -> None:
    rows = runverdict.verdict(gateway_run(0.76, 1.00, cpu=False))
    g = row(rows, "via gateway")["gateway"]
    assert g["flag"] is True and g["direct_ratio"] == pytest.approx(0.76) and g["gateway_ratio"] == pytest.approx(1.0)
    assert g["basis"] == "ratios alone" and "judged on the ratios alone" in g["evidence"]
    assert "measured the gateway, not the stacks" in runverdict.markdown_block(gateway_run(0.76, 1.00, cpu=False))

    g = row(runverdict.verdict(gateway_run(0.76, 1.00, cpu=True)), "via gateway")["gateway"]
    assert g["flag"] is True and g["basis"] == "ratios and the gateway's CPU"
    assert "0.95 ms CPU per request" in g["evidence"] and "costlier hop" in g["evidence"]

    g = row(runverdict.verdict(gateway_run(0.76, 0.78, cpu=True)), "via gateway")["gateway"]
    assert g["flag"] is False  # the gateway kept the stacks' difference
    assert "measured the gateway" not in runverdict.markdown_block(gateway_run(0.76, 0.78, cpu=True))


def test_significance_lost_through_an_idle_gateway_is_not_blamed_on_the_gateway() -> None:
    """Direct beyond noise, via the gateway within noise (overlapping ranges), ratios alike: with the
    gateway at a twentieth of each stack's CPU per request that is noise, not the gateway (the image
    model's case: 1.7 ms in the gateway against 30-39 ms in the stacks); at the stacks' own cost it is flagged."""
    def run(gateway_ms: float) -> dict:
        gw = {"gateway": {"cpu_ms_per_request": gateway_ms}}
        return summary(
            entry("m", "torchserve", [26, 26.5, 27], [400, 410, 420], server={"stack": {"cpu_ms_per_request": 38.0}}),
            entry("m", "tfserving", [32, 33, 33.5], [300, 310, 320], server={"stack": {"cpu_ms_per_request": 30.0}}),
            entry("m", "gateway-torchserve", [24, 27, 29], [350, 360, 370], server=gw),
            entry("m", "gateway-tfserving", [28, 32, 34], [330, 340, 350], server=gw),
        )

    g = row(runverdict.verdict(run(1.7)), "via gateway")["gateway"]
    assert g["flag"] is False and "noise, not the gateway" in g["why"]
    assert "measured the gateway" not in runverdict.markdown_block(run(1.7))
    g = row(runverdict.verdict(run(35.0)), "via gateway")["gateway"]
    assert g["flag"] is True and "the gateway's is not" in g["why"] and "noise, not the gateway" not in g["why"]


def test_a_via_gateway_pair_without_its_direct_pair_is_flagged_on_the_gateways_cpu() -> None:
    saturated = {"saturated": "gateway", "why": "the gateway (one process) used 0.97 of a core"}
    ts, tf = entry("m", "gateway-torchserve", [500, 501, 502], [20, 21, 22]), entry("m", "gateway-tfserving", [510, 511, 512], [20, 21, 22])
    ts["bottleneck"] = saturated
    g = row(runverdict.verdict(summary(ts, tf)), "via gateway")["gateway"]
    assert g["flag"] is True and g["basis"] == "the gateway's CPU alone" and "0.97 of a core" in g["why"]
    assert "measured the gateway, not the stacks" in runverdict.markdown_block(summary(ts, tf))
    del ts["bottleneck"]
    assert row(runverdict.verdict(summary(ts, tf)), "via gateway")["gateway"]["flag"] is False


# --- a sweep run's verdict -------------------------------------------------------------------------


def sweep_of(target: str, rps: list[float], gateway_cores: list[float] | None = None, users: tuple[int, ...] = (1, 2, 4, 8)) -> dict:
    """One target's sweep as bench.summarise writes it: one run per step, each with its bottleneck."""
    points = []
    for i, (u, r) in enumerate(zip(users, rps)):
        comps = {"stack": {"cores": 0.6, "machine_share": 0.3}, "load generator": {"cores": 0.2, "machine_share": 0.1}}
        neck = {"saturated": None, "why": "nothing saturated"}
        if gateway_cores is not None:
            comps["gateway"] = {"cores": gateway_cores[i], "machine_share": gateway_cores[i] / 2}
            if gateway_cores[i] >= 0.9:
                neck = {"saturated": "gateway", "why": f"the gateway (one process) used {gateway_cores[i]:.2f} of a core"}
        points.append({"users": u, "rate": 0.0, "rps": r, "p50_ms": 1000 * u / r / 2, "p99_ms": 2000 * u / r, "failures": 0,
                       "latency_us": {"p50": 500_000 * u / r, "p99": 2_000_000 * u / r, "count": 100},
                       "bottleneck": {"components": comps, **neck, "machine_share": 0.5}})
    knee = {"index": len(points) - 1, "load": points[-1]["users"], "rps": points[-1]["rps"], "p50_ms": 1.0, "p99_ms": 2.0, "efficiency_after": None, "reached": False}
    return {"model": "m", "target": target, "kind": "concurrency (closed loop)", "load_key": "users", "slo_p99_ms": 50.0, "points": points,
            "stopped": "last step reached", "knee": knee, "via_gateway": target.startswith("gateway-"), "bottleneck": points[-1]["bottleneck"]}


def sweep_run(*sweeps: dict) -> dict:
    return {"results": [], "sweep": list(sweeps), "environment": {"tfserving_implementation": COMPAT, "machine": {"time": "t"}}, "config": {"profile": "sweep"}}


def test_a_sweep_run_has_a_verdict_at_the_highest_step_in_common() -> None:
    s = sweep_run(
        sweep_of("torchserve", [100, 190, 360, 700]), sweep_of("tfserving", [120, 230, 450], users=(1, 2, 4)),  # TF stopped at 4
        sweep_of("gateway-torchserve", [80, 150, 290, 500], [0.2, 0.4, 0.7, 0.8]), sweep_of("gateway-tfserving", [90, 170, 330, 560], [0.2, 0.4, 0.7, 0.8]),
    )
    rows = runverdict.verdict(s)
    direct, via = row(rows, "direct"), row(rows, "via gateway")
    assert direct["sweep"]["load"] == 4 and via["sweep"]["load"] == 4  # the highest step all four ran: the paths compare
    assert direct["throughput"]["faster"] == "tfserving" and direct["throughput"]["factor"] == pytest.approx(450 / 360)
    assert direct["throughput"]["significant"] is None and "one run per sweep step" in direct["throughput"]["claim"]
    g = via["gateway"]
    assert g["flag"] is False and "did not saturate at any step (at most 0.80 of a core)" in g["note"]
    md = runverdict.markdown_block(s)
    assert runverdict.NO_PAIR not in md and "direct at 4 users · throughput" in md
    assert "TorchServe 360 vs TF-compat 450 req/s" in md  # one run a side: no [min–max] range
    assert "knee: TorchServe not reached" in md and "measured the gateway" not in md
    assert "at least 3 repetitions" not in md and "one run per step" in md  # the sweep's rule, not the repetitions'
    assert "Verdict" in runverdict.html_block(s) and "did not saturate" in runverdict.html_block(s)


def test_a_sweep_whose_gateway_saturated_at_any_step_is_flagged() -> None:
    """The via-gateway points' own bottleneck decides, whichever step is compared: ratios that kept
    the stacks' difference do not clear it."""
    s = sweep_run(
        sweep_of("torchserve", [100, 190, 360, 700]), sweep_of("tfserving", [120, 230, 450, 880]),
        sweep_of("gateway-torchserve", [80, 150, 290, 560], [0.2, 0.4, 0.7, 0.95]), sweep_of("gateway-tfserving", [95, 180, 350, 690], [0.2, 0.4, 0.7, 0.85]),
    )
    g = row(runverdict.verdict(s), "via gateway")["gateway"]
    assert g["flag"] is True and g["saturated"] == ["torchserve"]
    assert "in front of TorchServe at 8 users (the gateway (one process) used 0.95 of a core)" in g["why"]
    assert g["cpu"]["torchserve"]["cores"] == pytest.approx(0.95, abs=1e-3)  # the gateway's CPU per request from the step's cores
    assert g["basis"].startswith("the gateway's CPU at every step")
    md = runverdict.markdown_block(s)
    assert "⚠ via gateway: **measured the gateway, not the stacks**" in md and "at 8 users" in md
    # compressed ratios without a saturated gateway are only a note: one run a side
    s = sweep_run(
        sweep_of("torchserve", [100, 190, 360, 700]), sweep_of("tfserving", [130, 250, 470, 930]),
        sweep_of("gateway-torchserve", [80, 150, 290, 560], [0.2, 0.4, 0.6, 0.7]), sweep_of("gateway-tfserving", [80, 150, 290, 570], [0.2, 0.4, 0.6, 0.7]),
    )
    g = row(runverdict.verdict(s), "via gateway")["gateway"]
    assert g["compressed"] is True and g["flag"] is False and "a hint, not a finding" in g["note"]


def test_a_sweep_through_the_gateway_alone_still_says_whether_the_gateway_saturated() -> None:
    s = sweep_run(sweep_of("gateway-torchserve", [80, 150], [0.5, 0.93], users=(1, 2)), sweep_of("gateway-tfserving", [90, 170], [0.5, 0.6], users=(1, 2)))
    (r,) = runverdict.verdict(s)
    assert r["path"] == "via gateway" and r["gateway"]["flag"] is True and "at 2 users" in r["gateway"]["why"]
    assert "measured the gateway, not the stacks" in runverdict.markdown_block(s)


def test_the_tf_side_is_named_as_what_ran() -> None:
    pair = (entry("m", "torchserve", [1, 2, 3], [1, 2, 3]), entry("m", "tfserving", [4, 5, 6], [4, 5, 6]))
    compat = runverdict.markdown_block(summary(*pair))
    assert "the TF-Serving-compatible server" in compat and "**TensorFlow Serving**" not in compat
    assert "TF-compat" in compat and COMPAT in compat
    real = runverdict.markdown_block(summary(*pair, impl="TensorFlow Serving (tensorflow_model_server)"))
    assert "**TensorFlow Serving** faster" in real
    unknown = runverdict.verdict({"results": list(pair)})
    assert unknown[0]["tf_label"] == "the TF backend (implementation not recorded)"
    page = runverdict.html_block(summary(*pair))
    assert page.startswith("<h2>Verdict</h2>") and "<strong>the TF-Serving-compatible server</strong>" in page and "**" not in page
    assert "no verdict" in runverdict.markdown_block(summary())


# --- the diff ------------------------------------------------------------------------------------


def two_runs() -> tuple[dict, dict]:
    a = summary(
        entry("m", "torchserve", [100, 102, 104], [10, 10.2, 10.4], us=True),
        entry("m", "tfserving", [200, 220, 240], [20, 22, 24], us=True),
        entry("m", "gateway-torchserve", [50, 51, 52], [30, 31, 32]),
    )
    b = summary(
        entry("m", "torchserve", [130, 132, 134], [13, 13.2, 13.4], us=True),  # +29% req/s, +29% p99: improved and regressed
        entry("m", "tfserving", [205, 225, 245], [20.5, 22.5, 24.5], us=True),  # +2%: within noise
        entry("m", "gateway-tfserving", [50, 51, 52], [30, 31, 32]),
    )
    return a, b


def test_diff_classifies_each_target_and_metric() -> None:
    a, b = two_runs()
    rows = rundiff.diff(a, b, {"p99": 10})
    get = {(r["target"], r["metric"]): r for r in rows}
    assert get[("torchserve", "rps")]["status"] == "improved"
    assert get[("torchserve", "p99")]["status"] == "regressed" and get[("torchserve", "p99")]["fails"]
    assert get[("torchserve", "p99")]["change_pct"] == pytest.approx((13.2 - 10.2) / 10.2 * 100)
    assert get[("torchserve", "p99")]["noise_pct"] == pytest.approx(0.2 / 10.2 * 100 + 0.2 / 13.2 * 100)
    assert get[("tfserving", "p99")]["status"] == "within noise" and not get[("tfserving", "p99")]["fails"]
    assert ("torchserve", "p99.9") in get  # both runs recorded it in µs
    assert get[("gateway-torchserve", None)]["status"] == "only in A" and get[("gateway-tfserving", None)]["status"] == "only in B"
    assert not get[("gateway-torchserve", None)]["fails"]
    assert [r["target"] for r in rundiff.failures(rows)] == ["torchserve"]
    assert not rundiff.failures(rundiff.diff(a, b, {"p99": 50}))  # beyond the noise, not beyond the threshold


def test_a_regression_within_the_noise_band_does_not_fail() -> None:
    a = summary(entry("m", "torchserve", [100, 100, 100], [10, 14, 18], us=True))
    b = summary(entry("m", "torchserve", [100, 100, 100], [12, 16, 20], us=True))  # +14% p99, band ±25% + ±22%
    (p99,) = [r for r in rundiff.diff(a, b, {"p99": 10}) if r["metric"] == "p99"]
    assert p99["status"] == "within noise" and not p99["fails"]


def test_rounded_milliseconds_have_a_one_step_floor() -> None:
    a = summary(entry("m", "tfserving", [100, 100, 100], [16, 16, 16]))
    b = summary(entry("m", "tfserving", [100, 100, 100], [15, 15, 15]))  # one ms of locust's rounding
    (p99,) = [r for r in rundiff.diff(a, b) if r["metric"] == "p99"]
    assert p99["status"] == "within noise"
    assert not [r for r in rundiff.diff(a, b) if r["metric"] == "p99.9"]  # not recorded by old summaries


def test_diff_notes_a_different_tf_side_or_load() -> None:
    a, b = two_runs()
    b["environment"]["tfserving_implementation"] = "TensorFlow Serving (tensorflow_model_server)"
    b["config"]["users"] = 16
    notes = " ".join(rundiff.notes(a, b))
    assert "the TF side differs" in notes and "users 8 → 16" in notes


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "report", "diff", *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_diff_exit_status(tmp_path: Path) -> None:
    a, b = two_runs()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "summary.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))

    regressed = cli(str(tmp_path / "a"), str(tmp_path / "b.json"), "--metric", "p99", "--threshold", "10")
    assert regressed.returncode == 1, regressed.stdout + regressed.stderr
    assert "regressed beyond 10%" in regressed.stdout and "only in A" in regressed.stdout
    assert COMPAT.split(" (")[0] in regressed.stdout  # which TF backend ran

    assert cli(str(tmp_path / "a"), str(tmp_path / "b.json"), "--metric", "p99", "--threshold", "50").returncode == 0
    assert cli(str(tmp_path / "a"), str(tmp_path / "b.json"), "--metric", "rps").returncode == 0  # req/s improved
    assert cli(str(tmp_path / "a"), str(tmp_path / "a")).returncode == 0
    as_json = cli(str(tmp_path / "a"), str(tmp_path / "b.json"), "--json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["failed"] is True

    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "other.json").write_text('{"ok": true}')
    for bad in ("missing", "empty", "bad.json", "other.json"):
        result = cli(str(tmp_path / bad), str(tmp_path / "b.json"))
        assert result.returncode == 2, (bad, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("twinserve report diff: "), result.stderr


def real_pair() -> tuple[Path, Path] | None:
    """The newest two bench runs under reports/ that measured a target in common."""
    runs = sorted((p.parent for p in (ROOT / "reports").glob("*/summary.json")), reverse=True)
    keys = {}
    for run in runs:
        try:
            keys[run] = {(r["model"], r["target"]) for r in json.loads((run / "summary.json").read_text())["results"]}
        except (ValueError, KeyError, TypeError):
            continue
    pairs = [(a, b) for i, b in enumerate(keys) for a in list(keys)[i + 1:] if keys[a] & keys[b]]
    return pairs[0] if pairs else None


def test_two_runs_with_nothing_in_common_pass(tmp_path: Path) -> None:
    a, b = two_runs()
    for e in b["results"]:
        e["model"] = "other"
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    result = cli(str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert result.returncode == 0 and "no target in common" in result.stderr
    old = summary(entry("m", "torchserve", [1, 2, 3], [1, 2, 3]))
    (tmp_path / "old.json").write_text(json.dumps(old))
    missing = cli(str(tmp_path / "old.json"), str(tmp_path / "old.json"), "--metric", "p99.9")
    assert missing.returncode == 2 and "p99.9 is not recorded" in missing.stderr


@pytest.mark.skipif(real_pair() is None, reason="needs two bench runs with a target in common under reports/ (none in CI)")
def test_two_real_reports() -> None:
    a, b = real_pair()
    for path in (a, b):
        block = runverdict.markdown_block(rundiff.load(path))
        assert block.startswith("## Verdict") and "TorchServe" in block
    result = cli(str(a), str(b))
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert "B against A" in result.stdout
