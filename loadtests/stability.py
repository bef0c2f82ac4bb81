"""When a run has settled: the stability rule over measurement windows (after Triton's perf_analyzer).

A run is measured in windows (default 5 s). It is **stable** when the last N windows (default 3)
agree: their throughput and their p99 each lie within ±tolerance (default 10%) of those N windows'
mean. `twinserve bench` without `--duration` ends a run as soon as that holds, or at a maximum
time, and a run that reached the maximum without settling is marked unstable. With a fixed
`--duration` the same rule is applied to the run's last windows, for information; a fixed run
shorter than N windows is not judged (`stable` is None).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Rule:
    windows: int = 3
    tolerance: float = 0.10
    window_s: float = 5.0

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return f"the last {self.windows} windows of {self.window_s:g} s agree: req/s and p99 each within ±{self.tolerance:.0%} of their mean"


def deviation(values: list[float]) -> float | None:
    """The largest distance of a value from the mean, relative to the mean (None when the mean is 0)."""
    mean = sum(values) / len(values)
    return max(abs(v - mean) for v in values) / mean if mean > 0 else None


def judge(windows: list[dict], rule: Rule) -> dict:
    """The rule on complete windows (dicts with "rps" and "p99_us", oldest first).

    Returns {"stable": bool, "reason": str, "rps_deviation", "p99_deviation"} (deviations over the
    last N windows, as fractions of their mean). A window without requests is never stable."""
    last = windows[-rule.windows :]
    if len(last) < rule.windows:
        return {"stable": False, "reason": f"{len(windows)} complete window(s), {rule.windows} needed", "rps_deviation": None, "p99_deviation": None}
    if any(not w["rps"] or w["p99_us"] is None for w in last):
        return {"stable": False, "reason": "a window without requests", "rps_deviation": None, "p99_deviation": None}
    rps = deviation([w["rps"] for w in last])
    p99 = deviation([w["p99_us"] for w in last])
    out = {"rps_deviation": None if rps is None else round(rps, 4), "p99_deviation": None if p99 is None else round(p99, 4)}
    off = [f"{name} ±{dev:.1%}" for name, dev in (("req/s", rps), ("p99", p99)) if dev is None or dev > rule.tolerance]
    if off:
        return {"stable": False, "reason": f"last {rule.windows} windows: {', '.join(off)} of their mean (allowed ±{rule.tolerance:.0%})", **out}
    return {"stable": True, "reason": f"last {rule.windows} windows: req/s ±{rps:.1%}, p99 ±{p99:.1%} of their mean", **out}
