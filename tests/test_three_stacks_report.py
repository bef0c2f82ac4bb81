"""The verdict, the ratios, the report and the diff with three stacks (TorchServe, the TF side,
KServe + ONNX Runtime), on summaries built here (no bench, no stack)."""

from __future__ import annotations

import copy
from pathlib import Path
from statistics import median

import matplotlib.axes
import pytest

from loadtests import bench, overhead, report
from loadtests import diff as rundiff
from loadtests import verdict as runverdict
from loadtests.targets import TARGETS

COMPAT = "twinserve TF-Serving-compatible server (twinserve-tf-compat/2.21.0), NOT TensorFlow Serving"
REAL_TF = "TensorFlow Serving (tensorflow_model_server)"
ORT = "1.23.2"
KS = "KServe + ONNX Runtime"


def entry(model: str, target: str, rps: list[float], p99: list[float], *, server: dict | None = None) -> dict:
    """One target as bench.summarise writes it (every field the report's tables read)."""
    t = TARGETS[target]
    reps = [{"rps": r, "p50_ms": p / 2, "p90_ms": p * 0.8, "p95_ms": p * 0.9, "p99_ms": p, "max_ms": p * 2,
             "latency_us": {"p50": p * 500, "p90": p * 800, "p95": p * 900, "p99": p * 1000, "p99.9": p * 1500, "max": p * 2000, "mean": p * 600, "count": 1000}}
            for r, p in zip(rps, p99)]
    p = median(p99)
    return {
        "model": model, "target": target, "stack": t.stack, "via_gateway": t.via_gateway, "front": t.front, "repetitions": reps,
        "requests": 3000, "failures": 0,
        "median": {"rps": median(rps), "p50_ms": p / 2, "p90_ms": p * 0.8, "p95_ms": p * 0.9, "p99_ms": p, "p99.9_ms": p * 1.5, "max_ms": p * 2,
                   "latency_us": {"p50": p * 500, "p90": p * 800, "p99": p * 1000, "p99.9": p * 1500, "max": p * 2000, "mean": p * 600, "count": 1000}},
        "spread": {"rps": [min(rps), max(rps)], "p99_ms": [min(p99), max(p99)]}, "server": server or {"stack": {"cpu_ms_per_request": 1.0}, **({t.front: {"cpu_ms_per_request": 0.3}} if t.front else {})},
    }


def three(x: float) -> list[float]:
    return [x * 0.99, x, x * 1.01]


def summary(*results: dict, impl: str = COMPAT, ort: str | None = ORT, **extra: object) -> dict:
    versions = {"python": "3.11.7", "torch": "2.13.0+cpu", "tensorflow": "2.21.0", **({"onnxruntime": ort} if ort else {})}
    return {
        "results": list(results), "ramp": [], "warnings": [], "locust_dir": "/nonexistent",
        "environment": {"tfserving_implementation": impl, "versions": versions, "machine": {"time": "t", "cpu_count": 2}},
        "stack": {"batch size": 8},
        "config": {"profile": "closed", "repetitions": 3, "users": 8, "warmup_s": 1, "duration_s": 4, "window_s": 5.0},
        **extra,
    }


def three_stacks(impl: str = COMPAT, *, gw_kserve: float = 460) -> dict:
    """Direct: TorchServe 1000, TF 1500, KServe 2000 req/s; via the gateway 500, 680 and `gw_kserve`.
    p99 direct 20, 12, 8 ms; via the gateway 25, 24, 23 ms. Three tight repetitions each."""
    s = summary(
        entry("m", "torchserve", three(1000), three(20)), entry("m", "tfserving", three(1500), three(12)), entry("m", "kserve", three(2000), three(8)),
        entry("m", "gateway-torchserve", three(500), three(25)), entry("m", "gateway-tfserving", three(680), three(24)), entry("m", "gateway-kserve", three(gw_kserve), three(23)),
        impl=impl,
    )
    s["ratios"] = bench.ratios(s["results"])
    return s


def by(rows: list[dict], pair: tuple[str, str], path: str) -> dict:
    (r,) = [r for r in rows if tuple(r["pair"]) == pair and r["path"] == path]
    return r


# --- the verdict -------------------------------------------------------------------------------------


def test_three_stacks_give_three_pairs_on_each_path() -> None:
    rows = runverdict.verdict(three_stacks())
    assert [(tuple(r["pair"]), r["path"]) for r in rows] == [
        (("torchserve", "tfserving"), "direct"), (("torchserve", "tfserving"), "via gateway"),
        (("torchserve", "kserve"), "direct"), (("torchserve", "kserve"), "via gateway"),
        (("tfserving", "kserve"), "direct"), (("tfserving", "kserve"), "via gateway"),
    ]
    ts_ks = by(rows, ("torchserve", "kserve"), "direct")
    assert ts_ks["throughput"]["faster"] == "kserve" and ts_ks["throughput"]["factor"] == pytest.approx(2.0)
    assert ts_ks["throughput"]["a_over_b"] == pytest.approx(0.5)
    assert ts_ks["throughput"]["torchserve"]["median"] == 1000 and ts_ks["throughput"]["kserve"]["median"] == 2000
    assert ts_ks["throughput"]["significant"] is True and ts_ks["throughput"]["chance"] == pytest.approx(0.1)
    assert ts_ks["p99"]["faster"] == "kserve" and ts_ks["p99"]["factor"] == pytest.approx(2.5)
    assert ts_ks["names"] == {"torchserve": "TorchServe", "kserve": KS}
    tf_ks = by(rows, ("tfserving", "kserve"), "direct")
    assert tf_ks["throughput"]["faster"] == "kserve" and tf_ks["throughput"]["a_over_b"] == pytest.approx(0.75)
    assert tf_ks["names"] == {"tfserving": "the TF-Serving-compatible server", "kserve": KS}
    ts_tf = by(rows, ("torchserve", "tfserving"), "direct")
    assert ts_tf["throughput"]["faster"] == "tfserving" and ts_tf["throughput"]["a_over_b"] == pytest.approx(1000 / 1500)
    via = by(rows, ("tfserving", "kserve"), "via gateway")
    assert via["throughput"]["faster"] == "tfserving" and via["throughput"]["factor"] == pytest.approx(680 / 460)


def test_each_pair_is_worded_with_what_ran() -> None:
    md = runverdict.markdown_block(three_stacks())
    assert "**m** — TorchServe against the TF-Serving-compatible server" in md
    assert f"**m** — TorchServe against {KS}" in md
    assert f"**m** — the TF-Serving-compatible server against {KS}" in md
    assert f"direct · throughput: **{KS}** faster, 2.00× (TorchServe 1000 [990–1010] vs {KS} 2000 [1980–2020] req/s)" in md
    assert f"direct · throughput: **{KS}** faster, 1.33× (TF-compat 1500 [1485–1515] vs {KS} 2000 [1980–2020] req/s)" in md
    assert "**TensorFlow Serving**" not in md and "TF Serving " not in md  # the compatible server never under TF Serving's name
    assert f"KServe side: {KS} (KServe's Python model server running the model's ONNX export, onnxruntime {ORT})." in md
    assert md.count("TF side: " + COMPAT) == 1
    real = runverdict.markdown_block(three_stacks(REAL_TF))
    assert f"**m** — TensorFlow Serving against {KS}" in real and f"(TF Serving 1500 [1485–1515] vs {KS} 2000" in real
    page = runverdict.html_block(three_stacks())
    assert f"<strong>m</strong> — the TF-Serving-compatible server against {KS}" in page and "**" not in page
    assert page.count("<ul>") == 3  # one list per pair


def test_a_gateway_flag_is_judged_per_pair() -> None:
    """Via the gateway KServe's 2× lead over TorchServe shrinks to 1.0: that pair measured the gateway;
    TorchServe against the TF side kept enough of its difference (0.74 via against 0.67 direct), and
    so did the TF side against KServe (1.36 via against 0.75 direct: reversed, not compressed)."""
    rows = runverdict.verdict(three_stacks(gw_kserve=500))
    g = by(rows, ("torchserve", "kserve"), "via gateway")["gateway"]
    assert g["flag"] is True and g["direct_ratio"] == pytest.approx(0.5) and g["gateway_ratio"] == pytest.approx(1.0)
    assert g["why"].startswith("TorchServe/KServe throughput 1.00 via the gateway against 0.50 direct")
    assert "in front of KServe + ONNX Runtime" in g["evidence"] and "in front of TorchServe" in g["evidence"]
    assert by(rows, ("torchserve", "tfserving"), "via gateway")["gateway"]["flag"] is False
    tf_ks = by(rows, ("tfserving", "kserve"), "via gateway")["gateway"]
    assert tf_ks["flag"] is False and tf_ks["why"].startswith("TF/KServe throughput 1.36 via the gateway against 0.75 direct")
    md = runverdict.markdown_block(three_stacks(gw_kserve=500))
    assert md.count("measured the gateway, not the stacks") == 1
    block = md.split(f"**m** — TorchServe against {KS}")[1].split("\n\n")[0]
    assert "⚠ via gateway: **measured the gateway, not the stacks** (TorchServe/KServe throughput 1.00" in block


def test_any_subset_of_the_stacks() -> None:
    s = summary(entry("m", "torchserve", three(1000), three(20)), entry("m", "kserve", three(900), three(21)))
    (r,) = runverdict.verdict(s)
    assert r["pair"] == ["torchserve", "kserve"] and r["throughput"]["faster"] == "torchserve"
    md = runverdict.markdown_block(s)
    assert "TF side" not in md and "KServe side" in md and f"**m** — TorchServe against {KS}" in md
    s = summary(entry("m", "tfserving", three(1000), three(20)), entry("m", "kserve", three(900), three(21)), ort=None)
    (r,) = runverdict.verdict(s)
    assert r["pair"] == ["tfserving", "kserve"]
    md = runverdict.markdown_block(s)
    assert "TF side: " + COMPAT in md and f"KServe side: {KS} (KServe's Python model server running the model's ONNX export)." in md
    assert runverdict.verdict(summary(entry("m", "kserve", three(1), three(1)))) == []
    assert "no verdict" in runverdict.markdown_block(summary(entry("m", "kserve", three(1), three(1))))


TWO_STACK = """## Verdict

TF side: twinserve TF-Serving-compatible server (twinserve-tf-compat/2.21.0), NOT TensorFlow Serving. Rule: a difference is beyond noise when the min–max ranges of at least 3 repetitions per side do not overlap (the chance of that with no real difference is shown); fewer than 3 repetitions: no claim. Figures: median [min–max] over repetitions; factor: the ratio of the medians.

**m** — TorchServe against the TF-Serving-compatible server
- direct · throughput: **the TF-Serving-compatible server** faster, 1.32× (TorchServe 760 [752–768] vs TF-compat 1000 [990–1010] req/s) — beyond noise: the 3 + 3 repetitions' ranges do not overlap (chance 10.0% if equal)
- direct · p99: **the TF-Serving-compatible server** lower, 1.62× (TorchServe 21.0 [20.0–22.0] vs TF-compat 13.0 [12.0–14.0] ms) — beyond noise: the 3 + 3 repetitions' ranges do not overlap (chance 10.0% if equal)
- via gateway · throughput: no difference (TorchServe 580 [574–586] vs TF-compat 580 [574–586] req/s) — within noise: the 3 + 3 repetitions' ranges overlap
- via gateway · p99: no difference (TorchServe 25.0 [24.0–26.0] vs TF-compat 25.0 [24.0–26.0] ms) — within noise: the 3 + 3 repetitions' ranges overlap
- ⚠ via gateway: **measured the gateway, not the stacks** (TorchServe/TF throughput 1.00 via the gateway against 0.76 direct; the gateway spent 0.95 ms CPU per request in front of TorchServe (the stack itself: 1.50 ms direct), 0.55 of a core; 0.95 ms CPU per request in front of the TF-Serving-compatible server (the stack itself: 0.70 ms direct), 0.55 of a core — more than the TF-Serving-compatible server per request: the gateway is the costlier hop). Compare the stacks on the direct path.
"""


def test_a_two_stack_run_renders_exactly_the_two_stack_verdict() -> None:
    """The text the verdict wrote before KServe existed (tests/test_verdict_diff.py's gateway run),
    character for character; its rows carry the pair and the generic ratio."""
    gw = {"stack": {"cpu_ms_per_request": 0.7}, "gateway": {"cpu_ms_per_request": 0.95}}
    s = summary(
        entry("m", "torchserve", three(760), [20, 21, 22], server={"stack": {"cpu_ms_per_request": 1.5}}),
        entry("m", "tfserving", three(1000), [12, 13, 14], server={"stack": {"cpu_ms_per_request": 0.7}}),
        entry("m", "gateway-torchserve", three(580), [24, 25, 26], server=gw), entry("m", "gateway-tfserving", three(580), [24, 25, 26], server=gw),
        ort=ORT,  # onnxruntime installed, KServe not run: nothing about it
    )
    assert runverdict.markdown_block(s) == TWO_STACK
    rows = runverdict.verdict(s)
    assert [(tuple(r["pair"]), r["path"]) for r in rows] == [(("torchserve", "tfserving"), "direct"), (("torchserve", "tfserving"), "via gateway")]
    assert rows[0]["throughput"]["a_over_b"] == pytest.approx(0.76) and "ts_over_tf" not in rows[0]["throughput"]
    assert rows[0]["stable"] == {"torchserve": None, "tfserving": None} and rows[0]["tf_label"] == "the TF-Serving-compatible server"


# --- a sweep run with three stacks -------------------------------------------------------------------


def sweep_of(target: str, rps: list[float], gateway_cores: list[float] | None = None, users: tuple[int, ...] = (1, 2, 4, 8)) -> dict:
    points = []
    for i, (u, r) in enumerate(zip(users, rps)):
        comps = {"stack": {"cores": 0.6, "machine_share": 0.3}}
        neck = {"saturated": None, "why": "nothing saturated"}
        if gateway_cores is not None:
            comps["gateway"] = {"cores": gateway_cores[i], "machine_share": gateway_cores[i] / 2}
            if gateway_cores[i] >= 0.9:
                neck = {"saturated": "gateway", "why": f"the gateway (one process) used {gateway_cores[i]:.2f} of a core"}
        points.append({"users": u, "rps": r, "p50_ms": 1000 * u / r / 2, "p99_ms": 2000 * u / r, "failures": 0,
                       "latency_us": {"p50": 500_000 * u / r, "p99": 2_000_000 * u / r, "count": 100}, "bottleneck": {"components": comps, **neck}})
    knee = {"index": len(points) - 1, "load": points[-1]["users"], "rps": points[-1]["rps"], "p50_ms": 1.0, "p99_ms": 2.0, "efficiency_after": None, "reached": False}
    return {"model": "m", "target": target, "kind": "concurrency (closed loop)", "load_key": "users", "slo_p99_ms": 50.0, "points": points,
            "stopped": "last step reached", "knee": knee, "via_gateway": target.startswith("gateway-"), "bottleneck": points[-1]["bottleneck"]}


def test_a_three_stack_sweep_compares_each_pair_at_its_own_highest_common_step() -> None:
    s = {"results": [], "config": {"profile": "sweep"}, "environment": {"tfserving_implementation": COMPAT, "versions": {"onnxruntime": ORT}}, "sweep": [
        sweep_of("torchserve", [100, 190, 360, 700]), sweep_of("tfserving", [120, 230, 450, 880]), sweep_of("kserve", [150, 280], users=(1, 2)),  # KServe stopped at 2
        sweep_of("gateway-torchserve", [80, 150, 290, 500], [0.2, 0.4, 0.7, 0.8]), sweep_of("gateway-tfserving", [90, 170, 330, 560], [0.2, 0.4, 0.7, 0.8]),
        sweep_of("gateway-kserve", [95, 160], [0.5, 0.95], users=(1, 2)),
    ]}
    rows = runverdict.verdict(s)
    assert by(rows, ("torchserve", "tfserving"), "direct")["sweep"]["load"] == 8  # not held down by KServe's shorter sweep
    ts_ks = by(rows, ("torchserve", "kserve"), "direct")
    assert ts_ks["sweep"]["load"] == 2 and ts_ks["throughput"]["faster"] == "kserve" and ts_ks["throughput"]["factor"] == pytest.approx(280 / 190)
    assert ts_ks["throughput"]["significant"] is None and "one run per sweep step" in ts_ks["throughput"]["claim"]
    g = by(rows, ("tfserving", "kserve"), "via gateway")["gateway"]
    assert g["flag"] is True and g["saturated"] == ["kserve"] and f"in front of {KS} at 2 users" in g["why"]
    assert by(rows, ("torchserve", "tfserving"), "via gateway")["gateway"]["flag"] is False
    md = runverdict.markdown_block(s)
    assert f"direct · knee: TorchServe not reached: throughput still scaled up to the last step (8 users: 700.0 req/s); {KS} not reached" in md
    assert f"(TF-compat 230 vs {KS} 280 req/s)" in md
    assert "every sweep of the pair ran" in md and "every sweep of the model ran" not in md


# --- ratios ------------------------------------------------------------------------------------------


def test_ratios_for_each_pair_present() -> None:
    got = {(r["a"], r["b"], r["path"]): r for r in three_stacks()["ratios"]}
    assert set(got) == {(a, b, p) for a, b in runverdict.PAIRS for p in ("direct", "via gateway")}
    assert got[("torchserve", "kserve", "direct")]["rps_ratio"] == pytest.approx(0.5)
    assert got[("torchserve", "kserve", "direct")]["p99_ratio"] == pytest.approx(2.5)
    assert got[("tfserving", "kserve", "direct")]["rps_ratio"] == pytest.approx(0.75)
    assert got[("tfserving", "kserve", "via gateway")]["rps_ratio"] == pytest.approx(round(680 / 460, 3))
    assert got[("torchserve", "tfserving", "direct")]["rps_ratio"] == pytest.approx(round(1000 / 1500, 3))
    two = bench.ratios([e for e in three_stacks()["results"] if e["stack"] != "kserve"])
    assert [(r["a"], r["b"], r["path"]) for r in two] == [("torchserve", "tfserving", "direct"), ("torchserve", "tfserving", "via gateway")]
    direct_only = bench.ratios([e for e in three_stacks()["results"] if not e["via_gateway"]])
    assert {r["path"] for r in direct_only} == {"direct"} and len(direct_only) == 3


def test_framework_ratios_for_each_pair_measured_both_ways() -> None:
    results = three_stacks()["results"]
    got = {(r["a"], r["b"]): r for r in overhead.framework_ratios(results, "m")}
    assert set(got) == set(runverdict.PAIRS)
    assert got[("torchserve", "kserve")]["direct"] == pytest.approx(0.5)
    assert got[("torchserve", "kserve")]["via_gateway"] == pytest.approx(round(500 / 460, 3))
    assert got[("torchserve", "kserve")]["gateway_vs_direct"] == pytest.approx(round(round(500 / 460, 3) / 0.5, 3))
    assert overhead.framework_ratio(results, "m") == got[("torchserve", "tfserving")]  # the two-stack call is unchanged
    assert overhead.framework_ratios([e for e in results if e["target"] != "gateway-kserve"], "m") == [got[("torchserve", "tfserving")]]


# --- the report ----------------------------------------------------------------------------------------


def full_run() -> dict:
    """Three stacks with references and the overhead section (KServe had no in-process figure)."""
    s = three_stacks()
    for front in ("nginx", "floor"):
        for stack, rps in (("torchserve", 900), ("tfserving", 1300), ("kserve", 1700)):
            s["results"].append(entry("m", f"{front}-{stack}", three(rps), three(15), server={"stack": {"cpu_ms_per_request": 1.0}, front: {"cpu_ms_per_request": 0.2}}))
    s["ratios"] = bench.ratios(s["results"])
    saturation = overhead.saturation_summary(s["results"], "m", 1)
    inprocess = {"torchserve": {"framework": "PyTorch", "batch": 8, "rows_per_s": 9000.0}, "tfserving": {"framework": "TensorFlow", "batch": 8, "rows_per_s": 12000.0}}
    s["overhead"] = {"m": {
        "saturation": saturation, "framework_ratio": overhead.framework_ratio(s["results"], "m"),
        "added_latency": {st: {"added_p50_ms": 0.5, "added_p99_ms": 1.0} for st in saturation}, "inprocess": inprocess,
        "served_to_inprocess": overhead.served_ratio(saturation, inprocess),
    }}
    s["environment"]["reference_proxies"] = {"nginx": {"implementation": "nginx 1.22"}, "floor": {"implementation": "floorproxy"}}
    return s


def test_the_report_has_the_kserve_rows_and_a_table_per_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bars: list[tuple[str, str | None]] = []
    bar = matplotlib.axes.Axes.bar

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        bars.append((kwargs.get("label"), kwargs.get("color")))
        return bar(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "bar", spy)
    s = full_run()
    report.write(copy.deepcopy(s), tmp_path)
    md = (tmp_path / "report.md").read_text()
    for target in ("kserve", "gateway-kserve", "nginx-kserve", "floor-kserve"):
        assert f"| m | {target} | " in md, target
    assert "## TorchServe / TensorFlow ratios (same run) — the TF side: the TF-Serving-compatible server" in md
    assert f"## TorchServe / {KS} ratios (same run)" in md and f"## TensorFlow / {KS} ratios (same run)" in md
    assert f"| model | path | req/s ratio (TorchServe ÷ {KS}) | p50 ratio (TorchServe ÷ {KS}) | p99 ratio (TorchServe ÷ {KS}) |" in md
    assert f"| model | path | req/s ratio (TF-compat ÷ {KS}) |" in md and "| model | path | req/s ratio (TorchServe ÷ TF-compat) |" in md
    ks_table = md.split(f"## TorchServe / {KS} ratios (same run)")[1].split("## ")[0]
    assert "| m | direct | 0.500 |" in ks_table and "| m | via gateway | 1.087 |" in ks_table
    framework = md.split("## Throughput ratios between stacks through the gateway against direct — m")[1].split("## ")[0]
    assert f"| m | TorchServe ÷ {KS} | 0.500 | 1.087 | 2.174 |" in framework and f"| m | TF-compat ÷ {KS} | 0.750 |" in framework
    assert "| m | TorchServe ÷ TF-compat | 0.667 |" in framework
    gateway = md.split("## Gateway overhead and framework ceiling — m")[1].split("## ")[0]
    assert "| m | kserve | 2000 | 460 |" in gateway and "not measured" in gateway  # no in-process figure for KServe: a cell, not a KeyError
    assert "| m | kserve | 2000 | 460 | 1700 | 1700 |" in md  # beside nginx and the floor
    assert f"| onnxruntime | {ORT} |" in md and f"| kserve side | {KS} (KServe's Python model server, onnxruntime {ORT}) |" in md
    assert f"The KServe rows ran **{KS}**" in md and "The TensorFlow side ran on" in md
    assert md.index("## Verdict") < md.index("## Caveats") and f"**m** — TorchServe against {KS}" in md
    page = (tmp_path / "report.html").read_text()
    assert "<td>gateway-kserve</td>" in page and f"<th>req/s ratio (TF-compat ÷ {KS})</th>" in page
    assert f"<h2>TorchServe / {KS} ratios (same run)</h2>" in page and "KServe side" in page
    colours = dict(bars)
    assert {t: colours.get(t) for t in ("kserve", "gateway-kserve", "nginx-kserve", "floor-kserve")} == {t: report.COLOURS[t] for t in ("kserve", "gateway-kserve", "nginx-kserve", "floor-kserve")}
    assert len(set(report.COLOURS.values())) == len(report.COLOURS)  # every target its own colour
    assert (tmp_path / "latency_m.png").stat().st_size > 10_000


def test_a_two_stack_report_keeps_its_tables(tmp_path: Path) -> None:
    s = full_run()
    s["results"] = [r for r in s["results"] if r["stack"] != "kserve"]
    s["ratios"] = bench.ratios(s["results"])
    s["overhead"]["m"]["saturation"].pop("kserve")
    s["environment"]["versions"].pop("onnxruntime")
    report.write(s, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "kserve" not in md.lower() and KS not in md
    assert "## TorchServe / TensorFlow ratios (same run)" in md and md.count("ratios (same run)") == 1
    assert md.count("| m | TorchServe ÷ TF-compat |") == 1
    older = copy.deepcopy(s)  # an older summary: ratio rows without their pair, one framework_ratio
    for r in older["ratios"]:
        del r["a"], r["b"]
    older["overhead"]["m"]["framework_ratio"] = {"direct": 0.667, "via_gateway": 0.833, "gateway_vs_direct": 1.249}
    heads, _ = next((h, rows) for t, h, rows in report.sections(older) if t.startswith("TorchServe / TensorFlow ratios"))
    assert heads[2] == "req/s ratio (TorchServe ÷ TF-compat)"


# --- the diff --------------------------------------------------------------------------------------------


def test_the_diff_compares_the_kserve_targets_and_notes_a_different_runtime() -> None:
    a = three_stacks()
    b = three_stacks()
    for r in b["results"]:
        if r["target"] == "kserve":
            r["repetitions"] = [{**rep, "rps": rep["rps"] * 0.7} for rep in r["repetitions"]]
    b["environment"]["versions"]["onnxruntime"] = "1.24.0"
    rows = rundiff.diff(a, b, {"rps": 10})
    get = {(r["target"], r["metric"]): r for r in rows}
    assert {t for t, _ in get} == {"torchserve", "tfserving", "kserve", "gateway-torchserve", "gateway-tfserving", "gateway-kserve"}
    assert get[("kserve", "rps")]["status"] == "regressed" and get[("kserve", "rps")]["change_pct"] == pytest.approx(-30)
    assert [r["target"] for r in rundiff.failures(rows)] == ["kserve"]
    assert get[("gateway-kserve", "p99")]["status"] == "within noise"
    notes = " ".join(rundiff.notes(a, b))
    assert f"the {KS} side differs: A ran onnxruntime {ORT}; B ran 1.24.0" in notes
    assert not rundiff.notes(a, three_stacks())
    b["results"] = [r for r in b["results"] if r["stack"] != "kserve"]
    assert "onnxruntime" not in " ".join(rundiff.notes(a, b))  # no KServe in B: no runtime to compare
    assert {r["status"] for r in rundiff.diff(a, b) if r["target"].endswith("kserve")} == {"only in A"}
