"""nginx as a reference proxy for `twinserve bench --overhead`: what a proxy costs when it is not Python.

The configuration is written into the run folder for each bench (never /etc), and nginx runs in the
foreground (`daemon off`) so that the supervisor owns its process group: master and worker are
counted together and stopped together. One server block per stack on its own loopback port forwards
the request path verbatim, so the nginx target sends exactly what the direct target sends.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from twinserve.settings import ROOT
from twinserve.supervisor import Launch, SupervisorError, ready_when_listening

ENSURE_SCRIPT = ROOT / "loadtests" / "ensure-nginx.sh"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def binary() -> str | None:
    """Debian installs nginx in /usr/sbin, which is not on every user's PATH."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def ensure(say: Callable[[str], None] = print) -> str:
    """The nginx binary; installs Debian's nginx-light with apt-get (saying so) when it is missing."""
    found = binary()
    if found:
        return found
    say(f"nginx is not installed: installing Debian's nginx-light with apt-get ({ENSURE_SCRIPT.relative_to(ROOT)}), the reference proxy of --overhead")
    proc = subprocess.run(["bash", str(ENSURE_SCRIPT)], capture_output=True, text=True)
    found = binary()
    if proc.returncode != 0 or not found:
        raise SupervisorError(f"could not install nginx (exit {proc.returncode}): {(proc.stdout + proc.stderr).strip()[-800:]}")
    return found


def version(nginx: str) -> str:
    proc = subprocess.run([nginx, "-v"], capture_output=True, text=True)
    return (proc.stderr or proc.stdout).strip().rpartition("/")[2] or "unknown"


def render(host: str, routes: dict[str, tuple[int, str]], work: Path, error_log: Path) -> str:
    """routes: upstream name (the stack) → (listening port, upstream base URL http://host:port).

    Request bodies are kept in memory (client_body_buffer_size) and responses never spill to temp
    files: when started as root the worker runs as `nobody`, which may not reach the run folder.
    """
    upstreams, servers = [], []
    for name, (port, url) in routes.items():
        upstreams.append(f"    upstream {name} {{\n        server {urlsplit(url).netloc};\n        keepalive 64;\n    }}\n")
        servers.append(f"    server {{\n        listen {host}:{port};\n        location / {{\n            proxy_pass http://{name};\n        }}\n    }}\n")
    temps = "".join(f"    {name}_temp_path {work / 'temp' / name};\n" for name in TEMP_PATHS)
    return (
        "# Written by `twinserve bench --overhead` for this run (twinserve/launchers/nginx.py).\n"
        "worker_processes 1;\n"
        "daemon off;\n"
        f"pid {work / 'nginx.pid'};\n"
        f"error_log {error_log} warn;\n"
        "events {\n    worker_connections 1024;\n}\n"
        "http {\n"
        "    access_log off;\n"
        f"{temps}"
        "    client_max_body_size 64m;\n"
        "    client_body_buffer_size 16m;\n"
        "    proxy_max_temp_file_size 0;\n"
        "    proxy_http_version 1.1;\n"
        '    proxy_set_header Connection "";\n'
        + "".join(upstreams)
        + "".join(servers)
        + "}\n"
    )


def launch(host: str, routes: dict[str, tuple[int, str]], run_dir: Path, log_dir: Path, nginx: str) -> Launch:
    """routes: stack → (listening port, upstream base URL); files go to <run_dir>/nginx, the error log to log_dir."""
    work = (run_dir / "nginx").resolve()
    for name in TEMP_PATHS:
        (work / "temp" / name).mkdir(parents=True, exist_ok=True)
    error_log = (log_dir / "nginx-error.log").resolve()
    conf = work / "nginx.conf"
    conf.write_text(render(host, routes, work, error_log))
    ports = [port for port, _ in routes.values()]
    return Launch(
        name="nginx",
        # -e: the error log before the configuration is read, so nginx never opens the system's
        cmd=[nginx, "-p", str(work), "-c", str(conf), "-e", str(error_log)],
        ports=ports,
        ready=ready_when_listening(host, ports),
        urls={name: f"http://{host}:{port} → {url}" for name, (port, url) in routes.items()},
        implementation=f"nginx {version(nginx)} (worker_processes 1, upstream keepalive 64, HTTP/1.1 upstream, access log off)",
        cwd=work,
        extra={"config": str(conf)},
    )
