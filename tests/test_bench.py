"""A short real bench against the real stack: the report agrees with locust's own output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from conftest import bench_and_report
from gatewayutil import answering_backend

from loadtests import bench, overhead
from loadtests.targets import COMPARISON, with_references
from twinserve.measure import needed_services
from twinserve.supervisor import Supervisor, free_port, group_members


@pytest.fixture(scope="module")
def short_bench(stack, urls: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("report")
    cfg = bench.BenchConfig(
        models=["tabular"], targets=list(COMPARISON), urls={k: urls[k] for k in ("torchserve", "tfserving", "kserve", "gateway")},
        out=out, users=4, spawn_rate=4, duration_s=3, warmup_s=1, repetitions=2,
    )
    return bench_and_report(cfg, stack), out


def expand(response_times: dict) -> list[int]:
    values: list[int] = []
    for ms, count in response_times.items():
        values += [int(float(ms))] * count
    return sorted(values)


def test_report_figures_agree_with_locust_json(short_bench: tuple[dict, Path]) -> None:
    summary, out = short_bench
    assert [r["target"] for r in summary["results"]] == COMPARISON
    for result in summary["results"]:
        total = 0
        for rep_index, rep in enumerate(result["repetitions"], start=1):
            entries = json.loads((out / "locust" / f"tabular_{result['target']}_rep{rep_index}.json").read_text())
            (entry,) = entries
            assert rep["requests"] == entry["num_requests"] > 0
            assert rep["failures"] == entry["num_failures"] == 0
            values = expand(entry["response_times"])
            assert len(values) == entry["num_requests"]
            # locust's own figures, kept as the cross-check (its percentile definition, computed
            # independently from the full histogram: the value at rank floor(n * q) of the sorted times)
            for key, q in (("p50_ms", 0.50), ("p90_ms", 0.90), ("p99_ms", 0.99)):
                rank = min(len(values) - 1, int(q * len(values)))
                assert rep["locust_ms"][key] == values[rank], (key, rep["locust_ms"][key], values[rank])
            # the reported latency is the µs HDR figures of the very same requests, and agrees with
            # locust's within its rounding (tests/test_measurement.py holds it against exact percentiles)
            # (locust also counts what completed while its users stopped, which is not measured)
            assert rep["latency_us"]["count"] + rep["after_stop"] == entry["num_requests"]
            assert 0 <= rep["after_stop"] <= 2 * 4  # its 4 users' last requests, at most 2 each
            assert rep["latency_check"] == [], rep["latency_check"]
            for key in ("p50", "p90", "p95", "p99"):
                assert rep[f"{key}_ms"] == rep["latency_us"][key] / 1000
            assert rep["max_ms"] <= entry["max_response_time"] + 0.001
            assert rep["rps"] == pytest.approx(entry["num_requests"] / (entry["last_request_timestamp"] - entry["start_time"]), rel=1e-3)
            total += entry["num_requests"]
        assert result["requests"] == total
        assert result["median"]["rps"] > 0
        assert result["server"]["stack"]["cpu_ms_per_request"] > 0
        if result["target"].startswith("gateway"):
            assert result["server"]["gateway"]["cpu_ms_per_request"] > 0
    assert {r["path"] for r in summary["ratios"]} == {"direct", "via gateway"}


def test_measured_window_is_the_duration_asked_for(short_bench: tuple[dict, Path]) -> None:
    """Each run counts `duration_s` of requests, as recorded in summary.json, not the shorter span
    locust's `-t` gave (it fired early by the locustfile's import time: 1.7-1.9 s of a 4 s run)."""
    summary, out = short_bench
    asked = summary["config"]["duration_s"]
    for result in summary["results"]:
        assert result["window_s"]["asked"] == asked
        for rep_index, rep in enumerate(result["repetitions"], start=1):
            assert 0.85 * asked <= rep["window_s"] <= asked + 1.0, (result["target"], rep["window_s"])
            (entry,) = json.loads((out / "locust" / f"tabular_{result['target']}_rep{rep_index}.json").read_text())
            assert rep["window_start"] == pytest.approx(entry["start_time"], abs=1e-3)
            assert rep["window_end"] == pytest.approx(entry["last_request_timestamp"], abs=1e-3)
    (warmup,) = json.loads((out / "locust" / "warmup" / "tabular_tfserving.json").read_text())
    assert warmup["last_request_timestamp"] - warmup["start_time"] >= 0.85 * summary["config"]["warmup_s"]
    assert f"Each measured run asked for {asked} s of load" in (out / "report.md").read_text()
    for result in summary["results"]:  # a fixed 3 s run is shorter than 3 windows of 5 s: not judged
        assert result["stable"] is None
        assert all(rep["stability"]["stable"] is None and rep["stability"]["mode"] == "fixed" for rep in result["repetitions"])
    assert not [w for w in summary["warnings"] if "counted" in w and "not the" in w]


def test_report_files_hold_tables_and_charts(short_bench: tuple[dict, Path]) -> None:
    summary, out = short_bench
    md = (out / "report.md").read_text()
    assert "## Results (median over repetitions)" in md and "| tabular | gateway-tfserving |" in md
    assert "TorchServe / TensorFlow ratios" in md and "NOT TensorFlow Serving" in md
    assert md.index("## Verdict") < md.index("## Caveats")  # the conclusion comes first
    assert "**tabular**" in md.split("## Caveats")[0] and "no claim" in md.split("## Caveats")[0]  # two repetitions: no claim
    html = (out / "report.html").read_text()
    assert html.index("<h2>Verdict</h2>") < html.index("<h2>Caveats</h2>")
    assert "<table>" in html and html.count("<img") == len(summary["charts"]) >= 2
    for chart in summary["charts"]:
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "summary.json").read_text())
    assert saved["results"][0]["requests"] == summary["results"][0]["requests"]


def test_the_routed_gateway_starts_both_stacks_behind_it() -> None:
    """The `gateway` target's stack is "routed" (its policy picks a backend): it needs every stack, not a
    service called "routed", which left the gateway started with no backend."""
    assert needed_services(["gateway"]) == ["torchserve", "tfserving", "kserve", "gateway"]
    assert needed_services(["gateway-tfserving", "tfserving"]) == ["tfserving", "gateway"]
    assert needed_services(["gateway-kserve"]) == ["kserve", "gateway"]
    assert bench.TARGETS["gateway"].stacks == ("torchserve", "tfserving", "kserve")  # whose CPU the run is charged


def test_overhead_without_a_gateway_target_starts_the_gateway_and_skips_what_does_not_answer(urls: dict) -> None:
    """`--overhead --targets tfserving`: the run gains the gateway row (so the gateway is started) and no
    stack it does not load; the added-latency probe skips, with its reason, a path that does not answer."""
    targets = with_references(["tfserving"])
    assert targets == ["tfserving", "gateway-tfserving", "nginx-tfserving", "floor-tfserving"]
    assert needed_services(targets) == ["tfserving", "gateway"]
    dead = f"http://127.0.0.1:{free_port()}"
    latency = overhead.added_latency({"tfserving": urls["tfserving"], "gateway": dead}, "tabular", ["tfserving"], requests=4)
    assert set(latency) == {"tfserving"}
    assert dead in latency["tfserving"]["skipped"] and "ConnectError" in latency["tfserving"]["skipped"]


def test_bench_refuses_what_does_not_answer_and_bad_options(tmp_path: Path) -> None:
    """A target nobody serves is one clear line before any load, not a run of connection failures or a
    traceback; `--duration 0` is refused by the parser instead of starting locust without a clock."""
    dead = f"http://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "twinserve.cli", "bench", "--targets", "tfserving", "--url", f"tfserving={dead}", "--models", "tabular", "--duration", "2", "--warmup", "0", "--repetitions", "1", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "nothing answers for tfserving" in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    proc = subprocess.run([*cmd, "--duration", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--duration" in proc.stderr


def test_wrong_answers_count_as_failures(tmp_path: Path) -> None:
    """A target that answers 200 with the wrong shape: every request must count as a failure."""
    with answering_backend(200, b'{"predictions": [[1.0]]}') as url:
        cmd = [sys.executable, "-m", "twinserve.cli", "bench", "--targets", "tfserving", "--url", f"tfserving={url}", "--models", "tabular", "--users", "2", "--duration", "2", "--warmup", "0", "--repetitions", "1", "--out", str(tmp_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (result,) = json.loads((tmp_path / "summary.json").read_text())["results"]
    assert result["requests"] > 0
    assert result["failures"] == result["requests"]
    assert any("probabilities per row" in reason for reason in result["failure_reasons"])
    assert sum(result["failure_reasons"].values()) == result["failures"]  # every failure has its reason


def proxy_processes(proxies: dict) -> list[str]:
    """This run's proxies found by command line, in case one left its group: the floor by its ports,
    the nginx master by its configuration file (workers retitle themselves; the group check finds them)."""
    marks = [f"--route={port}=" for port in proxies["floor"]["ports"]] + [proxies["nginx"]["config"]]
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["status"] != psutil.STATUS_ZOMBIE and any(m in cmd for m in marks):
            found.append(cmd)
    return found


def test_overhead_bench_reads_the_gateway_against_nginx_and_the_floor(stack, tmp_path: Path) -> None:
    """`bench --overhead` on the session's stack adds an nginx row and a bare-Python-proxy row, each with
    its own CPU figure, and neither proxy outlives the bench. Figures are printed, never asserted."""
    env = {**os.environ, **{f"TWINSERVE_{k.upper()}": str(v) for k, v in stack.model_dump().items()}}
    out = tmp_path / "report"
    cmd = [
        sys.executable, "-m", "twinserve.cli", "bench", "--overhead", "--targets", "tfserving", "--models", "tabular",
        "--users", "4", "--duration", "4", "--warmup", "0", "--repetitions", "1", "--out", str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "--overhead: also running gateway-tfserving" in proc.stdout  # no gateway target asked for: it is added
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["target"]: r for r in summary["results"]}
    assert set(rows) == {"tfserving", "gateway-tfserving", "nginx-tfserving", "floor-tfserving"}
    assert all(0.85 * 4 <= r["window_s"]["min"] for r in rows.values()), {t: r["window_s"] for t, r in rows.items()}
    assert set(summary["overhead"]["tabular"]["added_latency"]) == {"tfserving"}  # only the stack the run loaded
    for front in ("nginx", "floor"):
        row = rows[f"{front}-tfserving"]
        assert row["front"] == front
        assert row["requests"] > 0 and row["failures"] == 0, row["failure_reasons"]
        assert row["server"][front]["cpu_ms_per_request"] > 0
        assert row["server"]["stack"]["cpu_ms_per_request"] > 0
    sat = summary["overhead"]["tabular"]["saturation"]["tfserving"]
    for key in ("nginx_rps", "nginx_cpu_us_per_request", "floor_rps", "floor_cpu_us_per_request", "gateway_cpu_over_nginx", "gateway_to_direct"):
        assert sat[key] > 0, key
    assert "gateway CPU / nginx CPU" in proc.stdout
    assert "| tabular | nginx-tfserving |" in (out / "report.md").read_text()
    print(next(line for line in proc.stdout.splitlines() if "references:" in line))

    proxies = summary["environment"]["reference_proxies"]
    assert set(proxies) == {"nginx", "floor"}
    assert not group_members([p["pgid"] for p in proxies.values()])
    assert not proxy_processes(proxies)
    assert not set(proxies) & set(Supervisor(stack.run_dir).load())  # the state file forgot them too
