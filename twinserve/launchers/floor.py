"""The bare-Python-proxy floor (loadtests/floorproxy.py) as a reference proxy for `twinserve bench --overhead`.

One process, one loopback port per stack, like the nginx reference: what a Python front end with
the gateway's own server (uvicorn + uvloop + httptools) and HTTP client (aiohttp) spends before it
does any work of its own.
"""

from __future__ import annotations

import sys
from importlib import metadata

from twinserve.settings import ROOT
from twinserve.supervisor import Launch, ready_when_listening


def launch(host: str, routes: dict[str, tuple[int, str]]) -> Launch:
    """routes: stack → (listening port, upstream base URL)."""
    versions = {dist: metadata.version(dist) for dist in ("uvicorn", "aiohttp")}
    ports = [port for port, _ in routes.values()]
    return Launch(
        name="floor",
        cmd=[sys.executable, "-m", "loadtests.floorproxy", "--host", host, *(f"--route={port}={url}" for port, url in routes.values())],
        ports=ports,
        ready=ready_when_listening(host, ports),
        urls={name: f"http://{host}:{port} → {url}" for name, (port, url) in routes.items()},
        implementation=f"raw ASGI on uvicorn {versions['uvicorn']} (uvloop, httptools, access log off) + one aiohttp {versions['aiohttp']} ClientSession; no validation, no metrics",
        cwd=ROOT,
    )
