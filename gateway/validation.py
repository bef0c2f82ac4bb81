"""Input checked against the model's spec before any backend is called.

Every input of the manifest's spec by name: its dtype, its shape per instance
(-1: any size), bytes as TF Serving's {"b64": ...}. Validation is numpy work on
each whole array (one conversion, one shape check, one finiteness check), not
per-element Python; only bytes inputs are handled value by value, and an image
input's size is read from its header, never by decoding it.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any

import numpy as np
import orjson

from gateway.errors import GatewayError, bad_request
from models.spec import ModelSpec, TensorSpec

SIGNATURE = "serving_default"
NON_FINITE = "{where} contains non-finite values (NaN, Infinity or -Infinity, or a number beyond float32's range): every value must be finite"
ACCEPTS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}  # the JSON number kinds each dtype kind takes

Tensors = dict[str, Any]  # input name -> array (N, *shape) of its dtype, or a list of N bytes values


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


def shape_text(t: TensorSpec) -> str:
    return "[N" + "".join(f", {d}" for d in t.shape) + "]"


def to_array(data: Any, spec: ModelSpec, where: str, t: TensorSpec | None = None) -> np.ndarray:
    """One numeric input's batch as its dtype, of shape (N, *t.shape), or a 400 naming what is wrong."""
    t = t or spec.inputs[0]
    try:
        arr = np.array(data)
    except (ValueError, TypeError, RecursionError):
        raise bad_request(f"{where}: input {t.name!r} must be a rectangular array of shape {shape_text(t)}") from None
    dtype = np.dtype(t.numpy_dtype)
    if arr.dtype.kind not in ACCEPTS[dtype.kind]:
        if arr.dtype.kind == "O":
            if dtype.kind == "f":
                try:  # integers too large for any float (JSON allows them) are out of range, not malformed
                    np.asarray(data, dtype=np.float64)
                except OverflowError:
                    raise bad_request(NON_FINITE.format(where=where), "non_finite") from None
                except (ValueError, TypeError):
                    pass
            raise bad_request(f"{where}: input {t.name!r} must be a rectangular array of shape {shape_text(t)} (rows of unequal length or mixed types)")
        got = {"f": "floats", "i": "integers", "u": "integers", "b": "booleans", "U": "strings"}.get(arr.dtype.kind, f"{arr.dtype.kind!r}-kind values")
        raise bad_request(f"{where}: input {t.name!r} takes {t.dtype}; got {got}", "invalid_dtype")
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise bad_request(f"{where} is an empty batch: send at least one instance", "empty_batch")
    if not t.matches(arr.shape[1:]):
        raise bad_request(f"each instance of input {t.name!r} of model {spec.name!r} must have shape {t.shown()}; got {list(arr.shape[1:])}", "invalid_shape")
    if arr.shape[0] > spec.max_batch:
        raise bad_request(f"batch of {arr.shape[0]} instances exceeds the limit of {spec.max_batch} for model {spec.name!r}", "batch_too_large")
    if dtype.kind in "iu" and (arr.min() < np.iinfo(dtype).min or arr.max() > np.iinfo(dtype).max):
        raise bad_request(f"{where}: input {t.name!r} holds a value out of {t.dtype}'s range", "invalid_dtype")
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused just below
        arr = arr.astype(dtype, copy=False)
    if dtype.kind == "f" and not np.isfinite(arr).all():
        raise bad_request(NON_FINITE.format(where=where), "non_finite")
    return arr


def one_bytes(value: Any, t: TensorSpec, where: str, plain_is_b64: bool = False) -> bytes:
    """A bytes value: {"b64": "..."} (TF Serving's JSON), a plain string (its UTF-8 bytes, or base64
    where plain_is_b64: V2 JSON can carry an image only encoded), or raw bytes (a non-JSON body)."""
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str) or (plain_is_b64 and isinstance(value, str)):
        text = value["b64"] if isinstance(value, dict) else value
        data = b64decode(text)
        if data is None:
            raise bad_request(f"{where}: input {t.name!r} is not valid base64", "invalid_base64")
    elif isinstance(value, str):
        try:
            data = value.encode()
        except UnicodeEncodeError:  # a lone surrogate, which Python's JSON parser lets through
            raise bad_request(f"{where}: input {t.name!r} is not valid UTF-8 text: send bytes as {{\"b64\": \"<base64>\"}}", "invalid_dtype") from None
    else:
        raise bad_request(f"{where}: input {t.name!r} takes bytes: send {{\"b64\": \"<base64>\"}} per instance", "invalid_dtype")
    if t.max_bytes is not None and len(data) > t.max_bytes:
        raise GatewayError(413, "payload_too_large", f"{where}: input {t.name!r} holds {len(data)} bytes; the limit is {t.max_bytes}")
    if t.max_pixels is not None:
        check_image(data, t, where)
    return data


def b64decode(text: str) -> bytes | None:
    """Base64 as TF Serving reads it (abseil's decoder): whitespace ignored, padding optional; None
    when it is not base64 (so `base64 photo.jpg`, wrapped at 76 columns, is accepted everywhere)."""
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def check_image(data: bytes, t: TensorSpec, where: str) -> None:
    """An image input: its header must name a known format and its pixel count fit the limit.
    Pillow reads only the header here; the stacks decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:  # more pixels than Pillow will open
        raise GatewayError(413, "image_too_large", f"{where}: input {t.name!r} is an image of more pixels than the limit of {t.max_pixels}") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise bad_request(f"{where}: input {t.name!r} is not a decodable image (JPEG, PNG, ...)", "invalid_image") from None
    if width * height > (t.max_pixels or 0):
        raise GatewayError(413, "image_too_large", f"{where}: input {t.name!r} is a {width}x{height} image ({width * height} pixels); the limit is {t.max_pixels} pixels")


def to_tensor(data: Any, spec: ModelSpec, t: TensorSpec, where: str, plain_is_b64: bool = False) -> Any:
    if not t.is_bytes:
        return to_array(data, spec, where, t)
    if not isinstance(data, list) or not data:
        raise bad_request(f"{where}: input {t.name!r} needs a non-empty list, one bytes value per instance", "empty_batch")
    if t.shape:
        raise bad_request(f"{where}: input {t.name!r} of shape {t.shown()} is not served: one bytes value per instance")
    if len(data) > spec.max_batch:
        raise bad_request(f"batch of {len(data)} instances exceeds the limit of {spec.max_batch} for model {spec.name!r}", "batch_too_large")
    return [one_bytes(v, t, where, plain_is_b64) for v in data]


def batch_size(tensors: Tensors) -> int:
    sizes = {len(v) for v in tensors.values()}
    if len(sizes) > 1:
        raise bad_request(f"every input must have the same number of instances; got {sorted(sizes)}", "invalid_shape")
    return sizes.pop()


def b64_object(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def named(columns: dict, spec: ModelSpec, where: str) -> None:
    """A 400 naming the missing or unknown input."""
    names = [t.name for t in spec.inputs]
    missing = [n for n in names if n not in columns]
    if missing:
        raise bad_request(f"{where} is missing input {missing[0]!r}; model {spec.name!r} takes {names}", "missing_input")
    extra = sorted(set(columns) - set(names))
    if extra:
        raise bad_request(f"{where} names an unknown input {extra[0]!r}; model {spec.name!r} takes {names}", "unknown_input")


def v1_inputs(body: Any, spec: ModelSpec) -> tuple[Tensors, bool]:
    """A TF Serving V1 predict body -> (inputs by name, row_format?)."""
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object with 'instances' or 'inputs'")
    signature = body.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise bad_request(f"unknown signature_name {signature!r}; models serve {SIGNATURE!r}")
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances == has_inputs:
        raise bad_request("send exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    single = len(spec.inputs) == 1
    if has_instances:
        rows = body["instances"]
        if isinstance(rows, list) and rows and isinstance(rows[0], dict) and not (single and b64_object(rows[0])):
            for i, row in enumerate(rows):
                if not isinstance(row, dict):
                    raise bad_request(f"instance {i} must be an object naming the inputs, like the first one")
                named(row, spec, f"instance {i}")
            columns = {t.name: [row[t.name] for row in rows] for t in spec.inputs}
        elif single:
            columns = {spec.input_name: rows}
        else:
            raise bad_request(f"model {spec.name!r} takes {len(spec.inputs)} inputs {[t.name for t in spec.inputs]}: each instance must be an object naming them", "missing_input")
        where = "instances"
    else:
        data = body["inputs"]
        if isinstance(data, dict) and not (single and b64_object(data)):
            named(data, spec, "'inputs'")
            columns = data
        elif single:
            columns = {spec.input_name: data}
        else:
            raise bad_request(f"model {spec.name!r} takes {len(spec.inputs)} inputs: 'inputs' must be an object naming them", "missing_input")
        where = "inputs"
    tensors = {t.name: to_tensor(columns[t.name], spec, t, where) for t in spec.inputs}
    batch_size(tensors)
    return tensors, has_instances


def v1_instances(body: Any, spec: ModelSpec) -> tuple[np.ndarray, bool]:
    """The first input's rows (the zoo's single-input models) and the format."""
    tensors, row_format = v1_inputs(body, spec)
    return tensors[spec.input_name], row_format


def raw_input(raw: bytes, spec: ModelSpec) -> Tensors:
    """A non-JSON body: the one bytes input's single instance (TorchServe's raw image convention)."""
    if len(spec.inputs) != 1 or not spec.inputs[0].is_bytes:
        raise bad_request(f"model {spec.name!r} takes JSON (Content-Type: application/json); a raw body is accepted only by a model with one bytes input", "unsupported_media_type")
    if not raw:
        raise bad_request("request body is empty: send the input's bytes", "empty_batch")
    return {spec.input_name: [one_bytes(raw, spec.inputs[0], "body")]}


def encode_inputs(tensors: Tensors, spec: ModelSpec) -> bytes:
    """The V1 body the stacks are sent for inputs the gateway built itself (V2, raw bodies): row
    format for one input, columnar by name for several; bytes as {"b64": ...}."""
    def value(t: TensorSpec) -> Any:
        v = tensors[t.name]
        return [{"b64": base64.b64encode(b).decode()} for b in v] if t.is_bytes else v

    if len(spec.inputs) == 1:
        body: Any = {"instances": value(spec.inputs[0])}
    else:
        body = {"inputs": {t.name: value(t) for t in spec.inputs}}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def outputs_of(body: bytes, backend: str, spec: ModelSpec | None = None) -> Any:
    """The outputs of a backend's V1 answer: with a spec, a dict of arrays by output name (one
    output answers unnamed, several by name, row- or column-wise); without one, the single
    output's array (for compare and mirror of the zoo's models)."""
    try:
        data = orjson.loads(body)
        values = data["predictions"] if "predictions" in data else data["outputs"]
        if spec is None:
            return np.asarray(values, dtype=np.float32)
        names = [t.name for t in spec.outputs]
        if len(names) == 1:
            return {names[0]: np.asarray(values, dtype=np.dtype(spec.outputs[0].numpy_dtype) if not spec.outputs[0].is_bytes else None)}
        if isinstance(values, dict):
            return {t.name: np.asarray(values[t.name], dtype=t.numpy_dtype) for t in spec.outputs}
        return {t.name: np.asarray([row[t.name] for row in values], dtype=t.numpy_dtype) for t in spec.outputs}
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
