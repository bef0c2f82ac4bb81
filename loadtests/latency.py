"""Every request's response time at microsecond precision: HDR histograms per measurement window.

Locust files each response time under a rounded key (whole milliseconds below 100 ms, 10 ms up to
1 s, ...), coarser than the differences compared here (the gateway adds about 1.5 ms; the stacks'
p50 are 2-20 ms). Here each request's exact time (locust measures it with `perf_counter`, as a float
in ms) is recorded, in µs, into an HdrHistogram with 3 significant digits: exact to the µs below
2.048 ms, within 0.1% above, up to two minutes.

One `Recorder` per locust process, keyed by window: window k holds the requests that completed in
[t0 + k·W, t0 + (k+1)·W), t0 being the moment every user had spawned (the master's clock, sent to
the workers). A worker hands its windows to the master with every stats report and starts afresh;
the master adds them up (`merge`), so the master's recorder ends up holding every request of every
worker. Nothing here imports locust: the tests feed known times through the same `record` path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 120_000_000  # two minutes: above any client timeout of the locustfile; longer times are clamped
DIGITS = 3  # significant digits kept
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p99.9", 99.9))
COMPLETE_SLACK_S = 0.05  # a window ending this close after the stop still counts as complete (timer jitter)


def histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def to_us(response_time_ms: float) -> int:
    """A response time in ms (locust's float) as whole µs, clamped into the histogram's range."""
    return min(HIGHEST_US, max(0, int(response_time_ms * 1000)))


@dataclass
class Window:
    """The requests of one window (or of several, added up): the histogram, and the exact sum and
    extremes the histogram rounds."""

    hist: HdrHistogram = field(default_factory=histogram)
    sum_ms: float = 0.0
    max_ms: float = 0.0
    min_ms: float = math.inf

    @property
    def count(self) -> int:
        return self.hist.get_total_count()

    def record(self, ms: float) -> None:
        self.hist.record_value(to_us(ms))
        self.sum_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms
        if ms < self.min_ms:
            self.min_ms = ms

    def add(self, other: "Window") -> None:
        self.hist.add(other.hist)
        self.sum_ms += other.sum_ms
        self.max_ms = max(self.max_ms, other.max_ms)
        self.min_ms = min(self.min_ms, other.min_ms)

    def encode(self) -> dict:
        return {"hdr": self.hist.encode().decode("ascii"), "sum_ms": self.sum_ms, "max_ms": self.max_ms, "min_ms": None if self.min_ms == math.inf else self.min_ms}

    @classmethod
    def decode(cls, data: dict) -> "Window":
        w = cls(HdrHistogram.decode(data["hdr"]), data["sum_ms"], data["max_ms"], math.inf if data["min_ms"] is None else data["min_ms"])
        return w

    def latency_us(self) -> dict:
        """p50/p90/p95/p99/p99.9 (the histogram's values: 3 significant digits, HdrHistogram's
        convention of the highest value equivalent to the one at the rank, never above the largest
        time recorded), and the exact max, min and mean, in µs; the count of requests."""
        n = self.count
        if not n:
            return {**{k: None for k, _ in PERCENTILES}, "max": None, "min": None, "mean": None, "count": 0}
        values = self.hist.get_percentile_to_value_dict([q for _, q in PERCENTILES])
        top = to_us(self.max_ms)
        out = {k: min(int(values[q]), top) for k, q in PERCENTILES}  # a bucket's top may lie above the largest time recorded
        out.update(max=top, min=to_us(self.min_ms), mean=round(self.sum_ms * 1000 / n, 1), count=n)
        return out


class Recorder:
    """One locust process's requests, per window of `window_s` seconds from `t0`.

    `record` is what locust's request event calls: one histogram update per request. Requests
    before `start` (the spawning ramp) are not recorded, as locust's `--reset-stats` drops them,
    and neither are those completing after `stop`: the measured interval ends when the run is told
    to stop, and what completes while locust stops its users is slowed by the stopping itself (an
    open-loop tabular step at 100 req/s gave p99 8-19 ms for its first 500 requests, then its last
    15, completing during the stop, reached 160 ms: p99 ~120 ms for the step).
    """

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self.t0: float | None = None
        self.t_stop: float | None = None
        self.after_stop = 0  # requests completed after the stop: counted by locust, not measured here
        self.windows: dict[int, Window] = {}
        self.upto: dict[str, float] = {}  # master: how far (Unix time) each worker's reports cover

    def start(self, t0: float, window_s: float | None = None) -> None:
        self.t0 = t0
        if window_s:
            self.window_s = window_s

    def stop(self, t_stop: float) -> None:
        if self.t_stop is None:
            self.t_stop = t_stop

    def record(self, response_time_ms: float, now: float) -> None:
        if self.t0 is None or now < self.t0:
            return
        if self.t_stop is not None and now > self.t_stop:
            self.after_stop += 1
            return
        k = int((now - self.t0) / self.window_s)
        w = self.windows.get(k)
        if w is None:
            w = self.windows[k] = Window()
        w.record(response_time_ms)

    def take(self, now: float) -> dict:
        """What a worker sends with a stats report: its windows since the last report (then
        forgotten), and the time they cover up to."""
        payload = {"upto": now, "windows": {str(k): w.encode() for k, w in self.windows.items()}, "after_stop": self.after_stop}
        self.windows = {}
        self.after_stop = 0
        return payload

    def merge(self, payload: dict | None, client_id: str = "") -> None:
        """A worker's report, added to this (the master's) recorder."""
        if not payload:
            return
        self.after_stop += payload.get("after_stop", 0)
        for k, data in payload.get("windows", {}).items():
            w = Window.decode(data)
            mine = self.windows.get(int(k))
            if mine is None:
                self.windows[int(k)] = w
            else:
                mine.add(w)
        if client_id:
            self.upto[client_id] = max(self.upto.get(client_id, 0.0), payload.get("upto", 0.0))

    def complete(self, until: float) -> int:
        """How many whole windows lie between t0 and `until`."""
        if self.t0 is None or until < self.t0:
            return 0
        return int((until - self.t0 + COMPLETE_SLACK_S) / self.window_s)

    def window_figures(self, k: int) -> dict:
        """Window k as the stability rule reads it: its bounds, request count, req/s and percentiles."""
        w = self.windows.get(k) or Window()
        lat = w.latency_us()
        start = self.t0 + k * self.window_s
        return {
            "index": k, "start": round(start, 3), "end": round(start + self.window_s, 3), "requests": w.count,
            "rps": round(w.count / self.window_s, 2), "p50_us": lat["p50"], "p99_us": lat["p99"],
        }

    def total(self) -> Window:
        """Every request recorded, whatever its window (the partial ones included, as locust counts them)."""
        out = Window()
        for w in self.windows.values():
            out.add(w)
        return out
