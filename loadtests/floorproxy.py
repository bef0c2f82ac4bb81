"""The bare-Python-proxy floor: the least a Python front end can spend forwarding one request.

A raw ASGI app (no framework, no validation, no metrics, no logging) on the same server stack as the
gateway (uvicorn + uvloop + httptools), forwarding each body verbatim to its upstream through one
aiohttp `ClientSession` (a keep-alive pool) and answering the upstream's status and body. What the
gateway spends above this floor is its own work; what the floor spends above nginx is the price of
Python and its HTTP client. It is a measuring instrument for `twinserve bench --overhead`, not a
product feature.

One process listens on one loopback port per upstream (like the nginx reference's one server block
per stack) and picks the upstream by the port a request arrived on, so the request path stays the
stack's own path:

    python -m loadtests.floorproxy --route 9101=http://127.0.0.1:8080 --route 9102=http://127.0.0.1:8501
"""

from __future__ import annotations

import argparse
import socket
from typing import Any, Awaitable, Callable

import aiohttp
import uvicorn

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class FloorProxy:
    """Forwards method, path, query, content type and body; answers status, content type and body."""

    def __init__(self, upstreams: dict[int, str]) -> None:
        self.upstreams = upstreams  # listening port → upstream base URL (no trailing slash)
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.forward(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """The session must be made inside the server's event loop, so at startup, not in __init__."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # no total timeout beyond the stacks' own; no decompression: the body goes back verbatim
                self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60), auto_decompress=False)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def forward(self, scope: Message, receive: Receive, send: Send) -> None:
        assert self.session is not None
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        url = self.upstreams[scope["server"][1]] + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"}
        try:
            async with self.session.request(scope["method"], url, data=b"".join(chunks), headers=headers) as resp:
                status, body = resp.status, await resp.read()
                content_type = resp.headers.get("Content-Type", "application/octet-stream").encode("latin-1")
        except (aiohttp.ClientError, TimeoutError) as exc:  # an unreachable stack answers 502, as nginx does
            status, body, content_type = 502, f"floor proxy: upstream failed: {exc!r}".encode(), b"text/plain"
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def parse_route(value: str) -> tuple[int, str]:
    port, sep, url = value.partition("=")
    if not sep or not port.isdigit() or not url.startswith("http://"):
        raise argparse.ArgumentTypeError(f"expected PORT=http://HOST:PORT, got {value!r}")
    return int(port), url.rstrip("/")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback only by default)")
    parser.add_argument("--route", type=parse_route, action="append", required=True, metavar="PORT=URL", help="listen on PORT, forward to URL (repeat per upstream)")
    args = parser.parse_args(argv)
    upstreams = dict(args.route)
    sockets = [listening_socket(args.host, port) for port in upstreams]
    config = uvicorn.Config(FloorProxy(upstreams), loop="uvloop", http="httptools", lifespan="on", access_log=False, server_header=False, log_level="warning")
    uvicorn.Server(config).run(sockets=sockets)


if __name__ == "__main__":
    main()
