"""Server-side cost beside the client's view: CPU time and peak memory of a stack's process group."""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


def group_members(pgids: list[int]) -> list[int]:
    """PIDs of the live (non-zombie) processes in the given process groups."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().split(")")[-1].split()
            except OSError:
                continue
            if int(fields[2]) in pgids and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def group_processes(pgid: int) -> list[psutil.Process]:
    """Every live process of one process group (a stack's CLI, JVM and workers alike)."""
    out = []
    for pid in group_members([pgid]):
        try:
            out.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return out


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def rss_bytes(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


@dataclass
class Usage:
    cpu_seconds: float
    peak_rss_mb: float


Window = tuple[float, float]  # (start, end) in Unix seconds: the span locust counted requests over


def value_at(samples: list[tuple[float, float]], t: float) -> float:
    """A cumulative figure (CPU seconds) at time `t`, interpolated between timed samples."""
    times = [s[0] for s in samples]
    i = bisect.bisect_left(times, t)
    if i == 0:
        return samples[0][1]
    if i == len(samples):
        return samples[-1][1]
    (t0, c0), (t1, c1) = samples[i - 1], samples[i]
    return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1


def in_window(samples: list[tuple[float, float]], window: Window | None, slack: float = 0.5) -> float | None:
    """CPU seconds spent inside `window`, or None when the samples do not span it to within
    `slack` seconds (then the caller falls back to the whole run; a locust worker may exit a few
    milliseconds after the last request, between two samples). The window, not the whole
    subprocess: a locust run also spends seconds importing and shutting down, with no request counted."""
    if window is None or len(samples) < 2 or samples[0][0] > window[0] + slack or samples[-1][0] < window[1] - slack:
        return None
    return value_at(samples, window[1]) - value_at(samples, window[0])


class GroupMonitor:
    """Samples the CPU time and RSS of some process groups while a run lasts.

    Several groups when a target is served by more than one (the routed gateway target: both
    stacks); their figures are summed. No group at all: nothing to measure (usage() is None).
    CPU is sampled with timestamps so that it can be read over the window locust counted.
    """

    def __init__(self, pgids: list[int], interval: float = 0.25) -> None:
        self.pgids = list(pgids)
        self.interval = interval
        self.procs: list[psutil.Process] = []
        self.peak = 0
        self.samples: list[tuple[float, float]] = []  # (Unix time, CPU seconds of the groups)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _take(self) -> None:
        self.samples.append((time.time(), cpu_seconds(self.procs)))
        self.peak = max(self.peak, rss_bytes(self.procs))

    def __enter__(self) -> "GroupMonitor":
        if self.pgids:
            self.procs = [p for pgid in self.pgids for p in group_processes(pgid)]
            self._take()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
            self._take()

    def usage(self, window: Window | None = None) -> Usage | None:
        """CPU over `window` when the samples span it, else over the whole run; peak RSS of the run."""
        if not self.pgids or not self.samples:
            return None
        cpu = in_window(self.samples, window)
        if cpu is None:
            cpu = self.samples[-1][1] - self.samples[0][1]
        return Usage(round(cpu, 3), round(self.peak / 2**20, 1))


class TreeMonitor:
    """Samples the CPU time of each process of a tree (a locust run: one process, or a master and
    its workers with --processes), to tell whether the load generator itself was the bottleneck.

    Per process, because each locust process is one gevent loop on one core: the sum over a master
    and N workers against one core's worth flagged distributed runs that had room to spare.
    """

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.samples: dict[int, list[tuple[float, float]]] = {}
        self.machine: list[tuple[float, float]] = []  # (Unix time, busy CPU seconds of the whole machine: all but idle and iowait)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _take(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        now = time.time()
        m = psutil.cpu_times()
        self.machine.append((now, sum(m) - m.idle - getattr(m, "iowait", 0.0)))
        for p in procs:
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            self.samples.setdefault(p.pid, []).append((now, t.user + t.system))

    def _sample(self) -> None:
        while True:
            self._take()
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> TreeMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def busiest_share(self, window: Window) -> float | None:
        """CPU seconds per second of the busiest process over `window`; None if no process was
        sampled across it (a run too short for the sampling interval)."""
        shares = [cpu / (window[1] - window[0]) for cpu in (in_window(s, window) for s in self.samples.values()) if cpu is not None]
        return max(shares) if shares and window[1] > window[0] else None

    def total_cpu(self, window: Window) -> float | None:
        """CPU seconds of the whole tree (every locust process) over `window`; None if none was sampled across it."""
        cpus = [cpu for cpu in (in_window(s, window) for s in self.samples.values()) if cpu is not None]
        return sum(cpus) if cpus else None


def machine() -> dict:
    return {"cpu_count": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
