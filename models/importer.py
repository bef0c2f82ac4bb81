"""`twinserve import`: your PyTorch artifact and SavedModel become one manifest entry, served by both stacks.

What can be read from the artifacts is read (the SavedModel's signature gives
input and output names, dtypes and per-instance shapes; the PyTorch file's kind
gives its format); what cannot is asked for, by name. The entry is validated,
the artifacts are built and parity is measured in a staging folder (see
models/export.py), and only then is the entry appended to the manifest: a
failure leaves the manifest and the model store as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from models.spec import DTYPES, ManifestError, ModelSpec, TensorSpec, check_name, load_manifest, parse_manifest

TF_DTYPES = {"float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool", "string"}


class ImportProblem(ValueError):
    """What the user must give or fix, in one message."""


@dataclass
class Inferred:
    """What import read from the artifacts, and what it could not."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    pytorch: dict[str, str]
    notes: list[str] = field(default_factory=list)


def savedmodel_signature(path: Path, signature: str) -> tuple[list[TensorSpec], list[TensorSpec], list[str]]:
    """Names, dtypes and per-instance shapes from the signature; a leading dimension of any size is the batch."""
    import tensorflow as tf

    if not (path / "saved_model.pb").is_file():
        raise ImportProblem(f"{path} is not a SavedModel directory (no saved_model.pb)")
    loaded = tf.saved_model.load(str(path))
    if signature not in loaded.signatures:
        raise ImportProblem(f"the SavedModel has no signature {signature!r}; it has {sorted(loaded.signatures)} (choose with --signature)")
    fn = loaded.signatures[signature]
    notes: list[str] = []

    def describe(name: str, spec: Any, where: str) -> TensorSpec:
        dtype = spec.dtype.name
        if dtype not in TF_DTYPES:
            raise ImportProblem(f"signature {where} {name!r} has dtype {dtype}, which twinserve does not serve (supported: {', '.join(sorted(TF_DTYPES))})")
        dims = spec.shape.as_list() if spec.shape.rank is not None else None
        if dims is None:
            raise ImportProblem(f"signature {where} {name!r} has an unknown rank: give the SavedModel a signature with a fixed rank")
        if not dims or dims[0] is not None:
            notes.append(f"{where} {name!r}: leading dimension {dims[0] if dims else 'none'} is taken as the batch (TF Serving batches along it)")
        shape = tuple(-1 if d is None else int(d) for d in dims[1:])
        return TensorSpec(name, "bytes" if dtype == "string" else dtype, shape)

    _, kwargs = fn.structured_input_signature
    inputs = [describe(name, spec, "input") for name, spec in sorted(kwargs.items())]
    outputs = [describe(name, spec, "output") for name, spec in sorted(fn.structured_outputs.items())]
    return inputs, outputs, notes


def pytorch_side(path: Path, model_file: Path | None, class_name: str | None, unpack_to: Path) -> tuple[dict[str, str], list[str]]:
    """The PyTorch artifact's format: a torch.export program (.pt2), TorchScript, a state dict (with
    its model file and class), or a TorchServe archive (.mar: its model file and weights are taken out)."""
    import torch

    if not path.is_file():
        raise ImportProblem(f"PyTorch artifact {path} is not a file")
    notes: list[str] = []
    if path.suffix == ".mar":
        try:
            with zipfile.ZipFile(path) as zf:
                meta = json.loads(zf.read("MAR-INF/MANIFEST.json"))["model"]
                unpack_to.mkdir(parents=True, exist_ok=True)
                zf.extractall(unpack_to)
        except (zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise ImportProblem(f"{path} is not a TorchServe archive (a zip with MAR-INF/MANIFEST.json): {exc}") from None
        notes.append(f"the archive's handler ({meta.get('handler')}) is replaced by twinserve's generic handler, which speaks TF Serving's JSON")
        path = unpack_to / meta["serializedFile"]
        if meta.get("modelFile"):
            model_file = model_file or unpack_to / meta["modelFile"]
        packed = unpack_to / "spec.json"  # an archive twinserve packed names its class
        if packed.is_file() and not class_name:
            class_name = json.loads(packed.read_text()).get("pytorch", {}).get("class")
    if path.suffix == ".pt2":
        return {"format": "export", "weights": str(path)}, notes
    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
        return {"format": "torchscript", "weights": str(path), "args": ",".join(a.name for a in scripted.forward.schema.arguments[1:])}, notes
    except Exception:  # not TorchScript: a state dict, which needs its module file and class
        pass
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ImportProblem(f"{path} is not a torch.export program (.pt2), TorchScript or a state dict: {exc}") from None
    if not isinstance(state, dict):
        raise ImportProblem(f"{path} holds a {type(state).__name__}, not a state dict: save model.state_dict(), TorchScript or a torch.export program")
    missing = [flag for flag, value in (("--model-file", model_file), ("--class", class_name)) if not value]
    if missing:
        raise ImportProblem(f"{path} is a state dict: twinserve cannot infer the module that loads it; give {' and '.join(missing)} (the Python file defining the model and the class to build, with no arguments)")
    return {"format": "state_dict", "weights": str(path), "model_file": str(model_file), "class": str(class_name), "args": ",".join(forward_args(Path(str(model_file)), str(class_name)))}, notes


def forward_args(model_file: Path, class_name: str) -> list[str]:
    """The names of the class's forward() parameters, to pass the inputs in that order."""
    import importlib.util
    import inspect

    loader = importlib.util.spec_from_file_location(f"twinserve_import_{model_file.stem}", model_file)
    if loader is None:
        raise ImportProblem(f"--model-file {model_file} is not a Python file")
    module = importlib.util.module_from_spec(loader)
    try:
        loader.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:
        raise ImportProblem(f"--model-file {model_file} fails to import: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ImportProblem(f"--model-file {model_file} has no class {class_name!r}")
    params = list(inspect.signature(cls.forward).parameters.values())[1:]
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def order_inputs(inputs: list[TensorSpec], args: str, notes: list[str]) -> list[TensorSpec]:
    """The inputs in forward()'s order when its parameter names are the signature's names; else
    the signature's (sorted) order, said in a note, since that is the order they are passed in."""
    names = [a for a in args.split(",") if a]
    by_name = {t.name: t for t in inputs}
    if names[: len(inputs)] and set(names[: len(inputs)]) == set(by_name):
        return [by_name[n] for n in names[: len(inputs)]]
    if len(inputs) > 1:
        notes.append(f"forward() parameters {names or '(unknown)'} do not name the signature's inputs: they are passed positionally in the order {[t.name for t in inputs]}")
    return inputs


def relative(path: str, base: Path) -> str:
    p = Path(path).resolve()
    try:
        return str(p.relative_to(base.resolve()))
    except ValueError:
        return str(p)


def entry(name: str, inferred: Inferred, savedmodel: Path, signature: str, base: Path, options: dict[str, Any]) -> dict[str, Any]:
    """The manifest table for the model, paths relative to the manifest's folder."""
    pytorch = dict(inferred.pytorch)
    for key in ("weights", "model_file"):
        if key in pytorch:
            pytorch[key] = relative(pytorch[key], base)
    out: dict[str, Any] = {"description": options.get("description") or f"imported {name}"}
    for key in ("labels", "max_batch", "tolerance", "samples"):
        if options.get(key) not in (None, [], ""):
            out[key] = relative(options[key], base) if key == "samples" else options[key]
    out["pytorch"] = pytorch
    out["tensorflow"] = {"savedmodel": relative(str(savedmodel), base), "signature": signature}

    def table(t: TensorSpec) -> dict[str, Any]:
        return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}

    out["inputs"] = [table(t) for t in inferred.inputs]
    out["outputs"] = [table(t) for t in inferred.outputs]
    return out


def import_model(
    name: str,
    pytorch: Path,
    savedmodel: Path,
    manifest: Path,
    build: Path,
    signature: str = "serving_default",
    model_file: Path | None = None,
    class_name: str | None = None,
    options: dict[str, Any] | None = None,
    seed: int = 0,
) -> tuple[dict, Inferred]:
    """Infer, validate, build and prove parity, then append the entry. Raises ImportProblem,
    ManifestError (naming the entry and the field), ExportError or ParityError."""
    from models.export import export_model

    options = options or {}
    check_name(name)  # before the name is used in any path
    base = manifest.resolve().parent
    existing = load_manifest(manifest) if manifest.exists() else {}
    if name in existing:
        raise ImportProblem(f"model {name!r} is already in {manifest}: choose another --name, or remove its [models.{name}] table first")
    inputs, outputs, notes = savedmodel_signature(savedmodel, signature)
    unpacked = base / "imports" / name
    try:
        side, torch_notes = pytorch_side(pytorch, model_file, class_name, unpacked)
        notes += torch_notes
        inputs = order_inputs(inputs, side.pop("args", ""), notes)
        inferred = Inferred(inputs, outputs, side, notes)
        if any(t.is_bytes for t in inputs) and not options.get("samples"):
            raise ImportProblem(f"input {next(t.name for t in inputs if t.is_bytes)!r} takes bytes: give --samples, an .npz of real inputs (one array per input name)")
        table = entry(name, inferred, savedmodel, signature, base, options)
        spec: ModelSpec = parse_manifest({"models": {name: table}}, base)[name]
        result = export_model(name, build, seed=seed, force=True, spec=spec)
    except BaseException:
        shutil.rmtree(unpacked, ignore_errors=True)  # an archive taken apart for nothing
        raise
    text = manifest.read_text() if manifest.exists() else ""
    addition = tomli_w.dumps({"models": {name: table}})
    # written beside and renamed over: a crash never leaves a truncated manifest
    partial = manifest.with_name(f".{manifest.name}.{os.getpid()}.tmp")
    partial.write_text(text + ("\n" if text and not text.endswith("\n\n") else "") + f"# imported by `twinserve import`\n{addition}")
    os.replace(partial, manifest)
    return result, inferred


__all__ = ["DTYPES", "ImportProblem", "Inferred", "ManifestError", "import_model", "savedmodel_signature"]
