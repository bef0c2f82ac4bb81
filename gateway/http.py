"""Per-request plumbing, done once for every route in gateway/core.py: body limits, request IDs, auth,
the headers that say who served, and the metrics of each outcome."""

from __future__ import annotations

import hmac
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable, Mapping

from gateway import metrics
from gateway.errors import GatewayError


async def asgi_chunks(receive: Callable[[], Awaitable[dict]]) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise GatewayError(400, "client_disconnected", "the client went away while sending its body")
        yield message.get("body", b"")
        if not message.get("more_body"):
            return


async def read_limited(chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The body, or a 413 as soon as it is known to exceed the limit (declared or counted)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(f"request body of {declared} bytes", limit)
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large("request body", limit)
        parts.append(chunk)
    return b"".join(parts)


def too_large(what: str, limit: int) -> GatewayError:
    """The 413 of a request over the body limit (an HTTP body, a gRPC message), counted as rejected."""
    metrics.REJECTED.labels("body_too_large").inc()
    return GatewayError(413, "body_too_large", f"{what} exceeds the limit of {limit} bytes")


# A generated ID is this process's random prefix and a counter: unique across processes and
# restarts like a UUID, without a uuid4 (an os.urandom system call) per request (2% of the CPU).
_PREFIX = uuid.uuid4().hex[:16]
_SEQUENCE = itertools.count(1)


def request_id(headers: Mapping[str, str]) -> str:
    """The client's X-Request-ID when it is sane, else a fresh one."""
    rid = headers.get("x-request-id")
    if rid and len(rid) <= 128 and rid.isprintable():
        return rid
    return f"{_PREFIX}{next(_SEQUENCE):016x}"


def check_api_key(headers: Mapping[str, str], keys: list[bytes]) -> None:
    """Constant-time comparison against every configured key; nothing to check when none are set."""
    if not keys:
        return
    supplied = headers.get("x-api-key")
    if supplied is None:
        auth = headers.get("authorization", "")
        supplied = auth[7:] if auth[:7].lower() == "bearer " else None
    if supplied is not None:
        candidate = supplied.encode()
        matched = False
        for key in keys:
            matched |= hmac.compare_digest(candidate, key)
        if matched:
            return
    raise GatewayError(401, "unauthorized", "missing or invalid API key (send X-API-Key or Authorization: Bearer)", headers={"WWW-Authenticate": "Bearer"})


def served_headers(backend: str, seconds: float, failover_from: str | None) -> dict[str, str]:
    """Which stack answered, its upstream time, and any failover (the request ID is added for every reply)."""
    headers = {"X-Backend": backend, "X-Upstream-Ms": f"{seconds * 1000:.3f}"}
    if failover_from:
        headers["X-Failover-From"] = failover_from
    return headers


@dataclass
class Outcome:
    """What one request did, recorded into the metrics when it ends."""

    endpoint: str
    model: str = "unknown"
    backend: str = "none"
    status: int = 500
    started: float = field(default_factory=time.perf_counter)

    def record(self) -> None:
        key = (self.model, self.backend, self.endpoint, self.status)
        children = _CHILDREN.get(key)
        if children is None:  # label lookups are resolved once per combination, not per request
            children = _CHILDREN[key] = (
                metrics.REQUESTS.labels(self.model, self.backend, self.endpoint, str(self.status)),
                metrics.LATENCY.labels(self.model, self.backend, self.endpoint),
            )
        children[0].inc()
        children[1].observe(time.perf_counter() - self.started)


_CHILDREN: dict[tuple, tuple] = {}
