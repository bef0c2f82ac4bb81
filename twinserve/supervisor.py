"""Start, watch and stop the native services, with a state file so that `status` and `down` find them.

Each service runs in its own session (process group): TorchServe's CLI, its
Java frontend and its Python workers all share it, so one signal to the group
stops every one of them and no Java process is left behind. A start that fails
stops whatever this run had already started.

A service's output (stdout and stderr) goes through a pipe to a small writer
process in the same group, which caps its log file (twinserve/logcap.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from loadtests.resources import group_members
from twinserve import logcap

STATE_FILE = "state.json"


class SupervisorError(RuntimeError):
    pass


@dataclass
class Launch:
    """How to start one service and how to tell that it is ready."""

    name: str
    cmd: list[str]
    ports: list[int]
    ready: Callable[[], tuple[bool, str]]  # (ready?, detail)
    urls: dict[str, str]
    implementation: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    extra: dict = field(default_factory=dict)
    log_max_mb: float = 50.0  # cap of the service's log file (launchers pass TWINSERVE_LOG_MAX_MB)


@dataclass
class Running:
    name: str
    pid: int
    pgid: int
    cmd: list[str]
    log: str
    urls: dict[str, str]
    implementation: str
    started_at: float
    extra: dict = field(default_factory=dict)


def port_in_use(host: str, port: int) -> bool:
    """Something is listening on the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def port_bindable(host: str, port: int) -> bool:
    """A server could bind the port now: no listener holds it and no outgoing connection uses it.

    A connect test only sees listeners; a client socket sitting on the port makes the server's bind
    fail all the same (TorchServe then dies with a Java stack trace instead of a clear message).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _candidate_ports() -> Iterator[int]:
    high = min(_ephemeral_low(), 32768)
    low = max(1024, high - 12000)
    start = low + (os.getpid() * 97) % (high - low)
    yield from range(start, high)
    yield from range(low, start)


_CANDIDATES = _candidate_ports()


def free_port(host: str = "127.0.0.1") -> int:
    """A port for a private stack (tests, drills), chosen below the kernel's ephemeral range.

    Port 0 hands out an ephemeral port, and outgoing connections draw from that same pool: between
    choosing it and the server binding it, a client connection can take it. Below the range only a
    listener can hold a port. Successive calls in one process never repeat a port.
    """
    for port in _CANDIDATES:
        if port_bindable(host, port):
            return port
    raise SupervisorError("no free loopback port below the ephemeral range")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg succeeds while zombies remain: look for a live member
    return bool(group_members([pgid]))


def stop_group(pgid: int, timeout: float = 15.0) -> None:
    """SIGTERM the whole group, then SIGKILL whatever is left after the timeout."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap()
        if not group_alive(pgid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(50):
        _reap()
        if not group_alive(pgid):
            return
        time.sleep(0.1)


def _drained(pgid: int, timeout: float = 2.0) -> None:
    """Give a service's log writer, left in its group, time to copy the service's last words."""
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _reap() -> None:
    """Collect exited children of this process, so they do not linger as zombies."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def poll_models(url: Callable[[str], str], models: list[str], state: Callable[[object], str], headers: dict[str, str] | None = None, timeout: float = 2.0) -> dict[str, str]:
    """Each model's state from its stack's status URL: DOWN when unreachable, NOT LOADED on an error
    status, else what `state` reads from the JSON answer."""
    import httpx

    states: dict[str, str] = {}
    with httpx.Client(timeout=timeout, headers=headers or {}) as client:
        for name in models:
            try:
                r = client.get(url(name))
            except httpx.HTTPError:
                states[name] = "DOWN"
                continue
            states[name] = state(r.json()) if r.status_code == 200 else f"NOT LOADED ({r.status_code})"
    return states


def ready_when_all(states: Callable[[], dict[str, str]]) -> Callable[[], tuple[bool, str]]:
    """A Launch.ready check: every model READY; the detail lists each model's state."""

    def ready() -> tuple[bool, str]:
        current = states()
        return all(s == "READY" for s in current.values()), ", ".join(f"{n} {s}" for n, s in current.items())

    return ready


def ready_when_listening(host: str, ports: list[int]) -> Callable[[], tuple[bool, str]]:
    """A Launch.ready check for a proxy: every port accepts connections (it needs no model loaded)."""

    def ready() -> tuple[bool, str]:
        waiting = [p for p in ports if not port_in_use(host, p)]
        return not waiting, "listening" if not waiting else f"waiting for port(s) {', '.join(map(str, waiting))}"

    return ready


def _resolve(cmd0: str, env: dict[str, str], cwd: Path | None) -> str | None:
    """The executable the shim will run, checked before starting, so a missing one is a clear
    `cannot start` message rather than a service exiting with 127."""
    if os.sep in cmd0:
        full = Path(cwd or ".") / cmd0
        return str(full) if os.access(full, os.X_OK) and full.is_file() else None
    return shutil.which(cmd0, path=env.get("PATH", os.defpath))


def tail(path: str | Path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Supervisor:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.state_path = run_dir / STATE_FILE

    # state ---------------------------------------------------------------
    def load(self) -> dict[str, Running]:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return {name: Running(**svc) for name, svc in data.get("services", {}).items()}

    def save(self, services: dict[str, Running], log_dir: Path | None = None) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        current = {}
        try:
            current = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            pass
        data = {"services": {n: asdict(s) for n, s in services.items()}, "log_dir": str(log_dir or current.get("log_dir", ""))}
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.state_path)

    def log_dir(self) -> Path | None:
        try:
            value = json.loads(self.state_path.read_text()).get("log_dir")
        except (OSError, ValueError):
            return None
        return Path(value) if value else None

    def running(self) -> dict[str, Running]:
        return {n: s for n, s in self.load().items() if group_alive(s.pgid)}

    # start and stop --------------------------------------------------------
    def start(self, launches: list[Launch], timeout: float, log_dir: Path | None = None, on_wait: Callable[[str], None] | None = None) -> dict[str, Running]:
        """Start every launch, wait until each is ready; on any failure stop what this call started and raise."""
        existing = self.running()
        clash = [l.name for l in launches if l.name in existing]
        if clash:
            raise SupervisorError(f"already running: {', '.join(clash)} (see `twinserve status`, or `twinserve down`)")
        for launch in launches:
            host = "127.0.0.1"
            busy = [p for p in launch.ports if not port_bindable(host, p)]
            if busy:
                raise SupervisorError(f"{launch.name}: port(s) {', '.join(map(str, busy))} already in use; free them or choose others (see README, Configuration)")
        log_dir = log_dir or self.run_dir / "logs" / time.strftime("%Y%m%d-%H%M%S")
        log_dir.mkdir(parents=True, exist_ok=True)
        started: dict[str, Running] = dict(existing)
        procs: dict[str, subprocess.Popen] = {}
        try:
            for launch in launches:
                log_path = log_dir / f"{launch.name}.log"
                env = {**os.environ, **launch.env}
                if _resolve(launch.cmd[0], env, launch.cwd) is None:
                    raise SupervisorError(f"{launch.name}: cannot start {launch.cmd[0]}: not found or not executable")
                env[logcap.CAPTURED_CMD] = json.dumps(launch.cmd)
                log = open(log_path, "ab")  # only the shim's own failures land here directly
                try:
                    proc = subprocess.Popen(logcap.command(log_path.resolve(), int(launch.log_max_mb * 1024 * 1024)), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=launch.cwd, start_new_session=True)
                except OSError as exc:
                    raise SupervisorError(f"{launch.name}: cannot start {launch.cmd[0]}: {exc}") from None
                finally:
                    log.close()
                procs[launch.name] = proc
                started[launch.name] = Running(launch.name, proc.pid, proc.pid, launch.cmd, str(log_path), launch.urls, launch.implementation, time.time(), launch.extra)
                self.save(started, log_dir)
            self._wait(launches, procs, timeout, on_wait)
        except BaseException:
            for name in procs:
                stop_group(started[name].pgid)
                started.pop(name, None)
            self.save(started, log_dir) if started else self.clear()
            raise
        return started

    def _wait(self, launches: list[Launch], procs: dict[str, subprocess.Popen], timeout: float, on_wait: Callable[[str], None] | None) -> None:
        deadline = time.monotonic() + timeout
        pending = {l.name: l for l in launches}
        details: dict[str, str] = {}
        while pending:
            for name, launch in list(pending.items()):
                proc = procs[name]
                if proc.poll() is not None:
                    log = self.load().get(name)
                    _drained(proc.pid)
                    raise SupervisorError(f"{name} exited with code {proc.returncode} while starting; last log lines:\n{tail(log.log) if log else ''}")
                ok, detail = launch.ready()
                details[name] = detail
                if ok:
                    del pending[name]
            if not pending:
                return
            if on_wait:
                on_wait("; ".join(f"{n}: {details.get(n, 'starting')}" for n in pending))
            if time.monotonic() > deadline:
                raise SupervisorError("not ready after {:.0f} s: {}".format(timeout, "; ".join(f"{n} ({details.get(n, 'starting')})" for n in pending)))
            time.sleep(0.5)

    def stop(self, names: list[str] | None = None) -> list[str]:
        services = self.load()
        stopped = []
        for name, svc in list(services.items()):
            if names and name not in names:
                continue
            stop_group(svc.pgid)
            tmp = svc.extra.get("temp_dir")
            if tmp:
                for leftover in Path(tmp).glob(".*"):
                    if leftover.name.startswith((".model_server.pid", ".ts.sock")):
                        leftover.unlink(missing_ok=True)
            services.pop(name)
            stopped.append(name)
        if services:
            self.save(services)
        else:
            self.clear()
        return stopped

    def clear(self) -> None:
        self.state_path.unlink(missing_ok=True)
