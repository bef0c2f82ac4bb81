"""`twinserve up | status | down | gateway`: the native stack from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys

from twinserve.console import console
from rich.table import Table

from twinserve.settings import StackSettings



def _settings(args: argparse.Namespace) -> StackSettings:
    overrides = {}
    if getattr(args, "models", None):
        overrides["models"] = ",".join(args.models)
    stacks = [n for n in getattr(args, "services", None) or [] if n != "gateway"]
    if stacks:
        overrides["stacks"] = ",".join(stacks)
    if getattr(args, "tf_backend", None):
        overrides["tf_backend"] = args.tf_backend
    return StackSettings(**overrides)


def ensure_artifacts(settings: StackSettings) -> None:
    from models.export import export_model

    for name in settings.model_list:
        with console.status(f"checking artifacts of {name} (exporting if needed)..."):
            export_model(name, settings.build_dir)


def cmd_up(args: argparse.Namespace) -> int:
    from twinserve import stack
    from twinserve.supervisor import SupervisorError

    settings = _settings(args)
    names = tuple(args.services) if args.services else None
    try:
        if not args.no_export:
            ensure_artifacts(settings)
        with console.status("starting...") as status:
            stack.up(settings, names, on_wait=lambda msg: status.update(f"waiting: {msg}"))
    except (SupervisorError, FileNotFoundError) as exc:
        console.print(f"[red]twinserve up failed:[/red] {exc}")
        return 1
    print_status(settings)
    console.print(f"logs: {stack.log_dir(settings)}   stop with: twinserve down")
    return 0


def print_status(settings: StackSettings, as_json: bool = False) -> int:
    from twinserve import stack

    rows = stack.status(settings)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="twinserve (native)")
    for col in ("service", "state", "pid", "implementation", "address", "models"):
        table.add_column(col, overflow="fold")
    for row in rows:
        state = "[green]running[/green]" if row["running"] else "[dim]stopped[/dim]"
        models = "\n".join(f"{m}: {s}" for m, s in row["models"].items()) if row["running"] else ""
        urls = "\n".join(f"{k}: {v}" for k, v in row["urls"].items())
        table.add_row(row["service"], state, str(row["pid"] or ""), row["implementation"], urls, models)
    console.print(table)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    return print_status(_settings(args), args.json)


def cmd_down(args: argparse.Namespace) -> int:
    from twinserve import stack

    stopped = stack.down(_settings(args))
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    """Run the gateway alone, in the foreground, against stacks that are already up."""
    from twinserve.launchers.gateway import command, gateway_env

    settings = _settings(args)
    env = {**gateway_env(settings), **{k: v for k, v in os.environ.items() if k.startswith("TWINSERVE_GATEWAY_")}}
    os.environ.update(env)
    os.execv(sys.executable, command())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from twinserve.cli import models_arg

    from twinserve.stack import SERVICES

    p = sub.add_parser("up", help="start TorchServe, the TF backend, the KServe stack (ONNX Runtime) and the gateway natively; return when ready")
    p.add_argument("--models", type=models_arg(), help="comma-separated models (default: TWINSERVE_MODELS or all)")
    p.add_argument("--services", nargs="+", choices=SERVICES, help="which services (default: the stacks TWINSERVE_STACKS names, and the gateway)")
    p.add_argument("--tf-backend", choices=("auto", "binary", "compat"), help="which TF backend (default: auto)")
    p.add_argument("--no-export", action="store_true", help="do not export missing artifacts first")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("status", help="each service: running or not, pid, implementation, address, model states")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("down", help="stop everything `up` started")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("gateway", help="run the gateway alone in the foreground (backends already up)")
    p.set_defaults(func=cmd_gateway)

    from twinserve import measure as bench_cli

    bench_cli.register(sub)
