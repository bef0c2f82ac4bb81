"""Helpers for gateway tests: an in-process gateway on a real port, a backend that never answers, one that answers an error."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import uvicorn

from conftest import free_port
from gateway.app import create_app
from gateway.settings import GatewaySettings


def backends(urls: dict) -> dict[str, str]:
    """Gateway settings pointing every stack's adapter at the session's stack (the `urls` fixture)."""
    return {"torchserve_url": urls["torchserve"], "torchserve_management_url": urls["management"], "tfserving_url": urls["tfserving"], "kserve_url": urls["kserve"]}


@contextmanager
def running_gateway(**settings: object) -> Iterator[str]:
    """A real uvicorn serving the real gateway app, with the given settings, in a thread. Its gRPC port
    is off unless a test gives one (grpc_port=free_port()), so gateways in tests never take 8001."""
    port = free_port()
    settings.setdefault("grpc_port", 0)
    # the KServe stack joins only where a test says where it is (backends(urls) does): else the
    # default URL would point at whatever listens on 8090 (a developer's own `twinserve up`)
    settings.setdefault("backends", "torchserve,tfserving,kserve" if "kserve_url" in settings else "torchserve,tfserving")
    app = create_app(GatewaySettings(port=port, **settings))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("in-process gateway did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def hanging_backend() -> Iterator[str]:
    """Accepts connections and reads requests but never answers: a stuck stack."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in held:
            conn.close()
        sock.close()


@contextmanager
def answering_backend(status: int, body: bytes, delay: Callable[[], float] | None = None, serial: bool = False) -> Iterator[str]:
    """A real HTTP server on loopback that answers every request with this status and JSON body:
    a stack failing in a way the real stacks cannot be made to fail on demand, or a bench target
    with known timing (`delay()` seconds before each answer; `serial`: one request at a time)."""
    from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 1 << 16  # head and body in one write (flushed after each request): no delayed-ACK stall
        disable_nagle_algorithm = True

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            if delay is not None:
                time.sleep(delay())
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = (HTTPServer if serial else ThreadingHTTPServer)(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def dead_url() -> str:
    """A loopback port with nothing listening: connection refused."""
    return f"http://127.0.0.1:{free_port()}"
