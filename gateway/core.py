"""The one request path of every inference route: ASGI in, the protocol's handler, ASGI out.

Profiling showed FastAPI's and Starlette's layers (routing, middleware stack, Request objects)
costing about as much CPU per proxied request as the upstream call itself. So every inference
route — V1 predict, compare and explain, V2 infer — is answered here, straight from ASGI, by the
handler its protocol module declares; every other request (administrative routes, docs, the
lifespan) goes on to the FastAPI application, which also documents the inference routes in its
OpenAPI schema from the same route table.

What every request needs happens here and nowhere else: the API key (for FastAPI's routes too),
the request ID, the backend override, the body limit, the error shape (an unexpected exception is
the same JSON 500 as on any route), 405 for a known path with the wrong method, the metrics and
the access log.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from gateway.dataplane import DataPlane
from gateway.errors import GatewayError, internal_error
from gateway.http import Outcome, asgi_chunks, check_api_key, read_limited, request_id
from gateway.logs import AccessLog
from models.spec import ModelSpec

log = logging.getLogger("twinserve.gateway")

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[dict, Receive, Send], Awaitable[None]]
Reply = tuple[int, bytes, dict[str, str]]
JSON = (b"content-type", b"application/json")

# the request headers any route here reads; the others are not decoded
WANTED = frozenset({b"content-length", b"x-request-id", b"x-backend", b"x-api-key", b"authorization", b"inference-header-content-length"})
# liveness and readiness stay open to probes when API keys are on, like /healthz and /readyz
OPEN_PREFIXES = ("/v2/health/",)
PROTECTED_PREFIXES = ("/v1/", "/v2")


@dataclass
class Call:
    """One inference request as a handler sees it: no framework object, only what it needs."""

    model: str
    rid: str
    override: str | None
    query: dict[str, str]
    read: Callable[[], Awaitable[bytes]]
    outcome: Outcome
    headers: dict[str, str] = field(default_factory=dict)  # the WANTED request headers, lower-case names


Handler = Callable[[DataPlane, ModelSpec, Call], Awaitable[Reply]]


@dataclass(frozen=True)
class Route:
    """An inference route: its method and path template, the metric label, the handler, and the
    keyword arguments that document it in the OpenAPI schema."""

    method: str
    path: str  # e.g. "/v1/models/{model}:predict"
    endpoint: str
    handler: Handler
    doc: dict[str, Any] = field(default_factory=dict)
    backend_label: str = "none"  # "both" for routes that ask every backend

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.escape(self.path).replace(re.escape("{model}"), "([^/:]+)") + "$")


class Core:
    """The gateway's ASGI entry point: inference routes here, everything else to `app`."""

    def __init__(self, app: Any, routes: list[Route], keys: list[bytes], max_body_bytes: int, access: AccessLog) -> None:
        self.app = app
        self.routes = [(r, r.pattern) for r in routes]
        self.keys = keys
        self.limit = max_body_bytes
        self.access = access

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # state, openapi(), routes...: the FastAPI app's

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in WANTED}
        rid = request_id(headers)
        if self.keys and path.startswith(PROTECTED_PREFIXES) and not path.startswith(OPEN_PREFIXES):
            try:
                check_api_key(headers, self.keys)
            except GatewayError as exc:
                await respond(send, exc.status, exc.body(), {**exc.headers, "X-Request-ID": rid})
                return
        found = self.match(scope["method"], path)
        if found is None:
            await self.app(scope, receive, send)
            return
        route, model = found
        if route is None:
            allow = ", ".join(sorted({r.method for r, p in self.routes if p.match(path)}))
            exc = GatewayError(405, "method_not_allowed", f"{scope['method']} is not allowed on {path}; use {allow}")
            await respond(send, 405, exc.body(), {"Allow": allow, "X-Request-ID": rid})
            return
        status, body, out = await self.serve(route, model, scope, headers, receive, rid)
        out["X-Request-ID"] = rid
        await respond(send, status, body, out)

    def match(self, method: str, path: str) -> tuple[Route | None, str] | None:
        """(route, model) for an inference path; (None, model) when only the method is wrong."""
        if not path.startswith(("/v1/models/", "/v2/models/")):
            return None
        wrong_method = None
        for route, pattern in self.routes:
            m = pattern.match(path)
            if m is not None:
                if route.method == method:
                    return route, m[1]
                wrong_method = m[1]
        return (None, wrong_method) if wrong_method is not None else None

    async def serve(self, route: Route, model: str, scope: dict, headers: dict[str, str], receive: Receive, rid: str) -> Reply:
        outcome = Outcome(route.endpoint, backend=route.backend_label)
        plane: DataPlane = self.app.state.plane
        try:
            raw_query = scope.get("query_string", b"")
            query = dict(parse_qsl(raw_query.decode("latin-1"))) if raw_query else {}
            override = plane.check_backend(query.get("backend") or headers.get("x-backend"))
            spec = plane.spec(model)
            outcome.model = model
            read = lambda: read_limited(asgi_chunks(receive), headers.get("content-length"), self.limit)  # noqa: E731
            status, body, out = await route.handler(plane, spec, Call(model, rid, override, query, read, outcome, headers))
        except GatewayError as exc:
            status, body, out = exc.status, exc.body(), dict(exc.headers)
            if outcome.backend == "none":
                outcome.backend = exc.backend or "none"
        except Exception:
            log.exception("unhandled error on %s %s (request %s)", scope["method"], scope["path"], rid)
            exc = internal_error()
            status, body, out = exc.status, exc.body(), {}
        outcome.status = status
        outcome.record()
        self.access.record(rid, scope["method"], scope["path"], status, outcome.backend, time.perf_counter() - outcome.started)
        return status, body, out


async def respond(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [] if "Content-Type" in headers else [JSON]  # JSON unless the handler says otherwise
    raw.append((b"content-length", str(len(body)).encode()))
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
