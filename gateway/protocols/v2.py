"""The Open Inference Protocol (KServe V2), so KServe and Triton clients work unchanged.

Besides the core protocol (health, metadata, infer), the three extensions Triton's clients use
against a plain server, listed in the server metadata's `extensions`:
- `binary_tensor_data`: inputs and outputs as raw bytes after the JSON header (gateway/protocols/v2_binary.py),
  which tritonclient sends and asks for by default;
- `model_configuration`: `GET /v2/models/{model}/config`, Triton's model config derived from the spec;
- `statistics`: `GET /v2/models[/{model}]/stats`, counted by the gateway (gateway/stats.py).
A binary request is validated like a JSON one (the spec's dtypes, shapes and batch limit) and sent to
the stacks as the same V1 JSON: one request path, whatever the encoding on the client's side.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass

import numpy as np
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway import stats
from gateway.core import Call, Reply, Route
from gateway.dataplane import DataPlane
from gateway.errors import GatewayError, bad_request
from gateway.http import served_headers
from gateway.protocols import v2_binary
from gateway.protocols.v1 import backend_param
from gateway.schemas import V2InferResponse, V2Live, V2ModelConfig, V2ModelMetadata, V2ModelReady, V2ModelStats, V2Ready, V2ServerMetadata, INFERENCE_ERRORS, error_responses
from gateway.validation import Tensors, batch_size, parse_json, to_array, to_tensor
from models.spec import ModelSpec, TensorSpec
from models import __version__

TAGS = ["V2 (Open Inference Protocol)"]
router = APIRouter(tags=TAGS)  # metadata and health; the inference route is in routes()

NUMERIC = {"FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
VERSION = __version__
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]
# V2 datatype -> the data_type of Triton's model configuration (BYTES is TYPE_STRING there)
CONFIG_TYPES = {"BYTES": "TYPE_STRING", **{d: f"TYPE_{d}" for d in (*NUMERIC, "BOOL")}}


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


@dataclass
class InferRequest:
    """A parsed V2 infer body: the inputs by name, the client's id, and each output to answer with
    whether it goes back as binary data."""

    inputs: Tensors
    id: str | None
    outputs: list[tuple[TensorSpec, bool]]


def parse_infer(body: object, spec: ModelSpec, binary: bytes | None = None, raws: dict[str, bytes] | None = None) -> InferRequest:
    """A V2 infer body (the JSON header of a binary request, with the bytes after it) -> the request.
    `raws`: each input's binary data by name, when the transport carries it beside the body (gRPC's
    raw_input_contents) instead of after it."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise bad_request("V2 infer body must be an object with an 'inputs' list")
    names = [t.name for t in spec.inputs]
    given: dict[str, dict] = {}
    for tensor in body["inputs"]:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise bad_request("each entry of 'inputs' must be an object with a 'name'")
        if tensor["name"] not in names:
            raise bad_request(f"unknown input tensor {tensor['name']!r}; model {spec.name!r} takes {names}", "unknown_input")
        if tensor["name"] in given:
            raise bad_request(f"input tensor {tensor['name']!r} is given twice")
        given[tensor["name"]] = tensor
    if raws is None:
        raws = v2_binary.cut_inputs(body["inputs"], binary)  # in the order the body lists them
    missing = [n for n in names if n not in given]
    if missing:
        raise bad_request(f"missing input tensor {missing[0]!r}; model {spec.name!r} takes {names}", "missing_input")
    inputs = {t.name: parse_tensor(given[t.name], t, spec, raws.get(t.name)) for t in spec.inputs}
    batch_size(inputs)
    request_id = body.get("id")
    return InferRequest(inputs, request_id if isinstance(request_id, str) else None, parse_outputs(body, spec))


def parse_outputs(body: dict, spec: ModelSpec) -> list[tuple[TensorSpec, bool]]:
    """The outputs asked for (none or an empty list: all), in the spec's order, each with whether it
    is answered as binary (its `binary_data`, else the request's `binary_data_output`, else JSON)."""
    default = v2_binary.wants_binary(body.get("parameters"), "binary_data_output", False, "the request")
    asked = body.get("outputs")
    if asked is None or asked == []:
        return [(t, default) for t in spec.outputs]
    if not isinstance(asked, list):
        raise bad_request("'outputs' must be a list of objects with a 'name'")
    known = [t.name for t in spec.outputs]
    binary: dict[str, bool] = {}
    for entry in asked:
        if not isinstance(entry, dict):
            raise bad_request("each entry of 'outputs' must be an object with a 'name'")
        name = entry.get("name")
        if name not in known:
            raise bad_request(f"unknown output {name!r}; model {spec.name!r} has {known}", "unknown_output")
        binary[name] = v2_binary.wants_binary(entry.get("parameters"), "binary_data", default, f"output {name!r}")
    return [(t, binary[t.name]) for t in spec.outputs if t.name in binary]


def parse_tensor(tensor: dict, t: TensorSpec, spec: ModelSpec, raw: bytes | None = None) -> object:
    """One V2 input: its datatype must be the spec's (numbers may come as another numeric type),
    its shape [N, *shape], its data that many values, flat or nested in JSON, or `raw`, its binary data."""
    where = f"input {t.name!r}"
    datatype = tensor.get("datatype")
    if t.is_bytes:
        if datatype != "BYTES":
            raise bad_request(f"{where} takes BYTES; got datatype {datatype!r}", "invalid_dtype")
    elif datatype not in NUMERIC and datatype != "BOOL":
        raise bad_request(f"{where}: datatype {datatype!r} is not supported; send {t.v2_datatype}", "invalid_dtype")
    elif (datatype == "BOOL") != (t.dtype == "bool"):
        raise bad_request(f"{where} takes {t.v2_datatype}; got datatype {datatype!r}", "invalid_dtype")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise bad_request(f"{where}: 'shape' must be a list of non-negative integers")
    if raw is not None:
        data = v2_binary.decode(raw, datatype, shape, where)
    else:
        data = tensor.get("data")
        if not isinstance(data, list):
            raise bad_request(f"{where}: 'data' must be a list (or binary data, with binary_data_size in its parameters)")
    if t.is_bytes:
        try:
            flat = data if raw is not None else flatten(data)
        except RecursionError:
            raise bad_request(f"{where}: 'data' is nested too deeply") from None
        if len(shape) != 1 or shape[0] != len(flat):
            raise bad_request(f"{where}: a BYTES input takes shape [N] with N values; got shape {shape} and {len(flat)} values", "invalid_shape")
        # an image is not UTF-8: in JSON, V2 carries it base64-encoded; in binary, as it is
        return to_tensor(flat, spec, t, where, plain_is_b64=t.max_pixels is not None)
    if raw is not None:
        return to_array(data, spec, where, t)
    values = to_flat(data)
    expected = math.prod(shape)  # Python integers: a huge shape is a mismatch, not an overflow
    if values.size != expected:
        raise bad_request(f"{where}: 'data' holds {values.size} values but 'shape' {shape} needs {expected}", "invalid_shape")
    return to_array(values.reshape(shape), spec, where, t)


def flatten(data: list) -> list:
    out: list = []
    for v in data:
        out.extend(flatten(v) if isinstance(v, list) else [v])
    return out


def to_flat(data: list) -> np.ndarray:
    try:
        arr = np.array(data)
    except (ValueError, TypeError):
        raise bad_request("'data' must be a flat or rectangular list of numbers") from None
    if arr.dtype.kind == "O":
        raise bad_request("'data' must be a flat or rectangular list of numbers")
    if arr.dtype.kind not in "fiub":
        raise bad_request("'data' must hold numbers", "invalid_dtype")
    return arr.reshape(-1)


async def infer(plane: DataPlane, spec: ModelSpec, call: Call) -> Reply:
    """V2 infer: the tensors (JSON or binary) validated, sent to a stack as V1 JSON, its answer
    re-shaped as V2 outputs, each as JSON or, when asked, as binary data after the JSON."""
    raw = await call.read()
    header, binary = v2_binary.split_body(raw, call.headers.get("inference-header-content-length"))
    try:
        parsed = parse_json(header)
    except GatewayError as exc:
        if binary is None and b'"binary_data_size"' in raw:  # binary data sent without saying where the JSON ends
            raise bad_request(f"{exc.message}; a body carrying binary tensor data needs the {v2_binary.HEADER} header (the JSON object's length in bytes)", exc.type) from None
        raise
    request = parse_infer(parsed, spec, binary)
    served, answer = await plane.infer_tensors(spec, request.inputs, call.override, call.rid)
    result = served.result
    outputs, blobs = [], []
    for t, as_binary in request.outputs:
        value = answer[t.name]
        output: dict = {"name": t.name, "shape": list(value.shape), "datatype": t.v2_datatype}
        if as_binary:
            blob = v2_binary.encode(value, t.v2_datatype, t.numpy_dtype)
            output["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            output["data"] = [base64.b64encode(v).decode() if isinstance(v, bytes) else v for v in value.reshape(-1).tolist()] if t.is_bytes else value.reshape(-1)
        outputs.append(output)
    body = orjson.dumps({
        "model_name": spec.name,
        "model_version": str(spec.version),
        "id": request.id or call.rid,
        "parameters": {"backend": result.backend, **({"failover_from": served.failover_from} if served.failover_from else {})},
        "outputs": outputs,
    }, option=orjson.OPT_SERIALIZE_NUMPY)
    call.outcome.backend = result.backend
    headers = served_headers(result.backend, result.seconds, served.failover_from)
    if blobs:
        headers[v2_binary.HEADER] = str(len(body))
        headers["Content-Type"] = v2_binary.MEDIA_TYPE
        body += b"".join(blobs)
    return 200, body, headers


def routes(backends: list[str]) -> list[Route]:
    """The V2 inference route, served by gateway/core.py and documented from this entry."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return [
        Route("POST", "/v2/models/{model}/infer", "v2_infer", infer, {
            "tags": TAGS,
            "summary": "Infer (Open Inference Protocol; binary tensor data extension)",
            "description": "A JSON body, or (binary tensor data extension) the JSON object followed by the binary inputs' bytes, "
            "with Inference-Header-Content-Length giving the JSON's length. Outputs asked for as binary follow the JSON answer "
            "the same way (Content-Type application/octet-stream, Inference-Header-Content-Length in the answer).",
            "response_model": V2InferResponse,
            "responses": {**INFERENCE_ERRORS, 200: {"description": "the outputs; with binary outputs, the JSON answer then their bytes", "content": {v2_binary.MEDIA_TYPE: binary}}},
            "openapi_extra": {
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/V2InferRequest"}}, v2_binary.MEDIA_TYPE: binary}},
                "parameters": [
                    backend_param(backends),
                    {"name": v2_binary.HEADER, "in": "header", "required": False, "schema": {"type": "integer", "minimum": 0}, "description": "binary tensor data extension: the length in bytes of the JSON object that starts the body"},
                ],
            },
        }),
    ]


def model_config(spec: ModelSpec, platform: str, backends: list[str]) -> dict:
    """Triton's model configuration for a spec: the batch dimension is implicit (max_batch_size), dims
    are per instance (-1: any size), and a scalar per instance is dims [1] reshaped to [], as in Triton."""

    def tensor(t: TensorSpec) -> dict:
        out: dict = {"name": t.name, "data_type": CONFIG_TYPES[t.v2_datatype], "dims": list(t.shape) or [1]}
        if not t.shape:
            out["reshape"] = {"shape": []}
        return out

    return {
        "name": spec.name,
        "platform": platform,
        "backend": "twinserve",
        "max_batch_size": spec.max_batch,
        "version_policy": {"latest": {"num_versions": 1}},
        "input": [tensor(t) for t in spec.inputs],
        "output": [tensor(t) for t in spec.outputs],
        "parameters": {"backends": {"string_value": ",".join(backends)}},
    }


def platform_of(plane: DataPlane) -> str:
    return "twinserve (" + " + ".join(plane.names) + ")"


@router.get("/v2/models/stats", summary="Statistics of every model (statistics extension)", response_model=V2ModelStats)
async def all_statistics(request: Request) -> Response:
    plane: DataPlane = request.app.state.plane
    return _json({"model_stats": stats.model_stats({name: str(spec.version) for name, spec in plane.specs.items()})})


@router.get("/v2/models/{model}/stats", summary="Model statistics (statistics extension)", response_model=V2ModelStats, responses=error_responses(404))
async def model_statistics(model: str, request: Request) -> Response:
    plane: DataPlane = request.app.state.plane
    spec = plane.spec(model)  # an unknown model raises GatewayError: a 404 from the app's handler
    return _json({"model_stats": stats.model_stats({spec.name: str(spec.version)})})


@router.get("/v2/models/{model}/config", summary="Model configuration (model configuration extension)", response_model=V2ModelConfig, responses=error_responses(404))
async def model_configuration(model: str, request: Request) -> Response:
    plane: DataPlane = request.app.state.plane
    spec = plane.spec(model)  # an unknown model raises GatewayError: a 404 from the app's handler
    return _json(model_config(spec, platform_of(plane), plane.names))


def metadata(plane: DataPlane, spec: ModelSpec) -> dict:
    """A model's V2 metadata, from its spec (both transports answer it)."""
    return {
        "name": spec.name,
        "versions": [str(spec.version)],
        "platform": platform_of(plane),
        "inputs": [{"name": t.name, "datatype": t.v2_datatype, "shape": [-1, *t.shape]} for t in spec.inputs],
        "outputs": [{"name": t.name, "datatype": t.v2_datatype, "shape": [-1, *t.shape]} for t in spec.outputs],
    }


def server_metadata_body() -> dict:
    return {"name": "twinserve", "version": VERSION, "extensions": EXTENSIONS}


async def model_states(plane: DataPlane, model: str) -> dict[str, str]:
    """The model's state on each backend; it is ready when any backend serves it."""
    return (await plane.model_states())[model]


async def server_is_ready(plane: DataPlane) -> bool:
    """Ready when every model is served by at least one backend."""
    return all(any(s == "READY" for s in b.values()) for b in (await plane.model_states()).values())


@router.get("/v2/models/{model}", summary="Model metadata", response_model=V2ModelMetadata, responses=error_responses(404))
async def model_metadata(model: str, request: Request) -> Response:
    plane: DataPlane = request.app.state.plane
    return _json(metadata(plane, plane.spec(model)))  # an unknown model raises GatewayError: a 404 from the app's handler


@router.get("/v2/models/{model}/ready", summary="Model readiness (served by at least one backend)", response_model=V2ModelReady, responses={**error_responses(404), 503: {"model": V2ModelReady}})
async def model_ready(model: str, request: Request) -> Response:
    plane: DataPlane = request.app.state.plane
    plane.spec(model)  # an unknown model raises GatewayError: a 404 from the app's handler
    states = await model_states(plane, model)
    ready = any(s == "READY" for s in states.values())
    return _json({"name": model, "ready": ready, "backends": states}, 200 if ready else 503)


@router.get("/v2/health/live", summary="Server liveness", response_model=V2Live)
async def live() -> Response:
    return _json({"live": True})


@router.get("/v2/health/ready", summary="Server readiness: every model served by at least one backend", response_model=V2Ready, responses={503: {"model": V2Ready}})
async def ready(request: Request) -> Response:
    ok = await server_is_ready(request.app.state.plane)
    return _json({"ready": ok}, 200 if ok else 503)


@router.get("/v2", summary="Server metadata", response_model=V2ServerMetadata)
async def server_metadata() -> Response:
    return _json(server_metadata_body())
