"""Figures from locust's own complete statistics (its JSON output), never from the periodic CSV snapshot."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

# Only locust's statistics are wanted here: importing locust otherwise monkey-patches the
# whole process for gevent. The locust subprocesses drop this variable (see bench.run_locust).
os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")
from locust.stats import calculate_response_time_percentile  # noqa: E402

PERCENTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}


@dataclass
class RunFigures:
    """One run's figures. The window is what locust actually counted: from its statistics' start
    (the first request, or the reset once every user had spawned) to the last request logged,
    both as Unix times; req/s is taken over it."""

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

    def as_dict(self) -> dict:
        return asdict(self)


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


def figures(json_path: Path) -> RunFigures:
    entries = json.loads(Path(json_path).read_text())
    if not entries:
        return RunFigures(0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    e = merge_entries(entries)
    n = e["num_requests"]
    times = {int(float(k)): v for k, v in e["response_times"].items()}
    end = e["last_request_timestamp"] or e["start_time"]
    seconds = max(1e-9, end - e["start_time"])
    pct = {k: float(calculate_response_time_percentile(times, n, p)) if n else 0.0 for k, p in PERCENTILES.items()}
    return RunFigures(
        requests=n,
        failures=e["num_failures"],
        window_s=round(seconds, 3),
        window_start=round(e["start_time"], 3),
        window_end=round(end, 3),
        rps=round(n / seconds, 2) if n else 0.0,
        mean_ms=round(e["total_response_time"] / n, 3) if n else 0.0,
        p50_ms=pct["p50"],
        p90_ms=pct["p90"],
        p95_ms=pct["p95"],
        p99_ms=pct["p99"],
        max_ms=round(e["max_response_time"] or 0.0, 3),
        min_ms=round(e["min_response_time"] or 0.0, 3),
    )


def per_second(json_path: Path) -> list[tuple[int, int]]:
    """(second, requests) for throughput over time."""
    entries = json.loads(Path(json_path).read_text())
    counts: dict[int, int] = {}
    for e in entries:
        for sec, n in e.get("num_reqs_per_sec", {}).items():
            counts[int(sec)] = counts.get(int(sec), 0) + n
    return sorted(counts.items())


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
