"""Two bench runs compared (`twinserve report diff A B`): per target and metric, the change and its noise band.

The noise band of a figure in one run is its half-range over that run's repetitions relative to
its median ((max − min) / 2 / median); a change's band is the sum of A's and B's. A latency known
only in locust's rounded milliseconds (no `latency_us`) has a band of at least half the rounding
step (1 ms below 100 ms, 10 ms below 1 s, 100 ms above), so one step of rounding is never a change. A change within
the band is "within noise" (the two runs' ranges around their medians touch or overlap); beyond
it, "improved" or "regressed" by the metric's direction (req/s up is better, latency down is
better). One repetition gives no spread (only the rounding floor): every larger change counts, which the
output says.

A regression fails (for CI) when the chosen metric regressed beyond its threshold AND beyond the
noise band. Every (model, target) present in both runs is compared, whichever stack serves it
(TorchServe, the TF side, KServe + ONNX Runtime; direct, via the gateway or a reference proxy);
targets present in only one run are listed, never failed. The notes say when a stack ran on
something else in B than in A: the TF side's implementation, KServe's ONNX Runtime version.

Metrics: rps, p50, p99 (µs figures from `latency_us` when present, else the `_ms` ones), and p99.9
when both runs recorded it. Older summaries (no per-repetition latency_us, a min–max `spread`)
read the same way as new ones.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from loadtests.verdict import KSERVE_LABEL, stacks_in, values

METRICS = {"rps": ("req/s", True), "p50": ("ms", False), "p99": ("ms", False), "p99.9": ("ms", False)}  # unit, higher is better
CONFIG_KEYS = ("profile", "users", "duration_s", "warmup_s", "repetitions", "instances", "processes", "rate")


class DiffInputError(Exception):
    """A run that cannot be read: a missing path, a folder without summary.json, not a summary."""


def load(path: str | Path) -> dict:
    """A summary.json, given as the file or the report folder holding it."""
    p = Path(path)
    file = p / "summary.json" if p.is_dir() else p
    if not file.exists():
        raise DiffInputError(f"{path}: {'no summary.json in this folder' if p.is_dir() else 'no such file or folder'}")
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DiffInputError(f"{file}: not readable as JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise DiffInputError(f"{file}: not a twinserve bench summary (no 'results' list)")
    return data


def resolution_ms(value_ms: float) -> float:
    """Locust's rounding of a response time: whole ms below 100 ms, 10 ms below 1 s, 100 ms above."""
    return 1.0 if value_ms < 100 else 10.0 if value_ms < 1000 else 100.0


def in_microseconds(entry: dict, metric: str) -> bool:
    """Whether every repetition carries the percentile in µs (`latency_us`), not locust's rounded ms."""
    reps = entry.get("repetitions") or []
    return bool(reps) and all(isinstance((r.get("latency_us") or {}).get(metric), (int, float)) and (r.get("latency_us") or {}).get("count", 1) for r in reps)


def band(vals: list[float], floor_ms: bool = False) -> float:
    """Half the range over the repetitions, in % of the median (0 with one repetition). With
    `floor_ms` (a latency locust rounded), never less than half of that rounding step: a change of
    one step is not a change."""
    med = statistics.median(vals)
    if not med:
        return 0.0
    half = (max(vals) - min(vals)) / 2 if len(vals) > 1 else 0.0
    if floor_ms:
        half = max(half, resolution_ms(med) / 2)
    return half / abs(med) * 100


def compare(a: dict, b: dict, metric: str, threshold: float | None) -> dict | None:
    va, vb = values(a, metric), values(b, metric)
    if not va or not vb:
        return None
    unit, higher_better = METRICS[metric]
    ma, mb = statistics.median(va), statistics.median(vb)
    change = (mb - ma) / ma * 100 if ma else float("inf") if mb else 0.0
    latency = metric != "rps"
    noise = band(va, latency and not in_microseconds(a, metric)) + band(vb, latency and not in_microseconds(b, metric))
    if abs(change) <= noise:
        status = "within noise"
    else:
        status = "improved" if (change > 0) == higher_better else "regressed"
    return {
        "metric": metric, "unit": unit, "a": ma, "b": mb, "change_pct": change, "noise_pct": noise,
        "n_a": len(a.get("repetitions") or va), "n_b": len(b.get("repetitions") or vb), "status": status,
        "threshold_pct": threshold, "fails": threshold is not None and status == "regressed" and abs(change) > threshold,
    }


def diff(a_summary: dict, b_summary: dict, thresholds: dict[str, float] | None = None) -> list[dict]:
    """Rows per (model, target) and metric, A's order first; a target in one run only is one row saying so.

    `thresholds`: metric → % beyond which a regression (also beyond the noise band) fails.
    """
    thresholds = thresholds or {}
    ia = {(r.get("model"), r.get("target")): r for r in a_summary.get("results") or []}
    ib = {(r.get("model"), r.get("target")): r for r in b_summary.get("results") or []}
    rows: list[dict] = []
    for key in dict.fromkeys([*ia, *ib]):
        model, target = key
        if key not in ib or key not in ia:
            rows.append({"model": model, "target": target, "metric": None, "status": "only in A" if key in ia else "only in B", "fails": False})
            continue
        for metric in METRICS:
            row = compare(ia[key], ib[key], metric, thresholds.get(metric))
            if row:
                rows.append({"model": model, "target": target, **row})
    return rows


def failures(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("fails")]


def notes(a_summary: dict, b_summary: dict) -> list[str]:
    """What differs between the two runs besides the figures: the TF backend, KServe's ONNX Runtime, the load asked for."""
    out = []
    impl = [(s.get("environment") or {}).get("tfserving_implementation") or "not recorded" for s in (a_summary, b_summary)]
    if impl[0] != impl[1]:
        out.append(f"the TF side differs: A ran {impl[0]}; B ran {impl[1]} — its rows compare two different servers")
    if all("kserve" in stacks_in(s) for s in (a_summary, b_summary)):
        ort = [((s.get("environment") or {}).get("versions") or {}).get("onnxruntime") or "not recorded" for s in (a_summary, b_summary)]
        if ort[0] != ort[1]:
            out.append(f"the {KSERVE_LABEL} side differs: A ran onnxruntime {ort[0]}; B ran {ort[1]} — its rows compare two runtimes")
    ca, cb = a_summary.get("config") or {}, b_summary.get("config") or {}
    changed = [f"{k} {ca.get(k)} → {cb.get(k)}" for k in CONFIG_KEYS if k in ca and k in cb and ca[k] != cb[k]]
    if changed:
        out.append("the load differs: " + ", ".join(changed))
    for name, s in (("A", a_summary), ("B", b_summary)):
        reps = (s.get("config") or {}).get("repetitions")
        if reps == 1:
            out.append(f"{name} has one repetition per target: no noise band from it")
    return out
