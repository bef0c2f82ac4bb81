"""The binary tensor data extension of the Open Inference Protocol (KServe V2), as Triton defines it.

Triton's `docs/protocol/extension_binary_data.md` (triton-inference-server/server; KServe's
"Binary Tensor Data Extension" says the same):

- A request or response that carries binary tensors has the header
  `Inference-Header-Content-Length: <bytes of the JSON object>`; the JSON object comes first, then
  the tensors' bytes, in the order their tensors appear in the JSON, with nothing between them.
- `"parameters": {"binary_data_size": <int64>}` on an input (or on a response output) says its data
  is the next that many bytes instead of a JSON `data` list.
- `"parameters": {"binary_data": <bool>}` on a requested output asks for it in binary;
  `"parameters": {"binary_data_output": <bool>}` on the request asks it for every output, unless an
  output says otherwise.
- Bytes are little-endian and row-major, without padding; BOOL is one byte (0 or 1); a BYTES element
  is a 4-byte little-endian unsigned length, then that many bytes.
- The doc's example answers a binary response as `Content-Type: application/octet-stream`.

tritonclient sends every input this way and asks for every output this way unless told otherwise,
which is why the gateway serves it. This module only moves bytes: it cuts the body into the JSON
header and each input's bytes, turns bytes into an array (or a list of bytes values) of the
declared datatype and shape, and back. Every size is checked against the body and against the
datatype and shape, so a mismatch is a 400 naming it, never an exception; what the model takes
(dtypes, shapes, batch limit) is then checked by the same validation as JSON V2.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np

from gateway.errors import bad_request

HEADER = "Inference-Header-Content-Length"
MEDIA_TYPE = "application/octet-stream"

# V2 datatype -> numpy dtype of its binary form (little-endian)
NUMPY: dict[str, np.dtype] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "?", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
        "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
        "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
    }.items()
}


def split_body(raw: bytes, header_length: str | None) -> tuple[bytes, bytes | None]:
    """(the JSON header, the bytes after it) of a body; no header: the whole body is JSON, (raw, None)."""
    if header_length is None:
        return raw, None
    text = header_length.strip()
    if not text.isdigit() or not text.isascii():
        raise bad_request(f"{HEADER} must be the JSON header's length in bytes, a non-negative integer; got {header_length!r}", "invalid_binary_data")
    length = int(text)
    if length > len(raw):
        raise bad_request(f"{HEADER} says the JSON header has {length} bytes but the body has only {len(raw)}", "invalid_binary_data")
    return raw[:length], raw[length:]


def binary_size(tensor: dict, where: str) -> int | None:
    """The input's `binary_data_size` parameter, or None when its data is JSON."""
    parameters = tensor.get("parameters")
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise bad_request(f"{where}: 'parameters' must be an object")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise bad_request(f"{where}: binary_data_size must be a non-negative integer; got {size!r}", "invalid_binary_data")
    return size


def cut_inputs(tensors: list[dict], binary: bytes | None) -> dict[str, bytes]:
    """Each binary input's bytes by name, cut from the bytes after the JSON header in the inputs' order;
    the declared sizes must account for every byte there, no more and no fewer."""
    out: dict[str, bytes] = {}
    view = memoryview(binary) if binary is not None else None
    offset = 0
    for tensor in tensors:
        where = f"input {tensor.get('name')!r}"
        size = binary_size(tensor, where)
        if size is None:
            continue
        if view is None:
            raise bad_request(f"{where} has binary_data_size but the request has no {HEADER} header: send the JSON header's length in it", "invalid_binary_data")
        if "data" in tensor:
            raise bad_request(f"{where} has both 'data' and binary_data_size: send one", "invalid_binary_data")
        if offset + size > len(view):
            raise bad_request(f"{where} declares binary_data_size {size} but only {len(view) - offset} of the {len(view)} bytes after the JSON header are left for it", "invalid_binary_data")
        out[tensor["name"]] = bytes(view[offset:offset + size])
        offset += size
    if view is not None and offset != len(view):
        raise bad_request(f"the body holds {len(view)} bytes after the JSON header but the inputs' binary_data_size add up to {offset}", "invalid_binary_data")
    return out


def decode(raw: bytes, datatype: str, shape: list[int], where: str) -> Any:
    """An input's bytes as the declared tensor: an array of that shape, or for BYTES the list of values."""
    count = math.prod(shape)
    if datatype == "BYTES":
        values = split_bytes(raw, where)
        if len(values) != count:
            raise bad_request(f"{where}: the binary data holds {len(values)} BYTES elements but shape {shape} needs {count}", "invalid_shape")
        return values
    dtype = NUMPY.get(datatype)
    if dtype is None:
        raise bad_request(f"{where}: datatype {datatype!r} is not supported in binary; use one of {', '.join(NUMPY)} or BYTES", "invalid_dtype")
    needed = count * dtype.itemsize
    if len(raw) != needed:
        raise bad_request(f"{where}: {len(raw)} bytes of binary data do not fit {datatype} of shape {shape}, which takes {needed} bytes", "invalid_shape")
    if datatype == "BOOL" and raw and max(raw) > 1:
        raise bad_request(f"{where}: BOOL binary data must be bytes 0 or 1", "invalid_dtype")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def split_bytes(raw: bytes, where: str) -> list[bytes]:
    """BYTES elements: each a 4-byte little-endian length, then that many bytes."""
    out: list[bytes] = []
    view, pos = memoryview(raw), 0
    while pos < len(view):
        if pos + 4 > len(view):
            raise bad_request(f"{where}: BYTES element {len(out)} is cut off in its 4-byte length", "invalid_binary_data")
        size = int.from_bytes(view[pos:pos + 4], "little")
        pos += 4
        if pos + size > len(view):
            raise bad_request(f"{where}: BYTES element {len(out)} declares {size} bytes but only {len(view) - pos} remain", "invalid_binary_data")
        out.append(bytes(view[pos:pos + size]))
        pos += size
    return out


def encode(value: Any, datatype: str, numpy_dtype: str) -> bytes:
    """An output's bytes: the array little-endian, or for BYTES each value length-prefixed."""
    if datatype == "BYTES":
        parts = []
        for v in np.asarray(value, dtype=object).reshape(-1).tolist():
            if isinstance(v, dict) and isinstance(v.get("b64"), str):  # a TF Serving string output
                v = base64.b64decode(v["b64"])
            data = v if isinstance(v, bytes) else str(v).encode()
            parts += [len(data).to_bytes(4, "little"), data]
        return b"".join(parts)
    return np.ascontiguousarray(value, dtype=np.dtype(numpy_dtype).newbyteorder("<")).tobytes()


def wants_binary(parameters: Any, key: str, default: bool, where: str) -> bool:
    """A `binary_data` / `binary_data_output` flag from a parameters object; absent: the default."""
    if parameters is None:
        return default
    if not isinstance(parameters, dict):
        raise bad_request(f"{where}: 'parameters' must be an object")
    flag = parameters.get(key, default)
    if not isinstance(flag, bool):
        raise bad_request(f"{where}: {key} must be true or false; got {flag!r}", "invalid_binary_data")
    return flag
