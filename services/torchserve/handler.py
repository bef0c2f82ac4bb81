"""twinserve's TorchServe handler: TensorFlow Serving's JSON in and out, for every model of the manifest.

TorchServe loads this file as a module and requires exactly one class in it, so
the helpers are plain functions. A server-side batch arrives as a list of
requests; each request's inputs are validated on their own against spec.json
(named inputs, dtypes, shapes with -1 for any size, bytes as {"b64": ...}; a bad
request gets its own 400 and does not fail its neighbours), the valid requests go
through one forward pass, and each request gets exactly its own rows back, in
order. A model with variable-size (-1) numeric inputs runs each request alone.
"""

from __future__ import annotations

import base64
import binascii
import gc
import importlib.util
import json
import logging
import os
import sys
from typing import Any

import numpy as np
import orjson
import torch

SIGNATURE = "serving_default"
log = logging.getLogger(__name__)  # the worker's stdout: TorchServe's MODEL_LOG
# Integrated Gradients, the same rule as the SavedModel's `explain` signature (models/explain.py;
# repeated here because a TorchServe archive cannot import the project's packages)
IG_STEPS = 64
IG_METHOD = "gausslegendre"


def load_model(model_dir: str, spec: dict, model_file: str | None, serialized_file: str) -> torch.nn.Module:
    """The model as the manifest's `pytorch.format` says: a module file plus a state dict (the zoo's
    files build theirs with `build_torch()`, yours name a class), a TorchScript file, or a
    `torch.export` program. Eager mode for the state dict, as the user's own code runs it."""
    fmt = spec.get("pytorch", {}).get("format", "zoo")
    weights = os.path.join(model_dir, serialized_file)
    if fmt == "torchscript":
        return torch.jit.load(weights, map_location="cpu").eval()
    if fmt == "export":
        return torch.export.load(weights).module()
    if not model_file:
        raise ValueError(f"model {spec['name']!r}: format {fmt!r} needs the model file")
    path = os.path.join(model_dir, model_file)
    module_name = f"twinserve_model_{os.path.splitext(os.path.basename(model_file))[0]}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader)  # type: ignore[arg-type]
    sys.modules[module_name] = module
    loader.loader.exec_module(module)  # type: ignore[union-attr]
    factory = spec.get("pytorch", {}).get("class") or "build_torch"
    model = getattr(module, factory)()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model


def decode(request: dict) -> Any:
    """The request's JSON: TorchServe hands it over decoded (JSON content type, by Python's json) or
    as bytes. Bytes go to orjson; only when it refuses, to Python's json too, which reads the NaN,
    Infinity and -Infinity tokens and overflows 1e999 to infinity like TorchServe's own decoding does,
    so such a body gets the non-finite answer whatever its content type. A body that is no JSON at
    all comes back as bytes: for a model with one bytes input it is that input (TorchServe's image
    classifier convention: the raw image as the body)."""
    body = request.get("body") if request.get("body") is not None else request.get("data")
    if isinstance(body, (bytes, bytearray)):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            error = exc
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            return (bytes(body), f"request body is not valid JSON: {error}")  # a tuple: JSON never decodes to one
    return body


def non_finite(where: str, rows: np.ndarray | None = None) -> ValueError:
    """A 400 naming the non-finite values: which kinds, how many, where the first one is."""
    found = ""
    if rows is not None:
        bad = ~np.isfinite(rows)
        kinds = [name for name, mask in (("NaN", np.isnan(rows)), ("Infinity", np.isposinf(rows)), ("-Infinity", np.isneginf(rows))) if mask.any()]
        first = [int(i) for i in np.argwhere(bad)[0]]
        found = f" (found {', '.join(kinds)}: {int(bad.sum())} value(s), the first in instance {first[0]} at {first[1:]})"
    return ValueError(
        f"{where} contains non-finite values, NaN or infinite{found}: every value must be finite "
        "(NaN, Infinity, -Infinity and numbers beyond float32's range, such as 1e39, are refused)"
    )


def to_bytes(value: Any, name: str) -> bytes:
    """TF Serving's JSON for a bytes value: {"b64": "..."} or a plain string (its UTF-8 bytes)."""
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        compact = "".join(value["b64"].split())  # as TF Serving reads it: whitespace ignored, padding optional
        try:
            return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"input {name!r}: 'b64' is not valid base64") from None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):  # the raw body
        return value
    raise ValueError(f"input {name!r} takes bytes: send {{\"b64\": \"<base64>\"}} (or a string) per instance")


def tensor(data: Any, info: dict, where: str) -> Any:
    """One input's batch: a list of bytes for a bytes input, else an array of its dtype of shape
    (N, *shape), -1 dimensions taking any size; a ValueError names what is wrong."""
    name, shape = info["name"], tuple(info["shape"])
    if not isinstance(data, list) or not data:
        raise ValueError(f"input {name!r} in {where} must be a non-empty list (one value per instance)")
    if info["dtype"] == "bytes":
        if shape:
            raise ValueError(f"input {name!r}: bytes inputs of shape {list(shape)} are not supported; one bytes value per instance")
        values = [to_bytes(v, name) for v in data]
        limit = info.get("max_bytes")
        if limit:
            big = next((i for i, v in enumerate(values) if len(v) > limit), None)
            if big is not None:
                raise ValueError(f"input {name!r}: instance {big} is {len(values[big])} bytes, over the limit of {limit}")
        return values
    try:
        arr = np.array(data)
    except (ValueError, TypeError, RecursionError):
        raise ValueError(f"input {name!r} in {where} must be a rectangular array of shape [N, {', '.join(map(str, shape))}]") from None
    dtype = np.dtype(info["dtype"])
    kinds = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}[dtype.kind]
    if arr.dtype.kind == "O" and dtype.kind == "f":
        try:  # an integer too large for any float (JSON allows them) is out of range, not malformed
            np.asarray(data, dtype=np.float64)
        except OverflowError:
            raise non_finite(f"input {name!r}") from None
        except (ValueError, TypeError):
            pass
    if arr.dtype.kind not in kinds:
        if arr.dtype.kind == "O":
            raise ValueError(f"input {name!r} in {where} must be a rectangular array of shape [N, {', '.join(map(str, shape))}] (rows of unequal length or mixed types)")
        what = "booleans" if dtype.kind == "b" else f"numbers ({info['dtype']})"
        got = {"f": "floats", "i": "integers", "u": "integers", "b": "booleans", "U": "strings"}.get(arr.dtype.kind, arr.dtype.name)
        raise ValueError(f"input {name!r} must be a rectangular array of {what}; got {got}")
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError("input batch is empty: send at least one instance")
    got = arr.shape[1:]
    if len(got) != len(shape) or any(e >= 0 and e != g for e, g in zip(shape, got)):
        raise ValueError(f"each instance of input {name!r} must have shape {list(shape)}; got {list(got)}")
    if dtype.kind in "iu" and arr.size and (arr.min() < np.iinfo(dtype).min or arr.max() > np.iinfo(dtype).max):
        raise ValueError(f"input {name!r}: a value is out of range for {info['dtype']}")
    with np.errstate(over="ignore"):  # beyond the float range becomes inf, refused below
        arr = arr.astype(dtype, copy=False)
    if dtype.kind == "f" and not np.isfinite(arr).all():
        raise non_finite(where, arr)
    return arr


def parse_request(body: Any, spec: dict) -> tuple[dict[str, Any], bool]:
    """Return the named inputs (one batch each) and whether the request used the row format, or
    raise ValueError naming the problem. TF Serving's JSON: "instances" (a value per instance, or
    an object naming every input) or "inputs" (one batch per input, or an object of them)."""
    inputs = spec["inputs"]
    names = [t["name"] for t in inputs]
    if isinstance(body, tuple):  # not JSON: the raw value of a single bytes input, or an error
        if len(inputs) == 1 and inputs[0]["dtype"] == "bytes":
            return {inputs[0]["name"]: tensor([body[0]], inputs[0], "the body")}, True
        raise ValueError(body[1])
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object with 'instances' or 'inputs'")
    signature = body.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise ValueError(f"unknown signature_name {signature!r}; this model serves {SIGNATURE!r}")
    if ("instances" in body) == ("inputs" in body):
        raise ValueError("request must have exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    if "instances" in body:
        rows, where = body["instances"], "'instances'"
        if not isinstance(rows, list) or not rows:
            raise ValueError("input batch is empty: send at least one instance")
        if isinstance(rows[0], dict) and not (len(names) == 1 and set(rows[0]) == {"b64"}):
            for row in rows:
                missing = [n for n in names if not isinstance(row, dict) or n not in row]
                if missing:
                    raise ValueError(f"each instance object must hold the inputs {names}: missing {missing[0]!r}")
                extra = sorted(set(row) - set(names))
                if extra:
                    raise ValueError(f"unknown input {extra[0]!r}; this model takes {names}")
            columns = {n: [row[n] for row in rows] for n in names}
        elif len(names) == 1:
            columns = {names[0]: rows}
        else:
            raise ValueError(f"this model takes {len(names)} inputs {names}: each instance must be an object naming them")
        row_format = True
    else:
        data, where = body["inputs"], "'inputs'"
        if isinstance(data, dict) and not (len(names) == 1 and set(data) == {"b64"}):
            missing = [n for n in names if n not in data]
            extra = sorted(set(data) - set(names))
            if missing or extra:
                what = f"missing {missing[0]!r}" if missing else f"unknown input {extra[0]!r}"
                raise ValueError(f"'inputs' must name exactly the inputs {names}: {what}")
            columns = dict(data)
        elif len(names) == 1:
            columns = {names[0]: data}
        else:
            raise ValueError(f"this model takes {len(names)} inputs {names}: 'inputs' must be an object naming them")
        row_format = False
    tensors = {t["name"]: tensor(columns[t["name"]], t, where) for t in inputs}
    sizes = {len(v) for v in tensors.values()}
    if len(sizes) > 1:
        raise ValueError(f"every input must have the same number of instances; got {sorted(sizes)}")
    count = sizes.pop()
    if count > spec["max_batch"]:
        raise ValueError(f"batch of {count} instances exceeds the limit of {spec['max_batch']}")
    return tensors, row_format


def forward(model: Any, spec: dict, tensors: dict[str, Any]) -> dict[str, np.ndarray]:
    """Run the model on named inputs (positional, in the spec's order; bytes inputs as lists of
    bytes) and name its outputs: one tensor, a tuple in the spec's order, or a dict by name."""
    args = [tensors[t["name"]] if t["dtype"] == "bytes" else torch.from_numpy(np.ascontiguousarray(tensors[t["name"]])) for t in spec["inputs"]]
    with torch.inference_mode():
        out = model(*args)
    names = [t["name"] for t in spec["outputs"]]
    return {n: v.detach().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for n, v in zip(names, in_order(out, names))}


def in_order(out: Any, names: list[str]) -> list[Any]:
    """A model's answer as its outputs in the spec's order: one tensor, a tuple in that order, or a
    dict by name (the ONNX export traces the same rule, models/onnx.py)."""
    if isinstance(out, dict):
        values = [out[n] for n in names]
    elif isinstance(out, (tuple, list)):
        values = list(out)
    else:
        values = [out]
    if len(values) != len(names):
        raise RuntimeError(f"the model returned {len(values)} outputs; the spec names {len(names)}: {names}")
    return values


def encode(outputs: dict[str, np.ndarray], row_format: bool) -> bytes:
    """TF Serving's answer: one output as "predictions"/"outputs" directly, several by name."""
    names = list(outputs)
    if row_format:
        body: Any = {"predictions": outputs[names[0]]} if len(names) == 1 else {"predictions": [{n: outputs[n][i] for n in names} for i in range(len(outputs[names[0]]))]}
    else:
        body = {"outputs": outputs[names[0]] if len(names) == 1 else outputs}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def parse_targets(body: Any, rows: int, num_classes: int) -> list[int]:
    """The class to explain per row: an int for all, a list of ints, or none (-1: the predicted class)."""
    target = body.get("target") if isinstance(body, dict) else None
    if target is None:
        return [-1] * rows
    targets = [target] * rows if isinstance(target, int) and not isinstance(target, bool) else target
    if not isinstance(targets, list) or len(targets) != rows or not all(isinstance(t, int) and not isinstance(t, bool) for t in targets):
        raise ValueError(f"'target' must be an integer class or a list of {rows} integers")
    bad = [t for t in targets if not -1 <= t < num_classes]
    if bad:
        raise ValueError(f"target class {bad[0]} is out of range: this model has classes 0..{num_classes - 1} (-1: the predicted class)")
    return targets


def integrated_gradients(model: torch.nn.Module, rows: np.ndarray, targets: list[int]) -> tuple[np.ndarray, list[int]]:
    from captum.attr import IntegratedGradients

    x = torch.from_numpy(rows)
    with torch.no_grad():
        predicted = model(x).argmax(-1).tolist()
    chosen = [p if t < 0 else t for t, p in zip(targets, predicted)]
    attributions = IntegratedGradients(model.logits).attribute(x, baselines=torch.zeros_like(x), target=torch.tensor(chosen), n_steps=IG_STEPS, method=IG_METHOD)
    return attributions.detach().numpy(), chosen


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


class TwinserveHandler:
    def __init__(self) -> None:
        self.model: Any = None
        self.spec: dict = {}
        self.concat = True
        self.initialized = False

    def initialize(self, context: Any) -> None:
        torch.set_num_threads(max(1, int(os.environ.get("TWINSERVE_TORCH_THREADS", os.environ.get("OMP_NUM_THREADS", "1")))))
        model_dir = context.system_properties["model_dir"]
        manifest = context.manifest["model"]
        with open(os.path.join(model_dir, "spec.json")) as fh:
            self.spec = json.load(fh)
        self.model = load_model(model_dir, self.spec, manifest.get("modelFile"), manifest["serializedFile"])
        # requests are concatenated into one forward pass when every numeric input has a fixed shape
        self.concat = all(t["dtype"] == "bytes" or all(d >= 0 for d in t["shape"]) for t in self.spec["inputs"])
        self.initialized = True
        # torch leaves several hundred thousand objects for the cyclic GC to walk: a full collection,
        # set off by the lists that parsing a request allocates, then stalls a batch for tens of ms.
        # Everything loaded so far lives as long as the worker; freezing it takes it out of every pass.
        gc.collect()
        gc.freeze()

    def handle(self, data: list[dict], context: Any) -> list[bytes]:
        """One response per request, in order. Whatever one request brings (bad JSON, non-finite
        values, bytes that are no image, a fault in its own explanation) is answered on that request
        alone: its neighbours in the batch are still served, and the worker never fails the whole
        batch or restarts for it."""
        responses: list[bytes] = [b""] * len(data)
        parsed: list[tuple[int, dict[str, Any], bool]] = []
        for idx, request in enumerate(data):
            context.set_response_content_type(idx, "application/json")
            try:
                body = decode(request)
                tensors, row_format = parse_request(body, self.spec)
                if context.get_request_header(idx, "explain") == "True":
                    responses[idx] = self.explain(body, tensors)
                    continue
            except ValueError as exc:
                self.fail(context, idx, responses, 400, str(exc))
                continue
            except Exception as exc:  # a fault of this request's own work; the traceback goes to the log
                log.exception("request %d of the batch failed", idx)
                self.fail(context, idx, responses, 500, f"prediction failed: {type(exc).__name__}")
                continue
            parsed.append((idx, tensors, row_format))
        if not parsed:
            return responses
        if self.concat and len(parsed) > 1:
            joined = {t["name"]: join([p[1][t["name"]] for p in parsed]) for t in self.spec["inputs"]}
            try:
                outputs = forward(self.model, self.spec, joined)
            except Exception:  # run each request alone below, so that only the one at fault fails
                log.info("batch forward pass failed; running its %d requests one by one", len(parsed))
            else:
                start = 0
                for idx, tensors, row_format in parsed:
                    end = start + len(next(iter(tensors.values())))
                    responses[idx] = encode({n: v[start:end] for n, v in outputs.items()}, row_format)
                    start = end
                return responses
        for idx, tensors, row_format in parsed:
            try:
                responses[idx] = encode(forward(self.model, self.spec, tensors), row_format)
            except ValueError as exc:  # the model refused this request's values (e.g. bytes that are no image)
                self.fail(context, idx, responses, 400, str(exc))
            except Exception as exc:
                log.exception("request %d of the batch failed", idx)
                self.fail(context, idx, responses, 500, f"prediction failed: {type(exc).__name__}")
        return responses

    @staticmethod
    def fail(context: Any, idx: int, responses: list[bytes], status: int, message: str) -> None:
        context.set_response_status(status, message, idx)
        responses[idx] = error_body(message)

    def explain(self, body: dict, tensors: dict[str, Any]) -> bytes:
        """Integrated Gradients per row (POST /explanations/<model>); a bad target raises ValueError (400)."""
        if not self.spec.get("explainable"):
            raise ValueError(f"model {self.spec['name']!r} has no explanation: Integrated Gradients is served for the zoo's classifiers over one float input")
        rows = tensors[self.spec["inputs"][0]["name"]]
        targets = parse_targets(body, len(rows), len(self.spec["labels"]))
        attributions, chosen = integrated_gradients(self.model, rows, targets)
        return orjson.dumps({"attributions": attributions, "targets": chosen}, option=orjson.OPT_SERIALIZE_NUMPY)


def join(parts: list[Any]) -> Any:
    """Requests' batches of one input, end to end: lists of bytes added up, arrays concatenated."""
    if isinstance(parts[0], list):
        return [v for part in parts for v in part]
    return np.concatenate(parts)
