"""Input checked against the model's spec before any backend is called.

Validation is numpy work on the whole array (one conversion, one shape check,
one finiteness check), not per-element Python.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

from gateway.errors import GatewayError, bad_request
from models.spec import ModelSpec

SIGNATURE = "serving_default"
NON_FINITE = "{where} contains non-finite values (NaN, Infinity or -Infinity, or a number beyond float32's range): every value must be finite"


def parse_json(raw: bytes) -> Any:
    """orjson on the hot path; only when it refuses, the standard library's parser, which reads the
    spellings TF Serving's REST API accepts for non-finite floats (NaN, Infinity, -Infinity) and
    overflows 1e999 to infinity, so that such a body is a 400 `non_finite` naming the values, not
    `malformed_json`."""
    if not raw:
        raise bad_request("request body is empty: send a JSON object", "malformed_json")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        error = exc
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise bad_request(f"request body is not valid JSON: {error.msg} at position {error.pos}", "malformed_json") from None


def to_array(data: Any, spec: ModelSpec, where: str) -> np.ndarray:
    """Rows as float32 of shape (N, *spec.shape), or a 400 naming what is wrong."""
    try:
        arr = np.array(data)
    except (ValueError, TypeError, RecursionError):
        raise bad_request(f"{where} must be a rectangular array of shape [N, {', '.join(map(str, spec.shape))}]") from None
    if arr.dtype.kind not in "fiu":
        if arr.dtype.kind == "O":
            try:  # integers too large for any float (JSON allows them) are out of range, not malformed
                np.asarray(data, dtype=np.float64)
            except OverflowError:
                raise bad_request(NON_FINITE.format(where=where), "non_finite") from None
            except (ValueError, TypeError):
                pass
            raise bad_request(f"{where} must be a rectangular array of shape [N, {', '.join(map(str, spec.shape))}] (rows of unequal length or mixed types)")
        raise bad_request(f"{where} must hold numbers ({spec.dtype}); got {arr.dtype.kind!r}-kind values", "invalid_dtype")
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise bad_request(f"{where} is an empty batch: send at least one instance", "empty_batch")
    if arr.shape[1:] != spec.shape:
        raise bad_request(f"each instance of model {spec.name!r} must have shape {list(spec.shape)}; got {list(arr.shape[1:])}", "invalid_shape")
    if arr.shape[0] > spec.max_batch:
        raise bad_request(f"batch of {arr.shape[0]} instances exceeds the limit of {spec.max_batch} for model {spec.name!r}", "batch_too_large")
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused just below
        arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise bad_request(NON_FINITE.format(where=where), "non_finite")
    return arr


def v1_instances(body: Any, spec: ModelSpec) -> tuple[np.ndarray, bool]:
    """A TF Serving V1 predict body -> (rows, row_format?)."""
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object with 'instances' or 'inputs'")
    signature = body.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise bad_request(f"unknown signature_name {signature!r}; models serve {SIGNATURE!r}")
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances == has_inputs:
        raise bad_request("send exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    if has_instances:
        data = body["instances"]
        if isinstance(data, list) and data and isinstance(data[0], dict):
            try:
                data = [row[spec.input_name] for row in data]
            except (KeyError, TypeError):
                raise bad_request(f"each instance object must hold the input {spec.input_name!r}") from None
        return to_array(data, spec, "instances"), True
    data = body["inputs"]
    if isinstance(data, dict):
        if set(data) != {spec.input_name}:
            raise bad_request(f"'inputs' must name the one input {spec.input_name!r}; got {sorted(data)}")
        data = data[spec.input_name]
    return to_array(data, spec, "inputs"), False


def outputs_of(body: bytes, backend: str) -> np.ndarray:
    """The probabilities from a backend's V1 answer (for compare and mirror)."""
    try:
        data = orjson.loads(body)
        values = data["predictions"] if "predictions" in data else data["outputs"]
        return np.asarray(values, dtype=np.float32)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise GatewayError(502, "bad_backend_response", f"{backend} returned a response without predictions", backend) from None


def explain_targets(body: dict, rows: int, spec: ModelSpec) -> list[int]:
    """The class to explain per row: an int for all, a list of ints, or absent (-1: the predicted class)."""
    target = body.get("target")
    if target is None:
        return [-1] * rows
    targets = [target] * rows if isinstance(target, int) and not isinstance(target, bool) else target
    if not isinstance(targets, list) or len(targets) != rows or not all(isinstance(t, int) and not isinstance(t, bool) for t in targets):
        raise bad_request(f"'target' must be an integer class or a list of {rows} integers", "invalid_target")
    bad = [t for t in targets if not -1 <= t < spec.num_classes]
    if bad:
        raise bad_request(f"target class {bad[0]} is out of range: model {spec.name!r} has classes 0..{spec.num_classes - 1} (-1: the predicted class)", "invalid_target")
    return targets
