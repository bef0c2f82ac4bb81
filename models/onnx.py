"""The third stack's artifact: the archive's PyTorch model exported to ONNX, run by ONNX Runtime.

The model exported is the one the TorchServe archive holds, loaded by the handler's
own loader, so the ONNX graph and the TorchServe stack answer from the same
weights and code. torch.onnx's dynamo exporter (torch.export, then onnxscript)
writes it at one stated opset (bilinear resize through torch's own decomposition,
see `decompositions`), with the batch dimension (and every -1 dimension
of the spec) left dynamic; graph inputs and outputs carry the spec's names, order
and dtypes, and the outputs are exactly the handler's (the zoo classifiers'
softmax probabilities).

ONNX has no image decoder, so the zoo's image model is exported from its decoded
pixels on: one input `pixels`, uint8 [1, H, W, 3] (one RGB image, H and W any
size), through the zoo's own `prepare` (to float, bilinear resize, normalise) to
its probabilities. Its server decodes each image and runs the graph once per
image, as `load_onnx` does here for parity.

A model that cannot be exported (TorchScript, a bytes input other than the zoo's
image, an exporter failure) is not an error here: `export` says why in one
sentence, and the caller records it and goes on.
"""

from __future__ import annotations

import importlib
import logging
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    import torch

    from models.parity import ParityResult
    from models.spec import ModelSpec

# torch 2.13's dynamo exporter builds its graphs at opset 20 (torch.onnx._constants.ONNX_DEFAULT_OPSET):
# asking for it means no version conversion pass after export, and ONNX Runtime 1.32 runs opsets up to 23
OPSET = 20
EXPORTER = "torch.onnx.export(dynamo=True) of the torch.export program"
FILE = "model.onnx"
PIXELS = "pixels"  # the image model's graph input: one decoded RGB image
PIXELS_INPUT = f"{PIXELS} uint8 [1,H,W,3]"
EXAMPLE_ROWS = 2  # torch.export specialises a dimension traced at size 0 or 1: trace the batch at 2
EXAMPLE_PIXELS = (1, 300, 400, 3)  # any image size other than 1 or 224, so neither H nor W is specialised
REASON_CHARS = 300
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the exporter colours its messages
# ONNX TensorProto element type -> the spec's dtype
ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}


def takes_pixels(spec: "ModelSpec") -> bool:
    """The zoo's image model: encoded image bytes in the spec, decoded pixels in the ONNX graph."""
    return spec.zoo and len(spec.inputs) == 1 and spec.inputs[0].is_bytes


def unsupported(spec: "ModelSpec") -> str | None:
    """Why this model cannot be exported, known before trying; None when it may be."""
    if spec.pytorch.get("format") == "torchscript":
        return (
            "its PyTorch side is a TorchScript file, which torch.onnx's dynamo exporter cannot trace "
            "(it needs the Python module): import it as a state dict with its model file, or as a torch.export program, to serve it with ONNX Runtime"
        )
    if any(t.is_bytes for t in spec.inputs) and not takes_pixels(spec):
        name = next(t.name for t in spec.inputs if t.is_bytes)
        return f"its input {name!r} takes bytes, which an ONNX graph cannot take apart (only the zoo's image model is exported from decoded pixels)"
    return None


def describe_input(spec: "ModelSpec") -> str:
    """The graph's inputs as the manifest records them, e.g. "features float32 [N,4], tokens int64 [N,3]"."""
    if takes_pixels(spec):
        return PIXELS_INPUT
    return ", ".join(f"{t.name} {t.dtype} [N,{','.join('*' if d < 0 else str(d) for d in t.shape)}]".replace(",]", "]") for t in spec.inputs)


def wrap(spec: "ModelSpec", model: Any) -> "torch.nn.Module":
    """The module torch.onnx traces: the archive's model with the handler's output convention (one
    tensor, a tuple in the spec's order, or a dict by name) made a tuple in the spec's order and
    dtypes; for the image model, decoded pixels through `prepare` to the probabilities."""
    import torch

    from models.export import handler_module

    in_order = handler_module().in_order  # the handler's own output rule, traced
    dtypes = [getattr(torch, t.numpy_dtype) for t in spec.outputs]
    names = [t.name for t in spec.outputs]

    class Pixels(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.model.logits(self.model.prepare(pixels[0])), dim=-1)

    class Outputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(v.to(d) for v, d in zip(in_order(self.model(*args), names), dtypes))

    wrapper = Pixels() if takes_pixels(spec) else Outputs()
    wrapper.training = False  # the wrapper alone: a torch.export program's module refuses train()/eval(), and the handler's loader has set the model's mode
    return wrapper


def examples(spec: "ModelSpec") -> tuple[tuple["torch.Tensor", ...], tuple[dict, ...]]:
    """Example inputs to trace with and their dynamic dimensions: the batch (shared by every input,
    as the handler requires) and each -1 dimension of the spec; H and W of the image model's pixels."""
    import torch
    from torch.export import Dim

    if takes_pixels(spec):
        return (torch.zeros(EXAMPLE_PIXELS, dtype=torch.uint8),), ({1: Dim("height", min=1), 2: Dim("width", min=1)},)
    batch = Dim("batch", min=1)
    args, dynamic = [], []
    for t in spec.inputs:
        shape = (EXAMPLE_ROWS, *(EXAMPLE_ROWS + 2 + i if d < 0 else d for i, d in enumerate(t.shape)))
        args.append(torch.zeros(shape, dtype=getattr(torch, t.numpy_dtype)))
        dims: dict[int, Any] = {0: batch}
        dims.update({1 + i: Dim(f"{t.name}_{i + 1}", min=1) for i, d in enumerate(t.shape) if d < 0})
        dynamic.append(dims)
    return tuple(args), tuple(dynamic)


def graph_problem(spec: "ModelSpec", proto: Any) -> str | None:
    """What in the written graph differs from the contract (names, order, dtypes, dynamic batch), or None."""
    want_in = [(PIXELS, "uint8")] if takes_pixels(spec) else [(t.name, t.dtype) for t in spec.inputs]
    want_out = [(t.name, t.dtype) for t in spec.outputs]
    got_in = [(v.name, ONNX_DTYPES.get(v.type.tensor_type.elem_type, str(v.type.tensor_type.elem_type))) for v in proto.graph.input]
    got_out = [(v.name, ONNX_DTYPES.get(v.type.tensor_type.elem_type, str(v.type.tensor_type.elem_type))) for v in proto.graph.output]
    if got_in != want_in:
        return f"the exported graph's inputs are {got_in}, not the spec's {want_in}"
    if got_out != want_out:
        return f"the exported graph's outputs are {got_out}, not the spec's {want_out}"
    if not takes_pixels(spec):
        fixed = [v.name for v in [*proto.graph.input, *proto.graph.output] if not v.type.tensor_type.shape.dim[0].dim_param]
        if fixed:
            return f"the exported graph fixes the batch dimension of {fixed}"
    return None


def name_dims(spec: "ModelSpec", proto: Any) -> None:
    """The exporter's symbols for the dynamic dimensions (s33, ...) renamed after what they are
    ("batch", "height", "width", "<input>_<dim>"), everywhere in the graph, for the metadata a
    server shows."""
    names: dict[str, str] = {}
    for v in proto.graph.input:
        for i, d in enumerate(v.type.tensor_type.shape.dim):
            if d.dim_param and d.dim_param not in names:
                names[d.dim_param] = ("height", "width")[i - 1] if takes_pixels(spec) and i in (1, 2) else "batch" if i == 0 else f"{v.name}_{i}"
    for v in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for d in v.type.tensor_type.shape.dim:
            if d.dim_param in names:
                d.dim_param = names[d.dim_param]


def opset_of(proto: Any) -> int:
    """The graph's default-domain ONNX opset, as ONNX Runtime reads it."""
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def decompositions() -> dict:
    """Operators traced through torch's own reference decomposition instead of their ONNX
    counterpart. Bilinear resize: ONNX's Resize maps an output pixel to (x + 0.5) / (224 / W) - 0.5
    where PyTorch's kernel computes (x + 0.5) * (W / 224) - 0.5; the two round differently in
    float32 and the image model's probabilities moved by 2.4e-4 (over the 1e-4 tolerance). The
    decomposition gathers and blends the four neighbours with PyTorch's coordinates: 1.2e-5."""
    import torch
    from torch._decomp import decomposition_table

    ops = (torch.ops.aten.upsample_bilinear2d.vec, torch.ops.aten.upsample_bilinear2d.default)
    return {op: decomposition_table[op] for op in ops if op in decomposition_table}


@contextmanager
def quiet() -> Iterator[None]:
    """The exporter's chatter off for the export's duration: a warning per torchvision operator it
    cannot register (torchvision is not installed beside the pinned torch) and pytree deprecations."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def sentence(exc: BaseException) -> str:
    """An exporter failure in one line: the innermost cause's type and the first line of its message
    (torch.onnx wraps torch.export's error in one that only names the step that failed)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    first = next((line.strip() for line in ANSI.sub("", str(exc)).splitlines() if line.strip()), "")
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


def export(spec: "ModelSpec", model: Any, folder: Path) -> dict:
    """Write folder/model.onnx from the archive's model (folder/spec.json is the caller's). Returns
    the manifest's "onnx" entry: exported true with the exporter, opset, graph input, size and
    seconds; or exported false with the reason, and no model.onnx written."""
    import onnx
    import torch

    reason = unsupported(spec)
    if reason:
        return {"exported": False, "reason": f"model {spec.name!r} is not exported to ONNX: {reason}."}
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE
    args, dynamic = examples(spec)
    names_in = [PIXELS] if takes_pixels(spec) else [t.name for t in spec.inputs]
    try:
        with torch.no_grad(), quiet():
            program = torch.export.export(wrap(spec, model), args, dynamic_shapes=dynamic if takes_pixels(spec) else (dynamic,))  # Outputs.forward(*args): one tuple of inputs
            program = program.run_decompositions(decompositions())
            torch.onnx.export(
                program,
                (),
                str(path),
                dynamo=True,
                opset_version=OPSET,
                input_names=names_in,
                output_names=[t.name for t in spec.outputs],
                external_data=False,  # one self-contained file: the weights inside model.onnx
                verbose=False,
            )
        proto = onnx.load(str(path))
        name_dims(spec, proto)
        onnx.save(proto, str(path))
        problem = graph_problem(spec, proto)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is recorded, not raised
        problem = f"torch.onnx's dynamo exporter failed ({sentence(exc)})"
    if problem:
        path.unlink(missing_ok=True)
        return {"exported": False, "reason": f"model {spec.name!r} is not exported to ONNX: {problem.rstrip('.')}."}
    return {
        "exported": True,
        "exporter": f"{EXPORTER}, torch {metadata.version('torch')}, onnxscript {metadata.version('onnxscript')}",
        "opset": opset_of(proto),
        "input": describe_input(spec),
        "file": FILE,
        "bytes": path.stat().st_size,
        "seconds": round(time.perf_counter() - started, 2),
    }


def session(path: Path) -> Any:
    """An ONNX Runtime session on the CPU, as the KServe server opens it."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def load_onnx(path: Path, spec: "ModelSpec") -> Callable[[Any], Any]:
    """model.onnx as a function, like export.py's load_savedmodel: named inputs -> named outputs, or
    (a single-input model) an array -> its first output. The image model's function takes encoded
    images, decodes each with the zoo's own decoder (Pillow, to RGB uint8) and runs the graph once
    per image, as its server does."""
    sess = session(path)
    names = [t.name for t in spec.outputs]

    if takes_pixels(spec):
        decode = importlib.import_module(f"models.zoo.{spec.name}")._decode

        def run_images(x: Any) -> Any:
            images = x[spec.input_name] if isinstance(x, dict) else x
            rows = [sess.run(names, {PIXELS: decode(data, i).numpy()[None]}) for i, data in enumerate(images)]
            values = {n: np.concatenate([r[k] for r in rows]) if rows else np.empty((0, *t.shape), np.float32) for k, (n, t) in enumerate(zip(names, spec.outputs))}
            return values if isinstance(x, dict) else values[spec.output_name]

        return run_images

    def run(x: Any) -> Any:
        inputs = x if isinstance(x, dict) else {spec.input_name: x}
        feeds = {t.name: np.ascontiguousarray(inputs[t.name], dtype=t.numpy_dtype) for t in spec.inputs}
        values = dict(zip(names, sess.run(names, feeds)))
        return values if isinstance(x, dict) else values[spec.output_name]

    return run


def measure(spec: "ModelSpec", path: Path, inputs: dict[str, Any], torch_out: dict[str, np.ndarray], tf_out: dict[str, np.ndarray]) -> tuple["ParityResult", dict[str, np.ndarray], dict]:
    """model.onnx as written, run by ONNX Runtime on the parity inputs, against the TorchServe
    archive's outputs (the gate, at the spec's tolerance); its distance to the SavedModel's is
    recorded beside it. Returns (result, ONNX Runtime's outputs, the parity report's "onnx" entry)."""
    from models import parity
    from models.export import batched

    import onnx

    ort_out = batched(load_onnx(path, spec), inputs)
    result = parity.compare_outputs(spec, torch_out, ort_out)
    vs_tf = parity.compare_outputs(spec, tf_out, ort_out)
    report = {
        "exported": True,
        **result.as_dict(),
        "max_abs_diff_vs_savedmodel": vs_tf.max_abs_diff,
        "opset": opset_of(onnx.load(str(path), load_external_data=False)),
        "onnxruntime": metadata.version("onnxruntime"),
        "input": describe_input(spec),
        "bytes": path.stat().st_size,
    }
    return result, ort_out, report


def check(report: dict, name: str) -> None:
    """Raise ParityError, as parity.check does for the two other stacks, when ONNX Runtime's outputs
    are not the TorchServe archive's."""
    from models.parity import ParityError

    if report.get("exported") and not report["ok"]:
        per = "; ".join(f"{n}: max |diff| {o['max_abs_diff']:.3g}" for n, o in report["outputs"].items())
        first = f", first disagreeing input #{report['first_disagreement']}" if report["first_disagreement"] is not None else ""
        raise ParityError(
            f"{name}: the ONNX export (ONNX Runtime) and the TorchServe archive disagree ({per}; tolerance {report['tolerance']:g}){first}, "
            f"{report['decisive_disagreements']} decisive class disagreements over {report['inputs']} inputs"
        )
