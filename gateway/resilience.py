"""Per-backend circuit breaker and concurrency limit: fail fast instead of queueing without bound."""

from __future__ import annotations

import time


class CircuitBreaker:
    """closed -> open after `threshold` consecutive failures; after `cooldown` one probe is let
    through (half-open); its success closes the circuit, its failure opens it again."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.state = self.CLOSED
        self.opened_at = 0.0
        self.probing = False

    def allow(self) -> bool:
        if self.state == self.CLOSED:
            return True
        if self.state == self.OPEN and time.monotonic() - self.opened_at >= self.cooldown:
            self.state = self.HALF_OPEN
            self.probing = False
        if self.state == self.HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def admits(self) -> bool:
        """Would `allow` let a request through? Without taking the half-open probe: a balancer asks
        this of every candidate and `allow` of the one it chooses."""
        if self.state == self.CLOSED:
            return True
        if self.state == self.OPEN:
            return time.monotonic() - self.opened_at >= self.cooldown
        return not self.probing

    def success(self) -> None:
        self.failures = 0
        self.state = self.CLOSED
        self.probing = False

    def failure(self) -> None:
        self.failures += 1
        if self.state == self.HALF_OPEN or self.failures >= self.threshold:
            self.state = self.OPEN
            self.opened_at = time.monotonic()
            self.probing = False

    def retry_after(self) -> float:
        return max(0.0, self.cooldown - (time.monotonic() - self.opened_at))


class ConcurrencyLimit:
    """A counter, not a queue: the event loop is single-threaded, so no lock is needed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def try_acquire(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight -= 1
