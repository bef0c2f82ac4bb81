"""The reference proxies a bench reads the gateway against: nginx and the bare-Python floor.

`twinserve bench --overhead` starts both in front of both stacks (one loopback port per stack each),
loads them like the gateway in the same run, and stops them when the bench ends, failed or not.
They are recorded in the run's state file like any native service, so even a bench killed outright
leaves nothing that `twinserve down` does not stop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from loadtests.targets import REFERENCE_FRONTS, STACKS, TARGETS, reference_target
from twinserve.settings import StackSettings
from twinserve.supervisor import Launch, Supervisor, free_port, group_alive, stop_group

STARTUP_TIMEOUT_S = 30.0


@dataclass
class ReferenceProxies:
    urls: dict[str, str] = field(default_factory=dict)  # target name (its url_key) → base URL
    pgids: dict[str, int] = field(default_factory=dict)  # front → process group, for the CPU monitors
    info: dict[str, dict] = field(default_factory=dict)  # front → implementation, pid/pgid, routes (for the report)


def fronts_of(targets: list[str]) -> list[str]:
    """The reference proxies that some of `targets` go through."""
    return [f for f in REFERENCE_FRONTS if any(TARGETS[t].front == f for t in targets)]


def start(settings: StackSettings, upstreams: dict[str, str], fronts: list[str], say: Callable[[str], None] = print) -> ReferenceProxies:
    """Start the named proxies on free loopback ports in front of `upstreams` (stack → base URL).

    On failure the supervisor has already stopped whatever this call started.
    """
    from twinserve.launchers import floor, nginx

    sup = Supervisor(settings.run_dir)
    log_dir = sup.log_dir() or settings.run_dir / "logs" / time.strftime("%Y%m%d-%H%M%S")
    log_dir.mkdir(parents=True, exist_ok=True)
    host = settings.host
    out = ReferenceProxies()
    launches: list[Launch] = []
    for front in fronts:
        routes = {stack: (free_port(host), upstreams[stack]) for stack in STACKS}
        out.urls.update({reference_target(front, stack): f"http://{host}:{port}" for stack, (port, _) in routes.items()})
        if front == "nginx":
            launches.append(nginx.launch(host, routes, settings.run_dir, log_dir, nginx.ensure(say)))
        else:
            launches.append(floor.launch(host, routes))
    for launch in launches:
        launch.log_max_mb = settings.log_max_mb
    running = sup.start(launches, STARTUP_TIMEOUT_S, log_dir=log_dir)
    for launch in launches:
        svc = running[launch.name]
        out.pgids[launch.name] = svc.pgid
        out.info[launch.name] = {"implementation": launch.implementation, "pid": svc.pid, "pgid": svc.pgid, "ports": launch.ports, "routes": launch.urls, "log": svc.log, **launch.extra}
    return out


def stop(settings: StackSettings, proxies: ReferenceProxies) -> list[str]:
    """Stop exactly the proxies `start` started (an empty list would ask the supervisor to stop everything)."""
    names = list(proxies.pgids)
    stopped = Supervisor(settings.run_dir).stop(names) if names else []
    for pgid in proxies.pgids.values():  # even if the state file no longer lists them
        if group_alive(pgid):
            stop_group(pgid)
    return stopped
