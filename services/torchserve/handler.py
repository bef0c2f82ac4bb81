"""twinserve's TorchServe handler: TensorFlow Serving's JSON in and out, for every zoo model.

TorchServe loads this file as a module and requires exactly one class in it, so
the helpers are plain functions. A server-side batch arrives as a list of
requests; each request's rows are validated on their own (a bad request gets its
own 400 and does not fail its neighbours), the valid rows go through one
forward pass, and each request gets exactly its own rows back, in order.
"""

from __future__ import annotations

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


def load_model(model_dir: str, model_file: str, serialized_file: str) -> torch.nn.Module:
    """Build the zoo model from its own file and load the exported state dict (eager mode, no TorchScript)."""
    path = os.path.join(model_dir, model_file)
    module_name = f"twinserve_zoo_{os.path.splitext(model_file)[0]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[module_name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    model = module.build_torch()
    state = torch.load(os.path.join(model_dir, serialized_file), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model


def decode(request: dict) -> Any:
    """The request's JSON: TorchServe hands it over decoded (JSON content type, by Python's json) or
    as bytes. Bytes go to orjson; only when it refuses, to Python's json too, which reads the NaN,
    Infinity and -Infinity tokens and overflows 1e999 to infinity like TorchServe's own decoding does,
    so such a body gets the non-finite answer whatever its content type."""
    body = request.get("body") if request.get("body") is not None else request.get("data")
    if isinstance(body, (bytes, bytearray)):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            error = exc
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise ValueError(f"request body is not valid JSON: {error}") from None
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


def parse_request(body: Any, spec: dict) -> tuple[np.ndarray, str]:
    """Return the rows as float32 of shape (N, *shape) and the response key, or raise ValueError naming the problem."""
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object with 'instances' or 'inputs'")
    signature = body.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise ValueError(f"unknown signature_name {signature!r}; this model serves {SIGNATURE!r}")
    if ("instances" in body) == ("inputs" in body):
        raise ValueError("request must have exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    if "instances" in body:
        data, key, where = body["instances"], "predictions", "'instances'"
    else:
        data, key, where = body["inputs"], "outputs", "'inputs'"
        if isinstance(data, dict):
            if set(data) != {spec["input_name"]}:
                raise ValueError(f"'inputs' must name the one input {spec['input_name']!r}, got {sorted(data)}")
            data = data[spec["input_name"]]
    if isinstance(data, list) and data and isinstance(data[0], dict):
        try:
            data = [row[spec["input_name"]] for row in data]
        except (KeyError, TypeError):
            raise ValueError(f"each instance object must hold the input {spec['input_name']!r}") from None
    shape = tuple(spec["shape"])
    try:
        with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused below
            rows = np.asarray(data, dtype=np.float32)
    except OverflowError:  # an integer too large for any float (JSON allows them)
        raise non_finite(where) from None
    except (ValueError, TypeError, RecursionError):
        raise ValueError(f"input must be a rectangular array of numbers of shape [N, {', '.join(map(str, shape))}]") from None
    if rows.ndim == 0 or rows.shape[0] == 0:
        raise ValueError("input batch is empty: send at least one instance")
    if rows.shape[1:] != shape:
        raise ValueError(f"each instance must have shape {list(shape)}, got {list(rows.shape[1:])}")
    if rows.shape[0] > spec["max_batch"]:
        raise ValueError(f"batch of {rows.shape[0]} instances exceeds the limit of {spec['max_batch']}")
    if not np.isfinite(rows).all():
        raise non_finite(where, rows)
    return rows, key


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
        self.model: torch.nn.Module | None = None
        self.spec: dict = {}
        self.initialized = False

    def initialize(self, context: Any) -> None:
        torch.set_num_threads(max(1, int(os.environ.get("TWINSERVE_TORCH_THREADS", os.environ.get("OMP_NUM_THREADS", "1")))))
        model_dir = context.system_properties["model_dir"]
        manifest = context.manifest["model"]
        with open(os.path.join(model_dir, "spec.json")) as fh:
            self.spec = json.load(fh)
        self.model = load_model(model_dir, manifest["modelFile"], manifest["serializedFile"])
        self.initialized = True
        # torch leaves several hundred thousand objects for the cyclic GC to walk: a full collection,
        # set off by the lists that parsing a request allocates, then stalls a batch for tens of ms.
        # Everything loaded so far lives as long as the worker; freezing it takes it out of every pass.
        gc.collect()
        gc.freeze()

    def handle(self, data: list[dict], context: Any) -> list[bytes]:
        """One response per request, in order. Whatever one request brings (bad JSON, non-finite
        values, a fault in its own explanation) is answered on that request alone: its neighbours in
        the batch are still served, and the worker never fails the whole batch or restarts for it."""
        responses: list[bytes] = [b""] * len(data)
        parsed: list[tuple[int, np.ndarray, str]] = []
        for idx, request in enumerate(data):
            context.set_response_content_type(idx, "application/json")
            try:
                body = decode(request)
                rows, key = parse_request(body, self.spec)
                if context.get_request_header(idx, "explain") == "True":
                    responses[idx] = self.explain(body, rows)
                    continue
            except ValueError as exc:
                self.fail(context, idx, responses, 400, str(exc))
                continue
            except Exception as exc:  # a fault of this request's own work; the traceback goes to the log
                log.exception("request %d of the batch failed", idx)
                self.fail(context, idx, responses, 500, f"prediction failed: {type(exc).__name__}")
                continue
            parsed.append((idx, rows, key))
        if parsed:
            try:
                probs = self.forward(np.concatenate([rows for _, rows, _ in parsed]))
            except Exception:  # run each request alone, so that only the one at fault fails
                log.exception("batch forward pass failed; running its %d requests one by one", len(parsed))
                for idx, rows, key in parsed:
                    try:
                        responses[idx] = orjson.dumps({key: self.forward(rows)}, option=orjson.OPT_SERIALIZE_NUMPY)
                    except Exception as exc:
                        self.fail(context, idx, responses, 500, f"prediction failed: {type(exc).__name__}")
                return responses
            start = 0
            for idx, rows, key in parsed:
                end = start + len(rows)
                responses[idx] = orjson.dumps({key: probs[start:end]}, option=orjson.OPT_SERIALIZE_NUMPY)
                start = end
        return responses

    def forward(self, rows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(rows)).numpy()  # type: ignore[misc]

    @staticmethod
    def fail(context: Any, idx: int, responses: list[bytes], status: int, message: str) -> None:
        context.set_response_status(status, message, idx)
        responses[idx] = error_body(message)

    def explain(self, body: dict, rows: np.ndarray) -> bytes:
        """Integrated Gradients per row (POST /explanations/<model>); a bad target raises ValueError (400)."""
        targets = parse_targets(body, len(rows), len(self.spec["labels"]))
        attributions, chosen = integrated_gradients(self.model, rows, targets)  # type: ignore[arg-type]
        return orjson.dumps({"attributions": attributions, "targets": chosen}, option=orjson.OPT_SERIALIZE_NUMPY)
