"""Server-side cost beside the client's view: CPU time and peak memory of a stack's process group."""

from __future__ import annotations

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


class GroupMonitor:
    """Samples the RSS of one process group while a run lasts; CPU time is read at both ends."""

    def __init__(self, pgid: int | None, interval: float = 0.5) -> None:
        self.pgid = pgid
        self.interval = interval
        self.procs: list[psutil.Process] = []
        self.peak = 0
        self.cpu0 = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "GroupMonitor":
        if self.pgid is not None:
            self.procs = group_processes(self.pgid)
            self.cpu0 = cpu_seconds(self.procs)
            self.peak = rss_bytes(self.procs)
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes(self.procs))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def usage(self) -> Usage | None:
        if self.pgid is None:
            return None
        return Usage(round(cpu_seconds(self.procs) - self.cpu0, 3), round(self.peak / 2**20, 1))


def machine() -> dict:
    return {"cpu_count": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
