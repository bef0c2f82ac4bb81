"""Figures from locust's own complete statistics (its JSON output), never from the periodic CSV snapshot."""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Only locust's statistics are wanted here: importing locust otherwise monkey-patches the
# whole process for gevent. The locust subprocesses drop this variable (see bench.run_locust).
os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")
from locust.stats import bucket_response_time, calculate_response_time_percentile  # noqa: E402

from loadtests.latency import Window  # noqa: E402

PERCENTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99, "p99.9": 0.999}
COUNT_SLACK = 0.002  # request counts of locust and of the HDR histograms may differ by this share (distributed runs: a few requests around the reset)


@dataclass
class RunFigures:
    """One run's figures. The window is what locust actually counted: from its statistics' start
    (the first request, or the reset once every user had spawned) to the last request logged,
    both as Unix times; req/s is taken over it.

    Latency (`*_ms`, `latency_us`) comes from the HDR histograms of every request's exact time when
    the run recorded them (loadtests/latency.py), else from locust's rounded histogram; locust's own
    figures stay in `locust_ms` as a cross-check, and `latency_check` says where the two disagree
    beyond locust's rounding. `stability` holds the measurement windows and the verdict."""

    requests: int
    failures: int
    window_s: float
    window_start: float
    window_end: float
    rps: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    min_ms: float
    p999_ms: float = 0.0
    latency_us: dict | None = None
    locust_ms: dict = field(default_factory=dict)
    stability: dict | None = None
    latency_check: list[str] = field(default_factory=list)
    after_stop: int = 0  # requests locust counted that completed while it stopped: not in the HDR figures

    def as_dict(self) -> dict:
        out = asdict(self)
        out["p99.9_ms"] = out.pop("p999_ms")
        return out


def merge_entries(entries: list[dict]) -> dict:
    """Locust writes one entry per request name; sum them into one (as its Aggregated row does)."""
    if len(entries) == 1:
        return entries[0]
    times: dict[str, int] = {}
    for e in entries:
        for k, v in e["response_times"].items():
            times[k] = times.get(k, 0) + v
    return {
        "num_requests": sum(e["num_requests"] for e in entries),
        "num_failures": sum(e["num_failures"] for e in entries),
        "total_response_time": sum(e["total_response_time"] for e in entries),
        "max_response_time": max(e["max_response_time"] for e in entries),
        "min_response_time": min((e["min_response_time"] for e in entries if e["min_response_time"] is not None), default=0),
        "start_time": min(e["start_time"] for e in entries),
        "last_request_timestamp": max(e["last_request_timestamp"] or 0 for e in entries),
        "response_times": times,
        "num_reqs_per_sec": {},
    }


def figures(json_path: Path, hdr_path: Path | None = None) -> RunFigures:
    """A run's figures from locust's JSON, with µs latency from the run's HDR file when it has one."""
    entries = json.loads(Path(json_path).read_text())
    if not entries:
        return RunFigures(0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    e = merge_entries(entries)
    n = e["num_requests"]
    times = {int(float(k)): v for k, v in e["response_times"].items()}
    end = e["last_request_timestamp"] or e["start_time"]
    seconds = max(1e-9, end - e["start_time"])
    pct = {k: float(calculate_response_time_percentile(times, n, p)) if n else 0.0 for k, p in PERCENTILES.items()}
    own = {
        **{f"{k}_ms": v for k, v in pct.items()},
        "max_ms": round(e["max_response_time"] or 0.0, 3),
        "min_ms": round(e["min_response_time"] or 0.0, 3),
        "mean_ms": round(e["total_response_time"] / n, 3) if n else 0.0,
    }
    fig = RunFigures(
        requests=n,
        failures=e["num_failures"],
        window_s=round(seconds, 3),
        window_start=round(e["start_time"], 3),
        window_end=round(end, 3),
        rps=round(n / seconds, 2) if n else 0.0,
        mean_ms=own["mean_ms"],
        p50_ms=own["p50_ms"],
        p90_ms=own["p90_ms"],
        p95_ms=own["p95_ms"],
        p99_ms=own["p99_ms"],
        max_ms=own["max_ms"],
        min_ms=own["min_ms"],
        p999_ms=own["p99.9_ms"],
        locust_ms=own,
    )
    if hdr_path is not None and Path(hdr_path).exists():
        with_hdr(fig, json.loads(Path(hdr_path).read_text()), times)
    return fig


def with_hdr(fig: RunFigures, data: dict, locust_times: dict[int, int]) -> None:
    """The HDR figures in place of locust's rounded ones (in ms with µs digits), the stability
    windows and verdict, and the cross-check against locust's own histogram."""
    lat = data["latency_us"]
    fig.latency_us = lat
    fig.stability = {
        "mode": data["mode"], "ended": data["ended"], "rule": data["rule"], "windows": data["windows"],
        **data["stability"],
    }
    if not lat["count"]:
        return
    for key in ("p50", "p90", "p95", "p99"):
        setattr(fig, f"{key}_ms", lat[key] / 1000)
    fig.p999_ms = lat["p99.9"] / 1000
    fig.max_ms, fig.min_ms, fig.mean_ms = lat["max"] / 1000, lat["min"] / 1000, round(lat["mean"] / 1000, 4)
    fig.after_stop = data.get("after_stop", 0)
    fig.latency_check = crosscheck(fig.locust_ms, fig.requests, locust_times, Window.decode(data["hdr"]), fig.after_stop)


def crosscheck(locust_ms: dict, n_locust: int, locust_times: dict[int, int], total: Window, after_stop: int = 0) -> list[str]:
    """Where locust's percentiles and the HDR ones disagree beyond what locust's rounding explains.

    Locust reports the value at rank floor(n·q) (0-based) of its histogram, whose keys are response
    times rounded by `bucket_response_time` (whole ms below 100 ms, ...). So its figure must lie
    between the rounded HDR values at the neighbouring ranks (one rank either way, more when the
    two counted a few requests apart, as a distributed run can around the statistics' reset).

    Locust also counts the `after_stop` requests that completed while its users stopped, which the
    HDR histograms leave out (loadtests/latency.py `Recorder`): they may be anywhere in its order, so
    its figure may lie that many ranks lower, and, at a rank beyond the HDR's count, anywhere above."""
    out: list[str] = []
    n = total.count
    if abs(n + after_stop - n_locust) > max(2, COUNT_SLACK * n_locust):
        out.append(f"request counts differ: locust {n_locust}, HDR histograms {n} (+ {after_stop} completed while stopping)")
    if not n or not n_locust or not locust_times:
        return out
    hist = total.hist
    slack = 1 + abs(n + after_stop - n_locust)

    def at_rank(rank: int) -> int:  # the recorded value at 1-based rank `rank`
        rank = min(n, max(1, rank))
        return hist.get_value_at_percentile(100.0 * rank / n)

    for key, q in PERCENTILES.items():
        rank = int(n_locust * q) + 1
        lo = hist.get_lowest_equivalent_value(at_rank(rank - slack - after_stop))
        hi = hist.get_highest_equivalent_value(at_rank(rank + slack)) + 1
        lo_ms, hi_ms = bucket_response_time(lo / 1000), bucket_response_time(hi / 1000)
        if after_stop and rank + slack > n:
            hi_ms = math.inf  # a rank only the requests completed while stopping can fill
        theirs = locust_ms[f"{key}_ms"]
        if not lo_ms <= theirs <= hi_ms:
            out.append(f"{key}: locust {theirs:g} ms, HDR {hist.get_value_at_percentile(q * 100) / 1000:.3f} ms (locust's rounding allows {lo_ms:g}–{hi_ms:g} ms)")
    return out


def significant(ms: float | None, digits: int = 3) -> str:
    """A latency in ms to `digits` significant digits, never in exponent form (whole numbers keep
    all their digits): 11.2, 2.13, 0.845, 1234."""
    if ms is None or ms != ms:
        return ""
    if ms == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(ms))))
    return f"{ms:.{decimals}f}"


def per_second(json_path: Path) -> list[tuple[int, int]]:
    """(second, requests) for throughput over time: whole seconds only.

    Locust counts requests per wall-clock second; the counted window starts and ends inside a
    second, so its first and last seconds hold a fraction of a second's requests and plotted as a
    drop to near zero. Only the seconds lying wholly inside the window (locust's statistics' start
    to its last request) are kept."""
    entries = json.loads(Path(json_path).read_text())
    if not entries:
        return []
    start = min(e["start_time"] for e in entries)
    end = max(e["last_request_timestamp"] or 0 for e in entries)
    counts: dict[int, int] = {}
    for e in entries:
        for sec, n in e.get("num_reqs_per_sec", {}).items():
            counts[int(sec)] = counts.get(int(sec), 0) + n
    return sorted((sec, n) for sec, n in counts.items() if sec >= start and sec + 1 <= end)


def history(csv_path: Path) -> list[dict]:
    """Locust's aggregated history rows (current rps and rolling percentiles), for latency over time."""
    rows = []
    try:
        with open(csv_path) as fh:
            for row in csv.DictReader(fh):
                if row.get("Name") == "Aggregated" and row.get("99%") not in (None, "N/A"):
                    rows.append({"t": int(row["Timestamp"]), "users": int(row["User Count"]), "rps": float(row["Requests/s"]), "p50": float(row["50%"]), "p99": float(row["99%"])})
    except FileNotFoundError:
        pass
    return rows


NO_ANSWER = "no answer (connection error or client timeout)"


def failure_reasons(json_path: Path) -> dict[str, int]:
    """Failures by reason, from locust's complete JSON: the locustfile files each kind of failure
    under its own name ("tabular [HTTP 503 backend_unavailable (backend tfserving)]"); failures left
    under the plain name had no HTTP answer at all. (The failures CSV can undercount.)"""
    out: dict[str, int] = {}
    try:
        entries = json.loads(Path(json_path).read_text())
    except (OSError, ValueError):
        return out
    for e in entries:
        if not e["num_failures"]:
            continue
        reason = e["name"].partition(" [")[2].rstrip("]") or NO_ANSWER
        out[reason] = out.get(reason, 0) + e["num_failures"]
    return out
