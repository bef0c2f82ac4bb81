"""The native stack as a whole: which services, started in which order, and their status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from twinserve import supervisor
from twinserve.supervisor import Launch, Running, Supervisor
from twinserve.settings import StackSettings

SERVICES = ("torchserve", "tfserving", "kserve", "gateway")  # every service `up` knows, stacks first
RECORD = "stack.json"  # the settings `up` started the stack with, beside the supervisor's state file


def launcher(name: str):  # type: ignore[no-untyped-def]
    """The launcher module of one service (twinserve/launchers/<name>.py): launch() and model_states()."""
    import importlib

    return importlib.import_module(f"twinserve.launchers.{name}")


def recorded(settings: StackSettings) -> StackSettings:
    """The settings the running stack was started with, when `up` recorded them: `status` and `down`
    describe what runs (its models, ports, token authorisation), whatever this shell's environment says."""
    try:
        data = json.loads((settings.run_dir / RECORD).read_text())
    except (OSError, ValueError):
        return settings
    return StackSettings(**{**data, "run_dir": settings.run_dir})


def default_services(settings: StackSettings) -> tuple[str, ...]:
    """The stacks TWINSERVE_STACKS names, then the gateway."""
    return (*[n for n in SERVICES if n in settings.stack_list], "gateway")


def launches(settings: StackSettings, names: tuple[str, ...] | None = None, gateway: dict[str, str] | None = None) -> list[Launch]:
    names = default_services(settings) if names is None else names
    out = []
    for name in SERVICES:
        if name not in names:
            continue
        if name == "gateway":
            out.append(launcher(name).launch(settings, settings.run_dir, gateway))
        else:
            out.append(launcher(name).launch(settings, settings.run_dir))
    return out


def up(settings: StackSettings, names: tuple[str, ...] | None = None, on_wait: Callable[[str], None] | None = None, gateway: dict[str, str] | None = None) -> dict[str, Running]:
    """Start the named services; `gateway` overrides gateway settings by field name."""
    names = default_services(settings) if names is None else names
    sup = Supervisor(settings.run_dir)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    (settings.run_dir / RECORD).write_text(settings.model_dump_json())
    backends = [l for l in launches(settings, tuple(n for n in names if n != "gateway"))]
    started = sup.start(backends, settings.startup_timeout_s, on_wait=on_wait)
    if "gateway" in names:
        try:
            started = sup.start(launches(settings, ("gateway",), gateway), settings.startup_timeout_s, log_dir=sup.log_dir(), on_wait=on_wait)
        except BaseException:
            sup.stop([l.name for l in backends])
            raise
    return started


def down(settings: StackSettings, names: list[str] | None = None) -> list[str]:
    """Stop the named services (all by default); TorchServe's key file goes with TorchServe, and the
    record of the stack's settings with the last service."""
    sup = Supervisor(settings.run_dir)
    stopped = sup.stop(names)
    if "torchserve" in stopped or names is None:
        from twinserve.launchers.torchserve import key_file

        key_file(settings).unlink(missing_ok=True)
    if not sup.running():
        (settings.run_dir / RECORD).unlink(missing_ok=True)
    return stopped


def status(settings: StackSettings) -> list[dict]:
    """One row per known service: running or not, pid, urls, implementation, model states."""
    settings = recorded(settings)
    services = Supervisor(settings.run_dir).load()
    rows = []
    for name in SERVICES:
        svc = services.get(name)
        if svc is None and name != "gateway" and name not in settings.stack_list:
            continue  # a stack left out by TWINSERVE_STACKS and not running
        alive = bool(svc and supervisor.group_alive(svc.pgid))
        models = launcher(name).model_states(settings, timeout=1.0)
        if name == "tfserving" and svc is None:
            implementation = launcher(name).choose(settings)[1] + " (would run)"
        else:
            implementation = svc.implementation if svc else ""
        rows.append(
            {
                "service": name,
                "running": alive,
                "pid": svc.pid if svc else None,
                "urls": svc.urls if svc else {},
                "implementation": implementation,
                "models": models,
                "log": svc.log if svc else None,
            }
        )
    return rows


def log_dir(settings: StackSettings) -> Path | None:
    return Supervisor(settings.run_dir).log_dir()
