"""Per-request plumbing shared by the protocol modules: body limits, request IDs, backend choice, auth."""

from __future__ import annotations

import hmac
import time
import uuid
from dataclasses import dataclass, field

from starlette.requests import Request

from gateway import metrics
from gateway.errors import GatewayError


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        metrics.REJECTED.labels("body_too_large").inc()
        raise GatewayError(413, "body_too_large", f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            metrics.REJECTED.labels("body_too_large").inc()
            raise GatewayError(413, "body_too_large", f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def request_id(request: Request) -> str:
    rid = request.headers.get("x-request-id")
    if rid and len(rid) <= 128 and rid.isprintable():
        return rid
    return uuid.uuid4().hex


def backend_override(request: Request) -> str | None:
    return request.query_params.get("backend") or request.headers.get("x-backend") or None


def check_api_key(request: Request, keys: list[bytes]) -> None:
    """Constant-time comparison against every configured key; nothing to check when none are set."""
    if not keys:
        return
    supplied = request.headers.get("x-api-key")
    if supplied is None:
        auth = request.headers.get("authorization", "")
        supplied = auth[7:] if auth[:7].lower() == "bearer " else None
    if supplied is not None:
        candidate = supplied.encode()
        matched = False
        for key in keys:
            matched |= hmac.compare_digest(candidate, key)
        if matched:
            return
    raise GatewayError(401, "unauthorized", "missing or invalid API key (send X-API-Key or Authorization: Bearer)", headers={"WWW-Authenticate": "Bearer"})


@dataclass
class Outcome:
    """What one request did, recorded into the metrics when it ends."""

    endpoint: str
    model: str = "unknown"
    backend: str = "none"
    status: int = 500
    started: float = field(default_factory=time.perf_counter)

    def record(self) -> None:
        metrics.REQUESTS.labels(self.model, self.backend, self.endpoint, str(self.status)).inc()
        metrics.LATENCY.labels(self.model, self.backend, self.endpoint).observe(time.perf_counter() - self.started)
