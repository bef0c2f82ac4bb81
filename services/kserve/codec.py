"""Requests in, answers out: the model's spec, KServe V1 (TF Serving's JSON) and V2 tensors, images.

Every check a request can fail raises `kserve.errors.InvalidInput`, which KServe answers with 400
`{"error": "<message>"}` on REST and INVALID_ARGUMENT on gRPC. The rules and messages follow the
other two stacks (services/torchserve/handler.py and services/tfserving/compat/tensors.py, which
this package cannot import): named inputs, dtypes, per-instance shapes from spec.json with -1 for
any size, a non-empty batch no larger than the spec's `max_batch`, finite floats only, bytes as
`{"b64": "..."}` or a plain string, and for an image input the refusal rules of
models/zoo/mobilenet.py `_decode`.

Imports numpy, orjson, Pillow and kserve only: never torch, TensorFlow or the rest of the project.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve.errors import InvalidInput

SIGNATURE = "serving_default"
# spec.json dtype -> the V2 protocol's datatype
V2_TYPES = {
    "bool": "BOOL",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "bytes": "BYTES",
}
# an image input (dtype "bytes" fed to a graph that takes decoded pixels): what Pillow may open.
# The same as the other stacks (TensorFlow's DecodeJpeg kernel decodes these three).
IMAGE_FORMATS = ("JPEG", "PNG", "GIF")
IMAGE_KINDS = "JPEG, PNG or GIF"
DEFAULT_MAX_PIXELS = 4096 * 4096


# ----------------------------------------------------------------------------------------------
# the spec


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # spec.json's: "float32", "int64", "bytes", ...
    shape: tuple[int, ...]  # per instance, without the batch; -1: any size
    max_bytes: int | None = None
    max_pixels: int | None = None

    @property
    def datatype(self) -> str:
        return V2_TYPES[self.dtype]

    @property
    def is_bytes(self) -> bool:
        return self.dtype == "bytes"

    def metadata(self) -> dict:
        """V2 metadata: the batch dimension first, -1."""
        return {"name": self.name, "datatype": self.datatype, "shape": [-1, *self.shape]}


@dataclass(frozen=True)
class Spec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch: int

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @classmethod
    def load(cls, path: str) -> Spec:
        with open(path) as fh:
            raw = json.load(fh)

        def tensors(key: str) -> tuple[TensorSpec, ...]:
            out = []
            for t in raw[key]:
                if t["dtype"] not in V2_TYPES:
                    raise ValueError(f"{path}: {key} {t['name']!r} has dtype {t['dtype']!r}, which this server does not serve")
                out.append(TensorSpec(t["name"], t["dtype"], tuple(int(d) for d in t.get("shape", [])), t.get("max_bytes"), t.get("max_pixels")))
            return tuple(out)

        name = raw.get("name") or os.path.basename(os.path.dirname(os.path.abspath(path)))
        return cls(name, tensors("inputs"), tensors("outputs"), int(raw.get("max_batch") or 64))


# ----------------------------------------------------------------------------------------------
# shared checks


def non_finite(where: str, arr: np.ndarray | None = None) -> InvalidInput:
    """A 400 naming the non-finite values: which kinds, how many, where the first one is."""
    found = ""
    if arr is not None and arr.size:
        bad = ~np.isfinite(arr)
        kinds = [n for n, mask in (("NaN", np.isnan(arr)), ("Infinity", np.isposinf(arr)), ("-Infinity", np.isneginf(arr))) if mask.any()]
        first = [int(i) for i in np.argwhere(bad)[0]]
        at = f", the first in instance {first[0]} at {first[1:]}" if first else ""
        found = f" (found {', '.join(kinds)}: {int(bad.sum())} value(s){at})"
    return InvalidInput(
        f"{where} contains non-finite values, NaN or infinite{found}: every value must be finite "
        "(NaN, Infinity, -Infinity and numbers beyond float32's range, such as 1e39, are refused)"
    )


def _kind_name(kind: str) -> str:
    return {"f": "floats", "i": "integers", "u": "integers", "b": "booleans", "U": "strings", "S": "bytes", "O": "mixed values"}.get(kind, kind)


def numeric(data: Any, info: TensorSpec, where: str, check_finite: bool = True) -> np.ndarray:
    """A JSON (or protobuf) value -> an array of the input's dtype, checked: rectangular, numbers of
    an allowed kind, integers in range, floats finite. The shape is checked by the caller."""
    try:
        arr = np.array(data)
    except (ValueError, TypeError, RecursionError):
        raise InvalidInput(f"input {info.name!r} in {where} is ragged or not a rectangular array: every instance must have shape {list(info.shape)}") from None
    dtype = np.dtype(info.dtype)
    allowed = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}[dtype.kind]
    if arr.dtype.kind == "O" and dtype.kind == "f":
        try:  # an integer too large for any float (JSON allows them) is out of range, not malformed
            np.asarray(data, dtype=np.float64)
        except OverflowError:
            raise non_finite(f"input {info.name!r}") from None
        except (ValueError, TypeError):
            pass
    if arr.dtype.kind not in allowed:
        if arr.dtype.kind == "O":
            raise InvalidInput(f"input {info.name!r} in {where} is ragged or not a rectangular array of numbers: every instance must have shape {list(info.shape)} (rows of unequal length, nulls or mixed types)")
        what = "booleans" if dtype.kind == "b" else f"numbers ({info.dtype})"
        raise InvalidInput(f"input {info.name!r} has the wrong dtype: it takes {what}; got {_kind_name(arr.dtype.kind)}")
    if dtype.kind in "iu" and arr.size and (arr.min() < np.iinfo(dtype).min or arr.max() > np.iinfo(dtype).max):
        raise InvalidInput(f"input {info.name!r}: a value is out of range for {info.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):  # beyond the float range becomes inf, refused below
        arr = arr.astype(dtype, copy=False)
    if check_finite and dtype.kind == "f" and not np.isfinite(arr).all():
        raise non_finite(f"input {info.name!r}", arr if arr.ndim else None)
    return arr


def check_instances(arr: np.ndarray, info: TensorSpec) -> None:
    if arr.ndim == 0:
        raise InvalidInput(f"input {info.name!r} must be a list of instances (batch first); got a single value")
    if arr.shape[0] == 0:
        raise InvalidInput(f"input {info.name!r}: the batch is empty: send at least one instance")
    got = arr.shape[1:]
    if len(got) != len(info.shape) or any(e >= 0 and e != g for e, g in zip(info.shape, got)):
        raise InvalidInput(f"input {info.name!r} has the wrong shape: each instance must have shape {list(info.shape)}; got {list(got)}")


def b64decode(text: str, name: str, index: int) -> bytes:
    compact = "".join(text.split())  # as TF Serving reads it: whitespace ignored, padding optional
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"input {name!r}, instance {index}: 'b64' is not valid base64") from None


def to_bytes(value: Any, name: str, index: int) -> bytes:
    """TF Serving's JSON for a bytes value: {"b64": "..."} or a plain string (its UTF-8 bytes)."""
    if type(value) is dict and len(value) == 1 and type(value.get("b64")) is str:
        return b64decode(value["b64"], name, index)
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"input {name!r}, instance {index}: the string is not valid Unicode") from None
    if isinstance(value, (bytes, bytearray, memoryview)):  # a raw body, gRPC bytes_contents
        return bytes(value)
    raise InvalidInput(f"input {name!r} takes bytes: send {{\"b64\": \"<base64>\"}} (or a string) per instance; instance {index} is a JSON {type(value).__name__}")


def byte_values(values: list, info: TensorSpec) -> list[bytes]:
    if not values:
        raise InvalidInput(f"input {info.name!r}: the batch is empty: send at least one instance")
    if info.shape:
        raise InvalidInput(f"input {info.name!r}: bytes inputs of shape {list(info.shape)} are not supported; one bytes value per instance")
    out = [to_bytes(v, info.name, i) for i, v in enumerate(values)]
    if info.max_bytes:
        big = next((i for i, v in enumerate(out) if len(v) > info.max_bytes), None)
        if big is not None:
            raise InvalidInput(f"input {info.name!r}: instance {big} is {len(out[big])} bytes, over the limit of {info.max_bytes}")
    return out


def check_batch(tensors: dict[str, Any], spec: Spec) -> int:
    sizes = {len(v) for v in tensors.values()}
    if len(sizes) > 1:
        raise InvalidInput(f"every input must have the same number of instances; got {sorted(sizes)}")
    count = sizes.pop()
    if count > spec.max_batch:
        raise InvalidInput(f"batch of {count} instances exceeds the limit of {spec.max_batch} (max_batch)")
    return count


# ----------------------------------------------------------------------------------------------
# V1: TF Serving's JSON


def loads(body: bytes | str) -> Any:
    """orjson, then (only when it refuses) the standard library's parser, which reads the NaN,
    Infinity and -Infinity tokens TF Serving's REST API accepts, so that such a body gets the
    non-finite answer rather than a parse error. ValueError when neither reads it."""
    import orjson

    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ValueError(f"the body is not valid JSON: {exc}") from None


def _tensor_v1(data: Any, info: TensorSpec, where: str) -> Any:
    if info.is_bytes:
        if not isinstance(data, list):
            data = [data]  # a scalar: one instance ('inputs': {"b64": ...})
        return byte_values(data, info)
    if isinstance(data, list) and not data:
        raise InvalidInput(f"input {info.name!r}: the batch is empty: send at least one instance")
    arr = numeric(data, info, where)
    check_instances(arr, info)
    return arr


def _is_b64(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def parse_v1(body: Any, spec: Spec) -> tuple[dict[str, Any], bool]:
    """The named inputs (one batch each) and whether the request used the row format."""
    inputs, names = spec.inputs, spec.input_names
    if isinstance(body, (bytes, bytearray)):  # a body sent without a JSON content type
        try:
            body = loads(bytes(body))
        except ValueError as exc:
            if len(inputs) == 1 and inputs[0].is_bytes:  # the raw value of the only bytes input (an image as the body)
                return {names[0]: byte_values([bytes(body)], inputs[0])}, True
            raise InvalidInput(f"Unrecognized request format: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object with 'instances' or 'inputs'")
    signature = body.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise InvalidInput(f"unknown signature_name {signature!r}; this model serves {SIGNATURE!r}")
    if ("instances" in body) == ("inputs" in body):
        raise InvalidInput("request must have exactly one of 'instances' (row format) or 'inputs' (columnar format), not both or neither")
    if "instances" in body:
        rows, where = body["instances"], "'instances'"
        if not isinstance(rows, list):
            raise InvalidInput("'instances' must be a list, one value per instance")
        if not rows:
            raise InvalidInput("the batch is empty: 'instances' must hold at least one instance")
        if isinstance(rows[0], dict) and not (len(names) == 1 and _is_b64(rows[0])):
            for row in rows:
                missing = [n for n in names if not isinstance(row, dict) or n not in row]
                if missing:
                    raise InvalidInput(f"missing input {missing[0]!r}: each instance object must hold the inputs {names}")
                extra = sorted(set(row) - set(names))
                if extra:
                    raise InvalidInput(f"unknown input {extra[0]!r}; this model takes {names}")
            columns = {n: [row[n] for row in rows] for n in names}
        elif len(names) == 1:
            columns = {names[0]: rows}
        else:
            raise InvalidInput(f"this model takes {len(names)} inputs {names}: each instance must be an object naming them")
        row_format = True
    else:
        data, where = body["inputs"], "'inputs'"
        if isinstance(data, dict) and not (len(names) == 1 and _is_b64(data)):
            missing = [n for n in names if n not in data]
            extra = sorted(set(data) - set(names))
            if extra:
                raise InvalidInput(f"unknown input {extra[0]!r}; this model takes {names}")
            if missing:
                raise InvalidInput(f"missing input {missing[0]!r}: 'inputs' must name exactly the inputs {names}")
            columns = dict(data)
        elif len(names) == 1:
            columns = {names[0]: data}
        else:
            raise InvalidInput(f"this model takes {len(names)} inputs {names}: 'inputs' must be an object naming them")
        row_format = False
    tensors = {t.name: _tensor_v1(columns[t.name], t, where) for t in inputs}
    check_batch(tensors, spec)
    return tensors, row_format


def encode_v1(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    """TF Serving's answer: one output as "predictions"/"outputs" directly, several by name. The
    arrays stay numpy: KServe's ORJSONResponse serialises them (OPT_SERIALIZE_NUMPY), as the
    TorchServe handler's orjson does."""
    names = list(outputs)
    if row_format:
        if len(names) == 1:
            return {"predictions": outputs[names[0]]}
        count = len(outputs[names[0]])
        return {"predictions": [{n: outputs[n][i] for n in names} for i in range(count)]}
    return {"outputs": outputs[names[0]] if len(names) == 1 else outputs}


# ----------------------------------------------------------------------------------------------
# V2: KServe's InferRequest (REST JSON, REST binary extension, gRPC)


def _flatten(data: Any) -> list:
    if isinstance(data, list) and any(isinstance(v, list) for v in data):
        out: list = []
        stack = [iter(data)]
        while stack:
            for v in stack[-1]:
                if isinstance(v, list):
                    stack.append(iter(v))
                    break
                out.append(v)
            else:
                stack.pop()
        return out
    return list(data) if isinstance(data, (list, tuple)) else [data]


def parse_v2(request: Any, spec: Spec) -> dict[str, Any]:
    """An InferRequest's inputs by name: arrays of the spec's dtype (bytes inputs: lists of bytes),
    batch first, checked as the V1 path checks them."""
    by_name = {t.name: t for t in spec.inputs}
    names = spec.input_names
    tensors: dict[str, Any] = {}
    for inp in request.inputs:
        info = by_name.get(inp.name)
        if info is None:
            raise InvalidInput(f"unknown input {inp.name!r}; this model takes {names}")
        if inp.name in tensors:
            raise InvalidInput(f"input {inp.name!r} is given twice")
        if inp.datatype != info.datatype:
            raise InvalidInput(f"input {inp.name!r} has the wrong datatype: it takes {info.datatype}; got {inp.datatype}")
        shape = [int(d) for d in inp.shape]
        if any(d < 0 for d in shape):
            raise InvalidInput(f"input {inp.name!r}: shape {shape} has a negative dimension")
        if not shape or shape[0] == 0:
            raise InvalidInput(f"input {inp.name!r}: the batch is empty: the shape must start with the number of instances (at least 1); got {shape}")
        if len(shape) != 1 + len(info.shape) or any(e >= 0 and e != g for e, g in zip(info.shape, shape[1:])):
            raise InvalidInput(f"input {inp.name!r} has the wrong shape: each instance must have shape {list(info.shape)} (the request's shape is [batch, ...]); got {shape}")
        count = math.prod(shape)
        raw = getattr(inp, "_raw_data", None)
        if raw is not None:  # binary: gRPC raw_input_contents or REST's binary extension
            try:
                arr = inp.as_numpy()
            except Exception as exc:  # noqa: BLE001 - any failure to read the bytes is the sender's
                raise InvalidInput(f"input {inp.name!r}: its binary data does not hold {count} {inp.datatype} values of shape {shape} ({type(exc).__name__})") from None
            values: Any = list(arr.reshape(-1)) if info.is_bytes else arr
        else:
            values = inp.data
            if values is None:
                raise InvalidInput(f"input {inp.name!r} has no data")
        if info.is_bytes:
            flat = _flatten(values)
            if len(flat) != count:
                raise InvalidInput(f"input {inp.name!r} has {len(flat)} values; its shape {shape} needs {count}")
            tensors[inp.name] = byte_values(flat, info)
            continue
        arr = values if isinstance(values, np.ndarray) and values.dtype == np.dtype(info.dtype) else numeric(values, info, "the request", check_finite=False)
        if arr.size != count:
            raise InvalidInput(f"input {inp.name!r} has {arr.size} values; its shape {shape} needs {count}")
        arr = arr.reshape(shape)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise non_finite(f"input {inp.name!r}", arr)
        tensors[inp.name] = arr
    missing = [n for n in names if n not in tensors]
    if missing:
        raise InvalidInput(f"missing input {missing[0]!r}; this model takes {names}")
    check_batch(tensors, spec)
    return tensors


# ----------------------------------------------------------------------------------------------
# images: the refusal rules of models/zoo/mobilenet.py `_decode`, to RGB uint8 HWC


def decode_image(data: bytes, name: str, index: int, max_pixels: int | None) -> np.ndarray:
    """One encoded image -> (H, W, 3) uint8; InvalidInput naming the input and instance otherwise."""
    from PIL import Image, UnidentifiedImageError

    limit = max_pixels or DEFAULT_MAX_PIXELS
    where = f" (instance {index})"
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # lazy: reads the header only
    except UnidentifiedImageError:
        raise InvalidInput(f"input {name!r} is not a decodable image ({IMAGE_KINDS}): cannot identify image file{where}") from None
    except Image.DecompressionBombError as exc:
        raise InvalidInput(f"input {name!r} is too large an image: {exc}{where}") from None
    except Exception as exc:  # noqa: BLE001 - any failure to parse the header is the sender's fault
        raise InvalidInput(f"input {name!r} is not a decodable image ({IMAGE_KINDS}): {exc}{where}") from None
    width, height = image.size
    if width * height > limit:
        raise InvalidInput(f"input {name!r} is too large an image: {width}x{height} = {width * height} pixels, over the limit of {limit}{where}")
    if width < 1 or height < 1:
        raise InvalidInput(f"input {name!r} is an empty image ({width}x{height}){where}")
    try:
        if image.format == "GIF" and getattr(image, "n_frames", 1) > 1:  # TensorFlow's DecodeJpeg refuses these
            raise InvalidInput(f"input {name!r} is an animated GIF ({image.n_frames} frames): send one still image{where}")
        if image.mode.startswith("I"):  # 16-bit grayscale PNG: keep the high byte, as libpng's strip_16 does in TensorFlow
            gray = (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
            return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
        rgb = image.convert("RGB")  # decodes; libjpeg-turbo's default DCT is the accurate integer one (JDCT_ISLOW)
        return np.asarray(rgb, dtype=np.uint8).copy()
    except InvalidInput:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise InvalidInput(f"input {name!r} is not a decodable image ({IMAGE_KINDS}): {exc}{where}") from None
