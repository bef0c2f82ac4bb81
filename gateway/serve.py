"""The gateway's one entry point, native and in its container: uvicorn with the settings' workers.

With more than one worker each process counts its own requests, so `/metrics` would show whichever
worker answered the scrape. Here several workers share a Prometheus multiprocess directory (set
before any worker imports prometheus_client) and `/metrics` sums them; the directory is private to
this run and removed when the server stops.
"""

from __future__ import annotations

import os
import shutil
import tempfile

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def main() -> None:
    import sys

    import uvicorn
    from pydantic import ValidationError

    from gateway.settings import GatewaySettings, describe_errors

    try:
        settings = GatewaySettings()
        from gateway import backends

        backends.check(settings)
    except ValidationError as exc:
        sys.exit(f"twinserve gateway: bad setting: {describe_errors(exc, 'TWINSERVE_GATEWAY_')}")
    except ValueError as exc:
        sys.exit(f"twinserve gateway: bad setting: {exc}")
    busy = taken(settings.host, settings.grpc_port) if settings.grpc_port else None
    if busy:
        sys.exit(f"twinserve gateway: cannot bind the gRPC port {settings.host}:{settings.grpc_port}: {busy}; set TWINSERVE_GATEWAY_GRPC_PORT (0 turns gRPC off)")
    shared = None
    if settings.workers > 1 and MULTIPROC_ENV not in os.environ:
        shared = tempfile.mkdtemp(prefix="twinserve-gateway-metrics-")
        os.environ[MULTIPROC_ENV] = shared
    try:
        uvicorn.run(
            "gateway.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            server_header=False,  # no product banner to clients
            proxy_headers=False,  # no X-Forwarded-* rewriting: nothing reads the client address, and it costs a middleware per request
            log_level="warning",
        )
    finally:
        if shared:
            shutil.rmtree(shared, ignore_errors=True)


def taken(host: str, port: int) -> str | None:
    """Why the port cannot be bound, or None. Checked before uvicorn starts: a failure inside the
    application's start-up would come out as uvicorn's traceback instead of one line."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


if __name__ == "__main__":
    main()
