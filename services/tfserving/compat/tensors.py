"""TF Serving's JSON tensor formats: row ("instances") and columnar ("inputs") in, "predictions"/"outputs" out.

String (DT_STRING) tensors follow TF Serving's REST API (tensorflow_serving/g3doc/api_rest.md, "Encoding
binary values", "Output of binary values", "JSON mapping"; its implementation
tensorflow_serving/util/json_tensor.cc):

- In: a string input's value is either a JSON string, taken as its UTF-8 bytes, or an object holding
  exactly one key `b64` whose value is a string, `{"b64": "<base64>"}`, decoded to raw bytes
  (json_tensor.cc `IsValBase64Object`, `JsonDecodeBase64Object`). The decoding is abseil's
  `Base64Unescape`: standard alphabet, whitespace ignored, padding optional; anything else is
  INVALID_ARGUMENT "Unable to base64 decode" (here naming the input). A `{"b64": ...}` object is a
  value, never an object of named inputs: `{"instances": [{"b64": "..."}]}` feeds a signature's only
  input, and `{"inputs": {"b64": "..."}}` is a scalar (`FillTensorMapFromInstancesList`'s
  `IsElementObject`, `FillTensorMapFromInputsMap`).
- Out: a DT_STRING output whose name ends in `_bytes` is written `{"b64": "<base64>"}`, any other
  DT_STRING output as a plain JSON string (json_tensor.cc `IsNamedTensorBytes`: `dtype == DT_STRING &&
  EndsWith(name, "_bytes")`). TF Serving writes the bytes of a plain string output unchecked (not
  valid JSON when they are not UTF-8); here bytes that are not UTF-8 are decoded with U+FFFD
  replacement characters, so the answer is always valid JSON.

Only string inputs and outputs take the per-value Python path; numeric tensors go through numpy and
orjson whole, as before.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np
import orjson

from services.tfserving.compat.errors import ServingError, invalid
from services.tfserving.compat.registry import Signature, TensorInfo


def loads(body: bytes) -> Any:
    """orjson first (the hot path, unchanged); only when it refuses, the standard library's parser,
    which reads the tokens TF Serving's REST API accepts for non-finite floats (NaN, Infinity,
    -Infinity) and overflows 1e999 to infinity: such a body then gets the 400 that names the
    non-finite values (`finite`), not a parse error."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise invalid(f"JSON Parse error: {exc}") from None


def non_finite(where: str, arr: np.ndarray | None = None) -> ServingError:
    """INVALID_ARGUMENT naming the non-finite values: which kinds, how many, where the first one is."""
    found = ""
    if arr is not None:
        bad = ~np.isfinite(arr)
        kinds = [name for name, mask in (("NaN", np.isnan(arr)), ("Infinity", np.isposinf(arr)), ("-Infinity", np.isneginf(arr))) if mask.any()]
        first = [int(i) for i in np.argwhere(bad)[0]] if arr.ndim else []
        found = f" (found {', '.join(kinds)}: {int(bad.sum())} value(s), the first at {first})"
    return invalid(
        f"{where} contains non-finite values, NaN or infinite{found}: every value must be finite "
        "(NaN, Infinity, -Infinity and numbers beyond the input's float range, such as 1e39 for float32, are refused)"
    )


def finite(arr: np.ndarray, where: str) -> np.ndarray:
    """Refuse non-finite floats, on REST and gRPC alike, before the request is batched (so it never
    reaches another request's batch). The real tensorflow_model_server would hand such values to the
    model; no model served here gives a meaningful answer for them, so twinserve answers
    400 / INVALID_ARGUMENT instead, as on every other path."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise non_finite(where, arr)
    return arr


def is_b64(value: Any) -> bool:
    """`{"b64": "<string>"}` and nothing else: TF Serving's binary value (json_tensor.cc `IsValBase64Object`)."""
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def b64decode(text: str) -> bytes:
    """abseil's Base64Unescape, which TF Serving uses: standard alphabet, ASCII whitespace skipped,
    padding optional ('=' or '.'), but when present exactly the right amount. Raises ValueError."""
    if not text.isalnum():  # the common case (no '+', '/', '=', whitespace) skips the clean-up
        text = "".join(text.split()).replace(".", "=")
    data = text.rstrip("=")
    expected = (0, -1, 2, 1)[len(data) % 4]  # padding a complete encoding has; -1: a dangling character
    padding = len(text) - len(data)
    if expected < 0 or padding not in (0, expected):
        raise ValueError("Unable to base64 decode")
    try:
        return base64.b64decode(data + "=" * expected, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("Unable to base64 decode") from None


def _string_value(value: Any, info: TensorInfo, where: str, index: int) -> bytes:
    if type(value) is str:
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise invalid(f"{where}: input '{info.name}', value {index}: the string is not valid Unicode (lone surrogate)") from None
    if is_b64(value):
        try:
            return b64decode(value["b64"])
        except ValueError as exc:
            raise invalid(f"{where}: input '{info.name}', value {index}: {exc}") from None
    if isinstance(value, dict):
        raise invalid(f'{where}: input \'{info.name}\', value {index}: not formatted correctly for base64 data: expected {{"b64": "<base64 string>"}} and no other key')
    kind = "null" if value is None else "boolean" if isinstance(value, bool) else "number" if isinstance(value, (int, float)) else type(value).__name__
    raise invalid(f"{where}: input '{info.name}' expects DT_STRING values (a string or {{\"b64\": ...}}), got a JSON {kind} at value {index}")


def _strings(value: Any, info: TensorInfo, where: str) -> np.ndarray:
    """A DT_STRING tensor from JSON: the shape read along the first elements, then every list checked
    against it and every leaf converted (json_tensor.cc `GetDenseTensorShape`, `FillTensorProto`)."""
    shape: list[int] = []
    probe = value
    while type(probe) is list:
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    flat: list[bytes] = []
    rank = len(shape)

    def fill(v: Any, level: int) -> None:
        if type(v) is list:
            if level >= rank or len(v) != shape[level]:
                raise invalid(f"{where}: tensor for input '{info.name}' is ragged: every dimension must have a fixed size")
            for item in v:
                fill(item, level + 1)
        elif level != rank:
            raise invalid(f"{where}: tensor for input '{info.name}' is ragged: every dimension must have a fixed size")
        else:
            flat.append(_string_value(v, info, where, len(flat)))

    try:
        fill(value, 0)
    except RecursionError:
        raise invalid(f"{where}: tensor for input '{info.name}' is nested too deeply") from None
    arr = np.empty(len(flat), dtype=object)
    arr[:] = flat
    return arr.reshape(shape)


def check_shape(arr: np.ndarray, info: TensorInfo, where: str = "") -> np.ndarray:
    """The signature's shape (unknown dimensions match any size) and a non-empty batch, on REST and
    gRPC alike, before the request is batched: a TF 2 signature does not check shapes itself (a wrong
    one fails deep in the graph, with a message about some node, or fails the whole batch it joined)."""
    expected = info.shape
    if len(expected) != arr.ndim or any(e is not None and e != a for e, a in zip(expected, arr.shape)):
        shown = [-1 if e is None else e for e in expected]
        prefix = f"{where}: " if where else ""
        raise invalid(f"{prefix}input '{info.name}' has shape {list(arr.shape)}, which does not match the signature's {shown}")
    if arr.ndim and arr.shape[0] == 0:
        prefix = f"{where}: " if where else ""
        raise invalid(f"{prefix}input '{info.name}' is an empty batch")
    return arr


def _tensor(value: Any, info: TensorInfo, where: str) -> np.ndarray:
    if info.dtype.kind == "O":  # DT_STRING
        return check_shape(_strings(value, info, where), info, where)
    try:
        arr = np.array(value)
    except (ValueError, RecursionError):
        raise invalid(f"{where}: tensor for input '{info.name}' is ragged: every dimension must have a fixed size") from None
    if arr.dtype.kind == "O" and info.dtype.kind == "f":
        try:  # integers too large for any float (JSON allows them) are out of range, not malformed
            np.asarray(value, dtype=np.float64)
        except OverflowError:
            raise non_finite(f"{where}: input '{info.name}'") from None
        except (ValueError, TypeError):
            pass
    if arr.dtype.kind not in "fiub":
        raise invalid(f"{where}: input '{info.name}' expects {info.dtype.name} values, got {arr.dtype.kind!r}-kind data")
    with np.errstate(over="ignore"):  # beyond the input's float range becomes inf, refused below
        arr = arr.astype(info.dtype, copy=False)
    finite(arr, f"{where}: input '{info.name}'")
    return check_shape(arr, info, where)


def decode(body: Any, sig: Signature) -> tuple[dict[str, np.ndarray], bool]:
    """Return the input tensors and whether the request used the row format."""
    if not isinstance(body, dict):
        raise invalid("JSON Value: request body must be an object")
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances and has_inputs:
        raise invalid("Not formatted correctly expecting only one of 'inputs' or 'instances' keys exists")
    if not (has_instances or has_inputs):
        raise invalid("Missing 'inputs' or 'instances' key")
    names = list(sig.inputs)
    if has_instances:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise invalid("'instances' must be a non-empty JSON list")
        if isinstance(rows[0], dict) and not is_b64(rows[0]):
            try:
                columns = {n: [r[n] for r in rows] for n in names}
            except (KeyError, TypeError):
                raise invalid(f"every object in 'instances' must hold the inputs {names}") from None
        elif len(names) == 1:
            columns = {names[0]: rows}
        else:
            raise invalid(f"signature has {len(names)} inputs {names}: each instance must be an object naming them")
        tensors = {n: _tensor(columns[n], sig.inputs[n], "instances") for n in names}
    else:
        data = body["inputs"]
        if isinstance(data, dict) and not is_b64(data):
            unknown = sorted(set(data) - set(names))
            if unknown or set(data) != set(names):
                raise invalid(f"'inputs' must name exactly the signature's inputs {names}, got {sorted(data)}")
            tensors = {n: _tensor(data[n], sig.inputs[n], "inputs") for n in names}
        elif len(names) == 1:
            tensors = {names[0]: _tensor(data, sig.inputs[names[0]], "inputs")}
        else:
            raise invalid(f"signature has {len(names)} inputs {names}: 'inputs' must be an object naming them")
    sizes = {t.shape[0] for t in tensors.values() if t.ndim}
    if has_instances and len(sizes) > 1:
        raise invalid("every input must have the same number of instances")
    return tensors, has_instances


def _strings_json(arr: np.ndarray, as_bytes: bool) -> Any:
    """A DT_STRING output as nested lists: `{"b64": ...}` per value for a `_bytes` output, else text."""
    if as_bytes:
        flat: list[Any] = [{"b64": base64.b64encode(v).decode("ascii")} for v in arr.ravel()]
    else:
        flat = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.ravel()]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(arr.shape).tolist()


def encode(outputs: dict[str, np.ndarray], row_format: bool) -> bytes:
    finite_values, strings = True, False
    for v in outputs.values():  # one look per output, never per value
        kind = v.dtype.kind
        if kind == "f":
            finite_values = finite_values and bool(np.isfinite(v).all())
        elif kind == "O":  # DT_STRING
            strings = True
    if strings:
        outputs = {k: _strings_json(v, k.endswith("_bytes")) if v.dtype.kind == "O" else v for k, v in outputs.items()}  # type: ignore[misc]
    names = list(outputs)
    if row_format:
        if len(names) == 1:
            body: Any = {"predictions": outputs[names[0]]}
        else:
            n = len(next(iter(outputs.values())))
            body = {"predictions": [{k: outputs[k][i] for k in names} for i in range(n)]}
    else:
        body = {"outputs": outputs[names[0]] if len(names) == 1 else outputs}
    if finite_values:
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    # TF Serving writes NaN / Infinity tokens; orjson would write null
    return json.dumps(body, default=lambda a: a.tolist()).encode()
