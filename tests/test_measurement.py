"""Measurements a performance engineer would trust (#15): µs latency from HDR histograms, checked
against exact percentiles of every request; the stability rule on synthetic windows; the report's
charts loaded in a real browser. No serving stack: a tiny threaded HTTP server plays the target."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gatewayutil import answering_backend

from loadtests import bench, stats
from loadtests.latency import PERCENTILES, Recorder, Window, to_us
from loadtests.stability import Rule, judge

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
RAWTIMES = Path(__file__).resolve().parent / "rawtimes.py"


def exact_percentile(values_us: np.ndarray, q: float) -> int:
    """HdrHistogram's definition, computed from the raw values: the value at 1-based rank round(q·n)
    (at least 1) of the sorted values."""
    rank = max(1, int(q / 100 * len(values_us) + 0.5))
    return int(np.sort(values_us)[rank - 1])


def assert_hdr_matches(latency_us: dict, times_ms: list[float]) -> None:
    """Each HDR percentile is the exact one to within the histogram's 3 significant digits: equal below
    2.048 ms (1 µs buckets), at most one bucket (< 1/1024 of the value) above it; max, min, mean exact."""
    values = np.array([to_us(t) for t in times_ms])
    assert latency_us["count"] == len(values)
    for key, q in PERCENTILES:
        exact = exact_percentile(values, q)
        assert 0 <= latency_us[key] - exact <= exact / 1024, (key, latency_us[key], exact)
    assert latency_us["max"] == values.max() and latency_us["min"] == values.min()
    assert latency_us["mean"] == pytest.approx(np.mean(times_ms) * 1000, abs=0.1)


def test_hdr_percentiles_equal_numpy_percentiles_of_every_recorded_time() -> None:
    """Known times (0.2–400 ms, long-tailed) through the recording path locust's request event uses,
    spread over two "workers" whose reports are merged at a "master", against numpy's percentiles."""
    rng = np.random.default_rng(15)
    times = np.concatenate([rng.lognormal(np.log(3.0), 0.6, 16_000), rng.uniform(0.2, 2.0, 3_000), rng.uniform(20, 400, 1_000)])
    rng.shuffle(times)
    assert len(times) == 20_000  # q·n is a whole number for every percentile: numpy's inverted CDF = nearest rank
    t0 = 1_000_000.0
    workers = [Recorder(1.0), Recorder(1.0)]
    master = Recorder(1.0)
    for w in (*workers, master):
        w.start(t0)
    workers[0].record(5.0, t0 - 0.1)  # before every user had spawned: not counted
    for i, ms in enumerate(times):
        workers[i % 2].record(float(ms), t0 + i / 4000)  # 5 one-second windows
        if i % 3000 == 2999:  # a stats report every so often, as locust's workers send them
            for j, w in enumerate(workers):
                master.merge(json.loads(json.dumps(w.take(t0 + i / 4000))), f"w{j}")
    for j, w in enumerate(workers):
        master.merge(w.take(t0 + 5), f"w{j}")
    latency = master.total().latency_us()
    values = np.array([to_us(t) for t in times])
    for key, q in PERCENTILES:
        # numpy's inverted CDF is the nearest rank when q·n is whole; a hair below q keeps 0.999·20000
        # from rounding up to 19980.000000000004 and so to the next rank
        exact = int(np.percentile(values, q * (1 - 1e-12), method="inverted_cdf"))
        assert 0 <= latency[key] - exact <= exact / 1024, (key, latency[key], exact)
    assert_hdr_matches(latency, times.tolist())
    assert master.complete(t0 + 5) == 5
    windows = [master.window_figures(k) for k in range(5)]
    assert [w["requests"] for w in windows] == [4000] * 5
    assert all(w["rps"] == 4000 for w in windows)
    for k, w in enumerate(windows):
        assert_p99 = exact_percentile(np.array([to_us(t) for t in times[k * 4000 : (k + 1) * 4000]]), 99.0)
        assert 0 <= w["p99_us"] - assert_p99 <= assert_p99 / 1024


def test_stability_rule_on_synthetic_windows() -> None:
    rule = Rule(windows=3, tolerance=0.10, window_s=5)

    def windows(*pairs: tuple[float, float | None]) -> list[dict]:
        return [{"rps": r, "p99_us": p} for r, p in pairs]

    steady = windows((500, 20_000), (1000, 10_000), (1040, 10_500), (960, 9_600))
    verdict = judge(steady, rule)
    assert verdict["stable"] is True  # only the last three count: the warming first window does not
    assert verdict["rps_deviation"] == pytest.approx(40 / 1000, abs=1e-4)
    assert verdict["p99_deviation"] == pytest.approx((10_500 - 10_033.33) / 10_033.33, abs=1e-4)
    assert judge(steady[:2], rule)["stable"] is False and "2 complete window(s), 3 needed" in judge(steady[:2], rule)["reason"]
    # throughput within ±10%, p99 not: unstable, and the reason names p99 only
    drifting = judge(windows((1000, 10_000), (1000, 10_000), (1000, 13_000)), rule)
    assert drifting["stable"] is False and "p99" in drifting["reason"] and "req/s" not in drifting["reason"]
    # exactly at the edge: +10% of the mean is still stable; just past it is not
    edge = windows((950, 10_000), (950, 10_000), (1100, 10_000))  # mean 1000: +10.0%
    assert judge(edge, rule)["stable"] is True
    assert judge(windows((940, 10_000), (940, 10_000), (1121, 10_000)), rule)["stable"] is False
    assert judge(windows((1000, 10_000), (0, None), (1000, 10_000)), rule)["stable"] is False  # a stalled window
    loose = Rule(windows=2, tolerance=0.5, window_s=1)
    assert judge(windows((1000, 10_000), (600, 14_000)), loose)["stable"] is True


def test_locusts_rounding_is_told_apart_from_a_real_disagreement() -> None:
    """The cross-check passes locust's own rounded figures for the same times and flags one that is off."""
    rng = np.random.default_rng(1)
    times = rng.lognormal(np.log(8.0), 0.5, 5_000).tolist()
    window = Window()
    rounded: dict[int, int] = {}
    for t in times:
        window.record(t)
        key = stats.bucket_response_time(t)
        rounded[key] = rounded.get(key, 0) + 1
    theirs = {f"{k}_ms": float(stats.calculate_response_time_percentile(rounded, len(times), q)) for k, q in stats.PERCENTILES.items()}
    assert stats.crosscheck(theirs, len(times), rounded, window) == []
    off = {**theirs, "p99_ms": theirs["p99_ms"] + 3}
    (problem,) = stats.crosscheck(off, len(times), rounded, window)
    assert problem.startswith("p99: locust")
    assert "request counts differ" in stats.crosscheck(theirs, len(times) + 100, rounded, window)[0]


def test_the_timeseries_drops_the_partial_first_and_last_seconds(tmp_path: Path) -> None:
    entry = {
        "name": "tabular", "num_requests": 30, "num_failures": 0, "total_response_time": 30.0, "max_response_time": 1, "min_response_time": 1,
        "start_time": 100.4, "last_request_timestamp": 103.6, "response_times": {"1": 30},
        "num_reqs_per_sec": {"100": 3, "101": 10, "102": 10, "103": 7},
    }
    (tmp_path / "run.json").write_text(json.dumps([entry]))
    assert stats.per_second(tmp_path / "run.json") == [(101, 10), (102, 10)]
    assert stats.significant(11.234) == "11.2" and stats.significant(0.8456) == "0.846" and stats.significant(1234.5) == "1234"


@pytest.fixture()
def target() -> str:
    """A correct `tabular` answer after a random 0.3–4 ms: times with sub-millisecond detail."""
    with answering_backend(200, b'{"predictions": [[0.25, 0.75]]}', delay=lambda: random.uniform(0.0003, 0.004)) as url:
        yield url


def run_locust(url: str, out: Path, *extra: str) -> tuple[list[dict], dict, list[float]]:
    """The project's locustfile with the raw-times helper beside it; returns locust's JSON entries, the
    HDR file and every raw time the recorders counted (all processes)."""
    env = {k: v for k, v in os.environ.items() if k != "LOCUST_SKIP_MONKEY_PATCH"}
    env.update(TWINSERVE_LOAD_MODEL="tabular", TWINSERVE_TEST_RAW_TIMES=str(out / "raw"))
    cmd = [
        sys.executable, "-m", "locust", "-f", f"{LOCUSTFILE},{RAWTIMES}", "TFServingDirect", "--headless", "-u", "4", "-r", "4",
        "-t", "60s", "--host", url, "--json-file", str(out / "run"), "--only-summary", "--stop-timeout", "3", "--loglevel", "WARNING",
        "--reset-stats", "--hdr-file", str(out / "run_hdr.json"), *extra,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = [t for f in sorted((out / "raw").glob("*.json")) for t in json.loads(f.read_text())]
    return json.loads((out / "run.json").read_text()), json.loads((out / "run_hdr.json").read_text()), raw


def test_a_locust_run_ends_once_stable_and_its_hdr_figures_are_those_of_every_request(target: str, tmp_path: Path) -> None:
    """Stability mode in one locust process: the run stops after the first 3 one-second windows that
    agree (loose tolerance here), and the µs percentiles are exact for every request it counted."""
    started = time.monotonic()
    (entry,), hdr, raw = run_locust(target, tmp_path, "--window", "1", "--stable-windows", "3", "--stable-tolerance", "0.5", "--stable-max-seconds", "20")
    assert time.monotonic() - started < 30
    assert hdr["mode"] == "stability" and hdr["ended"] == "stable" and hdr["stability"]["stable"] is True
    assert len(hdr["windows"]) == 3 and all(w["requests"] > 0 for w in hdr["windows"])
    assert 2.9 <= entry["last_request_timestamp"] - entry["start_time"] <= 4.0  # stopped right after window 3
    assert len(raw) == hdr["latency_us"]["count"] > 100
    assert 0 <= entry["num_requests"] - len(raw) <= 8  # locust also counts what its 4 users completed while stopping (at most 2 each)
    assert_hdr_matches(hdr["latency_us"], raw)
    fig = stats.figures(tmp_path / "run.json", tmp_path / "run_hdr.json")
    assert fig.latency_check == [], fig.latency_check
    assert fig.p99_ms == hdr["latency_us"]["p99"] / 1000 and fig.locust_ms["p99_ms"] == round(fig.locust_ms["p99_ms"])


def test_distributed_workers_send_their_histograms_to_the_master(target: str, tmp_path: Path) -> None:
    """`--processes 2`: each worker records its own requests and hands them over when the master closes a
    window and with its stats reports; the master's merged histogram holds every request of both,
    exactly, and the run stops right after the windows that settled it (not a 3 s stats report later)."""
    (entry,), hdr, raw = run_locust(target, tmp_path, "--processes", "2", "--window", "1", "--stable-tolerance", "0.5", "--stable-max-seconds", "20")
    assert len(list((tmp_path / "raw").glob("*.json"))) == 3  # the master (no requests) and two workers
    assert hdr["mode"] == "stability" and hdr["ended"] == "stable" and len(hdr["windows"]) == 3
    assert entry["last_request_timestamp"] - entry["start_time"] <= 4.0
    assert len(raw) == hdr["latency_us"]["count"] > 100
    assert 0 <= entry["num_requests"] - len(raw) <= max(8, 0.002 * len(raw))  # plus what completed while stopping
    assert_hdr_matches(hdr["latency_us"], raw)
    assert sum(w["requests"] for w in hdr["windows"]) >= 0.9 * len(raw)  # the stop came promptly after the last window


def test_bench_marks_a_run_that_never_settles_unstable_and_its_report_renders(target: str, tmp_path: Path) -> None:
    """`twinserve bench` in stability mode with an unreachable tolerance: the run ends at --max-duration,
    summary.json and the report mark the target unstable; the report's charts load in Chromium."""
    out = tmp_path / "report"
    cmd = [
        sys.executable, "-m", "twinserve.cli", "bench", "--targets", "tfserving", "--url", f"tfserving={target}", "--models", "tabular",
        "--users", "2", "--warmup", "0", "--repetitions", "1", "--window", "1", "--stable-tolerance", "0.0001", "--max-duration", "4", "--out", str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "250"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    (result,) = summary["results"]
    (rep,) = result["repetitions"]
    assert result["stable"] is False and rep["stability"]["stable"] is False and rep["stability"]["ended"] == "maximum time"
    assert len(rep["stability"]["windows"]) == 4 and rep["stability"]["rule"]["tolerance"] == 0.0001
    assert 3.9 <= rep["window_s"] <= 5.0 and result["window_s"]["asked"] is None
    assert set(rep["latency_us"]) == {"p50", "p90", "p95", "p99", "p99.9", "max", "min", "mean", "count"}
    assert rep["p99_ms"] == rep["latency_us"]["p99"] / 1000 and result["median"]["latency_us"]["p99"] == rep["latency_us"]["p99"]
    assert any("did not settle within 4 s" in w for w in summary["warnings"])
    assert "UNSTABLE" in proc.stdout and "µs" in proc.stdout
    md = (out / "report.md").read_text()
    assert "UNSTABLE" in md and "Latency in µs (HDR histograms" in md and "p99.9 ms" in md
    check_charts_load(out, summary["charts"])


def check_charts_load(out: Path, charts: list[str]) -> None:
    """Headless Chromium opens the report (a copy beside it with one inline script appended) and
    reports, once the page has loaded, every <img>'s natural width: each chart must have loaded."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("chromium is not installed (`make setup` installs it: loadtests/ensure-chromium.sh)")
    probe = (
        "<script>window.addEventListener('load',()=>{const p=document.createElement('pre');p.id='imgcheck';"
        "p.textContent=JSON.stringify([...document.images].map(i=>[i.getAttribute('src'),i.complete,i.naturalWidth]));"
        "document.body.appendChild(p);});</script>"
    )
    page = out / "report-check.html"
    page.write_text((out / "report.html").read_text().replace("</body>", probe + "</body>"))
    cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--allow-file-access-from-files", "--virtual-time-budget=5000", f"--user-data-dir={out / 'chromium'}", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = proc.stdout.split("<pre id=\"imgcheck\">", 1)[1].split("</pre>", 1)[0]
    images = json.loads(found.replace("&quot;", '"'))
    assert [src for src, _, _ in images] == charts and len(charts) >= 2
    assert all(complete and width > 0 for _, complete, width in images), images


def test_fixed_duration_cli_keeps_the_stability_options_apart() -> None:
    from twinserve.cli import build_parser

    args = build_parser().parse_args(["bench"])
    assert args.duration is None and (args.window, args.stable_windows, args.stable_tolerance, args.max_duration) == (5.0, 3, 0.10, 60)
    from twinserve.measure import DEMO

    assert build_parser().parse_args(["demo"]).duration == DEMO["duration"] <= 10  # the demo stays a fixed, short run
    cfg = bench.BenchConfig(models=["tabular"], targets=["tfserving"], urls={}, out=Path("x"), duration_s=None)
    assert cfg.rule == Rule(3, 0.10, 5.0)


def test_requests_completing_after_the_stop_are_not_measured() -> None:
    """The measured interval is [t0, stop]: what completes while locust stops its users is slowed by
    the stopping (an open-loop step's last requests reached 160 ms against 8-19 ms before it)."""
    rec = Recorder(5.0)
    rec.record(50.0, 99.0)  # before t0: the spawning ramp
    rec.start(100.0)
    rec.record(8.0, 101.0)
    rec.record(9.0, 104.0)
    rec.stop(105.0)
    rec.stop(106.0)  # the first stop holds
    rec.record(160.0, 105.5)  # completed while stopping
    total = rec.total().latency_us()
    assert total["count"] == 2 and total["max"] == 9000 and rec.after_stop == 1  # told to the cross-check with locust
