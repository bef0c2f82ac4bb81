"""TF Serving's JSON tensor formats: row ("instances") and columnar ("inputs") in, "predictions"/"outputs" out."""

from __future__ import annotations

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


def _tensor(value: Any, info: TensorInfo, where: str) -> np.ndarray:
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
    expected = info.shape
    if len(expected) != arr.ndim or any(e is not None and e != a for e, a in zip(expected, arr.shape)):
        shown = [-1 if e is None else e for e in expected]
        raise invalid(f"{where}: input '{info.name}' has shape {list(arr.shape)}, which does not match the signature's {shown}")
    if arr.ndim and arr.shape[0] == 0:
        raise invalid(f"{where}: input '{info.name}' is an empty batch")
    return arr


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
        if isinstance(rows[0], dict):
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
        if isinstance(data, dict):
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


def encode(outputs: dict[str, np.ndarray], row_format: bool) -> bytes:
    names = list(outputs)
    if row_format:
        if len(names) == 1:
            body: Any = {"predictions": outputs[names[0]]}
        else:
            n = len(next(iter(outputs.values())))
            body = {"predictions": [{k: outputs[k][i] for k in names} for i in range(n)]}
    else:
        body = {"outputs": outputs[names[0]] if len(names) == 1 else outputs}
    if all(np.isfinite(v).all() for v in outputs.values() if v.dtype.kind == "f"):
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    # TF Serving writes NaN / Infinity tokens; orjson would write null
    return json.dumps(body, default=lambda a: a.tolist()).encode()
