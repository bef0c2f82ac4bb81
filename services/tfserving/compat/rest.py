"""TF Serving's REST API as a bare ASGI app: no framework on the hot path, routes as TF Serving parses them."""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable

import orjson
import tensorflow as tf

from services.tfserving.compat import metrics, tensors
from services.tfserving.compat.engine import IMPLEMENTATION, Engine
from services.tfserving.compat.errors import ServingError, invalid

ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>predict|classify|regress))?$",
    re.IGNORECASE,
)

Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]


class RestApp:
    def __init__(self, engine: Engine, monitoring_path: str | None) -> None:
        self.engine = engine
        self.monitoring_path = monitoring_path
        ident = f"{IMPLEMENTATION}/{tf.__version__}".encode()
        self.json_headers = [(b"content-type", b"application/json"), (b"x-tf-serving-implementation", ident)]
        self.text_headers = [(b"content-type", b"text/plain; version=0.0.4"), (b"x-tf-serving-implementation", ident)]

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        try:
            status, body, headers = await self.dispatch(method, path, receive)
        except ServingError as exc:
            status, body, headers = exc.http_status, orjson.dumps({"error": exc.message}), self.json_headers
        except Exception as exc:  # never a traceback to the client
            status, body, headers = 500, orjson.dumps({"error": f"internal error: {type(exc).__name__}"}), self.json_headers
        await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def dispatch(self, method: str, path: str, receive: Receive) -> tuple[int, bytes, list]:
        if self.monitoring_path and path == self.monitoring_path and method == "GET":
            return 200, metrics.render(), self.text_headers
        if not path.lower().startswith("/v1/"):
            return 404, orjson.dumps({"error": "Not Found"}), self.json_headers
        m = ROUTE.match(path)
        if m is None:
            if method == "GET" and path.rstrip("/").lower() == "/v1/models":
                raise invalid("Missing model name in request.")
            raise invalid(f"Malformed request: {method} {path}")
        name, verb = m["name"], m["verb"]
        version = int(m["version"]) if m["version"] else None
        if method == "GET" and verb is None:
            if m["metadata"]:
                servable = self.engine.registry.find(name, version, m["label"])
                return 200, orjson.dumps(self.engine.metadata_dict(servable)), self.json_headers
            if m["label"]:
                version = self.engine.registry.find(name, None, m["label"]).version
            return 200, orjson.dumps(self.engine.status_dict(name, version)), self.json_headers
        if method == "POST" and verb is not None and not m["metadata"]:
            body = await read_body(receive)
            servable = self.engine.registry.find(name, version, m["label"])
            if verb.lower() != "predict":
                raise invalid(f"Expected {verb.lower()} signature method_name to be tensorflow/serving/{verb.lower()}; this model serves predict signatures only")
            request = tensors.loads(body)
            sig_name = request.get("signature_name") if isinstance(request, dict) else None
            sig = servable.signature(sig_name)
            inputs, row_format = tensors.decode(request, sig)
            outputs = await self.engine.predict(servable, sig.name, inputs, "rest_predict")
            return 200, tensors.encode(outputs, row_format), self.json_headers
        raise invalid(f"Malformed request: {method} {path}")


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message: Any = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)
