"""The gateway's log: a start line with the settings in effect, warnings and errors, and an access log
that stays off the hot path.

Access lines are sampled (every 5xx, and a settable share of the rest) and handed to a queue that a
background thread writes out, so a request pays for a random draw and, when sampled, one queue put;
formatting and the write happen on the other thread. Nothing of a request's payload or prediction is
ever logged: the line holds the request ID, method, path, status, backend and time only.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import queue
import random
import sys

from gateway.settings import GatewaySettings

log = logging.getLogger("twinserve.gateway")
access = logging.getLogger("twinserve.gateway.access")

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_listener: logging.handlers.QueueListener | None = None


class _Deferred(logging.handlers.QueueHandler):
    """Queues the record as it is: the stock QueueHandler formats it in the caller's thread, which is
    the request's (the arguments are strings and numbers, safe to format later)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def configure() -> None:
    """Once per process: the gateway's loggers write to stderr (the supervisor's log file natively,
    the container's log in compose); access lines go through a queue and a writer thread."""
    global _listener
    if _listener is not None:
        return
    out = logging.StreamHandler(sys.stderr)
    out.setFormatter(logging.Formatter(FORMAT))
    log.setLevel(logging.INFO)
    if not log.handlers:
        log.addHandler(out)
    log.propagate = False
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    access.addHandler(_Deferred(lines))
    access.setLevel(logging.INFO)
    access.propagate = False
    _listener = logging.handlers.QueueListener(lines, out)
    _listener.start()
    atexit.register(_listener.stop)


def settings_line(settings: GatewaySettings) -> str:
    """The settings in effect, secrets reduced to whether they are set."""
    shown = settings.model_dump()
    for secret in ("api_keys", "torchserve_token"):
        value = shown.get(secret)
        shown[secret] = f"<{len([k for k in value.split(',') if k.strip()])} set>" if value else "<none>"
    return " ".join(f"{k}={v}" for k, v in shown.items())


def started(settings: GatewaySettings) -> None:
    log.info("gateway worker %d started; settings in effect: %s", os.getpid(), settings_line(settings))


class AccessLog:
    """Decides which requests get an access line and queues it."""

    def __init__(self, sample: float) -> None:
        self.sample = sample

    def record(self, rid: str, method: str, path: str, status: int, backend: str, seconds: float) -> None:
        if status >= 500 or (self.sample > 0 and random.random() < self.sample):
            access.info("%s %s %s %d backend=%s %.2fms", rid, method, path, status, backend, seconds * 1000)
