"""The hot path without the framework: `POST /v1/models/{model}:predict` answered straight from ASGI.

Profiling showed FastAPI's and Starlette's layers (routing, middleware stack, Request objects)
costing about as much CPU per proxied request as the upstream call itself. This thin ASGI app
answers the one hot route through the same `predict_core` the documented FastAPI route uses (so
validation, routing, failover, metrics, request IDs and API keys are identical) and hands every
other request, and the lifespan, to the FastAPI application.
"""

from __future__ import annotations

import re
from typing import Awaitable, Callable
from urllib.parse import parse_qs

from fastapi import FastAPI

from gateway.errors import GatewayError
from gateway.http import asgi_chunks, check_api_key_in, read_limited, request_id_from
from gateway.protocols.v1 import predict_core

PREDICT = re.compile(r"^/v1/models/([^/:]+):predict$")
JSON = (b"content-type", b"application/json")


class FastPath:
    def __init__(self, app: FastAPI, keys: list[bytes]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
        match = PREDICT.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        rid = request_id_from(headers)
        try:
            check_api_key_in(headers, self.keys)
        except GatewayError as exc:
            await respond(send, exc.status, exc.body(), {**exc.headers, "X-Request-ID": rid})
            return
        query = scope.get("query_string", b"")
        override = (parse_qs(query.decode("latin-1")).get("backend", [None])[0] if query else None) or headers.get("x-backend")
        plane = self.app.state.plane
        limit = plane.settings.max_body_bytes
        status, body, out = await predict_core(plane, match[1], lambda: read_limited(asgi_chunks(receive), headers.get("content-length"), limit), override, rid)
        await respond(send, status, body, out)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.app, name)  # state, openapi(), routes...: the FastAPI app's


async def respond(send: Callable[[dict], Awaitable[None]], status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [JSON, (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
