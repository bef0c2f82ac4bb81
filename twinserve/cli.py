"""The `twinserve` command: a thin dispatcher to models/, services/, gateway/ and loadtests/.

Each subcommand imports what it needs when it runs, so `twinserve status` does
not pay for TensorFlow and `twinserve export` does not start servers.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Iterable
from pathlib import Path


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


def model_names() -> list[str]:
    from models.spec import MODEL_NAMES

    return list(MODEL_NAMES)


def models_arg() -> Callable[[str], list[str]]:
    return choices_list(model_names(), "model")


def cmd_export(args: argparse.Namespace) -> int:
    from rich.table import Table

    from models.export import ExportError, export_model
    from models.parity import ParityError
    from models.samples import SampleError

    from twinserve.console import console

    table = Table(title=f"exports in {args.out}")
    for col in ("model", "weights", "held-out acc (torch / tf)", "max |diff|", "argmax agree", "status"):
        table.add_column(col)
    failed = False
    for name in args.models:
        with console.status(f"exporting {name}..."):
            try:
                result = export_model(name, Path(args.out), seed=args.seed, force=args.force)
            except (ExportError, ParityError, SampleError) as exc:
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


def cmd_import(args: argparse.Namespace) -> int:
    """Your model pair into the manifest: what was read, what was given, parity, where it went."""
    from models.export import ExportError
    from models.importer import ImportProblem, import_model
    from models.samples import SampleError
    from models.parity import ParityError
    from models.spec import ManifestError, manifest_path

    from twinserve.console import console

    manifest = manifest_path()
    options = {"description": args.description, "labels": [x.strip() for x in args.labels.split(",")] if args.labels else None, "max_batch": args.max_batch, "tolerance": args.tolerance, "samples": args.samples}
    try:
        with console.status(f"importing {args.name}: reading the artifacts, packing, measuring parity..."):
            result, inferred = import_model(
                args.name, Path(args.pytorch), Path(args.savedmodel), manifest, Path(args.out),
                signature=args.signature, model_file=Path(args.model_file) if args.model_file else None,
                class_name=args.class_name, options=options,
            )
    except (ImportProblem, ManifestError, ExportError, SampleError) as exc:
        console.print(f"[red]import failed[/red]: {exc}")
        return 2
    except ParityError as exc:
        console.print(f"[red]import failed, parity[/red]: {exc}\nnothing was added to {manifest} or the model store")
        return 1
    except Exception as exc:  # the user's model failed to load or run: say how, in one line
        console.print(f"[red]import failed[/red] while loading or running your model: {type(exc).__name__}: {str(exc).strip()[:500]}\nnothing was added to {manifest} or the model store")
        return 2
    console.print(f"[bold]{args.name}[/bold]: PyTorch {inferred.pytorch['format']}, SavedModel signature {args.signature!r}")
    for kind, tensors in (("input", inferred.inputs), ("output", inferred.outputs)):
        for t in tensors:
            console.print(f"  {kind:6} {t.name}: {t.dtype} {t.shown()} per instance (read from the signature)")
    for note in inferred.notes:
        console.print(f"  note: {note}")
    p = result["parity"]
    per = ", ".join(f"{n} max |diff| {o['max_abs_diff']:.2e}" for n, o in p["outputs"].items())
    console.print(f"parity ✔ over {p['inputs']} inputs ({'samples ' + args.samples if args.samples else 'generated from the spec'}): {per} (tolerance {p['tolerance']:g})")
    console.print(f"added \\[models.{args.name}] to {manifest}; artifacts: {Path(args.out) / result['mar']}, {Path(args.out) / result['savedmodel']}")
    console.print(f"serve it: twinserve{' --manifest ' + str(manifest) if os.environ.get('TWINSERVE_MANIFEST') else ''} up --models {args.name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from models.export import DEFAULT_BUILD, DEFAULT_SEED

    parser = argparse.ArgumentParser(prog="twinserve", description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", help="the model manifest (default: $TWINSERVE_MANIFEST, else twinserve.toml at the project root)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="train or seed the models, write the .mar and SavedModel, prove parity")
    p.add_argument("--models", type=models_arg(), default=model_names(), help="comma-separated (default: every model of the manifest)")
    p.add_argument("--out", default=str(DEFAULT_BUILD), help="build folder (default: models/build)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--force", action="store_true", help="rebuild even when the artifacts are up to date")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="add your own PyTorch + TensorFlow model pair to the manifest, packed for both stacks, parity proven")
    p.add_argument("--name", required=True, help="the model's name in URLs (letters, digits, '_', '-')")
    p.add_argument("--pytorch", required=True, help="a state dict (.pt; with --model-file and --class), TorchScript (.pt), a torch.export program (.pt2) or a TorchServe archive (.mar)")
    p.add_argument("--savedmodel", required=True, help="the SavedModel directory (the one holding saved_model.pb)")
    p.add_argument("--signature", default="serving_default", help="the SavedModel signature to serve (default: serving_default)")
    p.add_argument("--model-file", help="state dict only: the Python file defining the model")
    p.add_argument("--class", dest="class_name", help="state dict only: the class in --model-file, built with no arguments")
    p.add_argument("--samples", help="an .npz of real inputs, one array per input name (default: generated from the spec; required for bytes inputs)")
    p.add_argument("--labels", help="comma-separated class names, when the first output is a classifier's probabilities")
    p.add_argument("--max-batch", type=int, default=None, help="instances per request (default: 64)")
    p.add_argument("--tolerance", type=float, default=None, help="parity: largest absolute difference allowed per output (default: 1e-4)")
    p.add_argument("--description", default="", help="one line shown in /v1/models and the report")
    p.add_argument("--out", default=str(DEFAULT_BUILD), help="build folder (default: models/build)")
    p.set_defaults(func=cmd_import)

    from twinserve import commands

    commands.register(sub)
    from twinserve import reports

    reports.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from gateway.settings import describe_errors

    argv = sys.argv[1:] if argv is None else argv
    manifest = manifest_flag(argv)
    if manifest:  # before models.spec reads it; every process started from here inherits it
        os.environ["TWINSERVE_MANIFEST"] = str(Path(manifest).resolve())
    try:
        from models.spec import ManifestError  # reads the manifest
    except ValueError as exc:  # a ManifestError raised while reading it
        print(f"twinserve: bad manifest: {exc}", file=sys.stderr)
        return 2
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except ManifestError as exc:  # names the entry and the field
        print(f"twinserve: bad manifest: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except ValidationError as exc:  # a bad TWINSERVE_* value: one line naming it, not a traceback
        prefix = "TWINSERVE_GATEWAY_" if exc.title == "GatewaySettings" else "TWINSERVE_"
        print(f"twinserve: bad setting: {describe_errors(exc, prefix)}", file=sys.stderr)
        return 2


def manifest_flag(argv: list[str]) -> str | None:
    """--manifest's value, read before the parser is built (the parser's model choices come from it)."""
    for i, arg in enumerate(argv):
        if arg == "--manifest" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--manifest="):
            return arg.split("=", 1)[1]
    return None


if __name__ == "__main__":
    sys.exit(main())
