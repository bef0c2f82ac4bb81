"""The `twinserve` command: a thin dispatcher to models/, services/, gateway/ and loadtests/.

Each subcommand imports what it needs when it runs, so `twinserve status` does
not pay for TensorFlow and `twinserve export` does not start servers.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Iterable
from pathlib import Path

from models.spec import MODEL_NAMES


def choices_list(choices: Iterable[str], what: str) -> Callable[[str], list[str]]:
    """An argparse type for a comma-separated list drawn from `choices`."""
    allowed = list(choices)

    def parse(value: str) -> list[str]:
        names = [v.strip() for v in value.split(",") if v.strip()]
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {what}(s) {', '.join(unknown)}; choose from {', '.join(allowed)}")
        return names

    return parse


_models = choices_list(MODEL_NAMES, "model")


def cmd_export(args: argparse.Namespace) -> int:
    from rich.table import Table

    from models.export import ExportError, export_model
    from models.parity import ParityError

    from twinserve.console import console

    table = Table(title=f"exports in {args.out}")
    for col in ("model", "weights", "held-out acc (torch / tf)", "max |diff|", "argmax agree", "status"):
        table.add_column(col)
    failed = False
    for name in args.models:
        with console.status(f"exporting {name}..."):
            try:
                result = export_model(name, Path(args.out), seed=args.seed, force=args.force)
            except (ExportError, ParityError) as exc:
                console.print(f"[red]export failed[/red]: {exc}")
                failed = True
                continue
        p = result["parity"]
        acc = p.get("accuracy")
        acc_text = f"{acc['torchserve_export']:.4f} / {acc['tensorflow_export']:.4f}" if acc else "n/a (synthetic)"
        weights = "seeded random (synthetic)" if result["synthetic"] else "trained here"
        table.add_row(name, weights, acc_text, f"{p['max_abs_diff']:.2e}", f"{p['argmax_agreement']:.4f}", "cached" if result["cached"] else "built")
    console.print(table)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    from models.export import DEFAULT_BUILD, DEFAULT_SEED

    parser = argparse.ArgumentParser(prog="twinserve", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="train or seed the models, write the .mar and SavedModel, prove parity")
    p.add_argument("--models", type=_models, default=list(MODEL_NAMES), help="comma-separated (default: all)")
    p.add_argument("--out", default=str(DEFAULT_BUILD), help="build folder (default: models/build)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--force", action="store_true", help="rebuild even when the artifacts are up to date")
    p.set_defaults(func=cmd_export)

    from twinserve import commands

    commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from gateway.settings import describe_errors

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ValidationError as exc:  # a bad TWINSERVE_* value: one line naming it, not a traceback
        prefix = "TWINSERVE_GATEWAY_" if exc.title == "GatewaySettings" else "TWINSERVE_"
        print(f"twinserve: bad setting: {describe_errors(exc, prefix)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
