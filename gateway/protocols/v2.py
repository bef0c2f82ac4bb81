"""The Open Inference Protocol (KServe V2), so KServe and Triton clients work unchanged."""

from __future__ import annotations

import base64

import numpy as np
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.core import Call, Reply, Route
from gateway.dataplane import DataPlane, Inference
from gateway.errors import GatewayError, bad_request
from gateway.http import served_headers
from gateway.protocols.v1 import backend_param
from gateway.schemas import V2InferRequest, V2InferResponse, V2Live, V2ModelMetadata, V2ModelReady, V2Ready, V2ServerMetadata, INFERENCE_ERRORS, error_responses, request_body
from gateway.validation import Tensors, batch_size, encode_inputs, outputs_of, parse_json, to_array, to_tensor
from models.spec import ModelSpec, TensorSpec
from models import __version__

TAGS = ["V2 (Open Inference Protocol)"]
router = APIRouter(tags=TAGS)  # metadata and health; the inference route is in routes()

NUMERIC = {"FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
VERSION = __version__


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def parse_infer(body: object, spec: ModelSpec) -> tuple[Tensors, str | None, list[str] | None]:
    """A V2 infer body -> (inputs by name, the client's id, the outputs asked for or None for all)."""
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
    missing = [n for n in names if n not in given]
    if missing:
        raise bad_request(f"missing input tensor {missing[0]!r}; model {spec.name!r} takes {names}", "missing_input")
    inputs = {t.name: parse_tensor(given[t.name], t, spec) for t in spec.inputs}
    batch_size(inputs)
    request_id = body.get("id")
    wanted = None
    if isinstance(body.get("outputs"), list):
        wanted = [o.get("name") for o in body["outputs"] if isinstance(o, dict)]
        unknown = [w for w in wanted if w not in {t.name for t in spec.outputs}]
        if unknown:
            raise bad_request(f"unknown output {unknown[0]!r}; model {spec.name!r} has {[t.name for t in spec.outputs]}", "unknown_output")
    return inputs, request_id if isinstance(request_id, str) else None, wanted


def parse_tensor(tensor: dict, t: TensorSpec, spec: ModelSpec) -> object:
    """One V2 input: its datatype must be the spec's (numbers may come as another numeric type),
    its shape [N, *shape], its data that many values, flat or nested."""
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
    data = tensor.get("data")
    if not isinstance(data, list):
        raise bad_request(f"{where}: 'data' must be a list")
    if t.is_bytes:
        flat = flatten(data)
        if len(shape) != 1 or shape[0] != len(flat):
            raise bad_request(f"{where}: a BYTES input takes shape [N] with N values; got shape {shape} and {len(flat)} values", "invalid_shape")
        # an image is not UTF-8: V2's JSON carries it base64-encoded (the binary extension is not served)
        return to_tensor(flat, spec, t, where, plain_is_b64=t.max_pixels is not None)
    values = to_flat(data)
    expected = int(np.prod(shape)) if shape else 1
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
    """V2 infer: the tensors validated, sent to a stack as V1 JSON, its answer re-shaped as V2 outputs."""
    inputs, client_id, wanted = parse_infer(parse_json(await call.read()), spec)
    served = await plane.infer(Inference(spec, inputs, encode_inputs(inputs, spec), len(spec.inputs) == 1), call.override, call.rid)
    result = served.result
    answer = outputs_of(result.body, result.backend, spec)
    outputs = []
    for t in spec.outputs:
        if wanted is not None and t.name not in wanted:
            continue
        value = answer[t.name]
        data = [base64.b64encode(v).decode() if isinstance(v, bytes) else v for v in value.reshape(-1).tolist()] if t.is_bytes else value.reshape(-1)
        outputs.append({"name": t.name, "shape": list(value.shape), "datatype": t.v2_datatype, "data": data})
    body = {
        "model_name": spec.name,
        "model_version": str(spec.version),
        "id": client_id or call.rid,
        "parameters": {"backend": result.backend, **({"failover_from": served.failover_from} if served.failover_from else {})},
        "outputs": outputs,
    }
    call.outcome.backend = result.backend
    return 200, orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), served_headers(result.backend, result.seconds, served.failover_from)


def routes(backends: list[str]) -> list[Route]:
    """The V2 inference route, served by gateway/core.py and documented from this entry."""
    return [
        Route("POST", "/v2/models/{model}/infer", "v2_infer", infer, {
            "tags": TAGS,
            "summary": "Infer (Open Inference Protocol)",
            "response_model": V2InferResponse,
            "responses": INFERENCE_ERRORS,
            "openapi_extra": {**request_body(V2InferRequest), "parameters": [backend_param(backends)]},
        }),
    ]


@router.get("/v2/models/{model}", summary="Model metadata", response_model=V2ModelMetadata, responses=error_responses(404))
async def model_metadata(model: str, request: Request) -> Response:
    plane: DataPlane = request.app.state.plane
    try:
        spec = plane.spec(model)
    except GatewayError as exc:
        return exc.response()
    return _json(
        {
            "name": spec.name,
            "versions": [str(spec.version)],
            "platform": "twinserve (" + " + ".join(plane.names) + ")",
            "inputs": [{"name": t.name, "datatype": t.v2_datatype, "shape": [-1, *t.shape]} for t in spec.inputs],
            "outputs": [{"name": t.name, "datatype": t.v2_datatype, "shape": [-1, *t.shape]} for t in spec.outputs],
        }
    )


@router.get("/v2/models/{model}/ready", summary="Model readiness (served by at least one backend)", response_model=V2ModelReady, responses={**error_responses(404), 503: {"model": V2ModelReady}})
async def model_ready(model: str, request: Request) -> Response:
    plane: DataPlane = request.app.state.plane
    try:
        plane.spec(model)
    except GatewayError as exc:
        return exc.response()
    states = (await plane.model_states())[model]
    ready = any(s == "READY" for s in states.values())
    return _json({"name": model, "ready": ready, "backends": states}, 200 if ready else 503)


@router.get("/v2/health/live", summary="Server liveness", response_model=V2Live)
async def live() -> Response:
    return _json({"live": True})


@router.get("/v2/health/ready", summary="Server readiness: every model served by at least one backend", response_model=V2Ready, responses={503: {"model": V2Ready}})
async def ready(request: Request) -> Response:
    plane: DataPlane = request.app.state.plane
    states = await plane.model_states()
    ok = all(any(s == "READY" for s in b.values()) for b in states.values())
    return _json({"ready": ok}, 200 if ok else 503)


@router.get("/v2", summary="Server metadata", response_model=V2ServerMetadata)
async def server_metadata() -> Response:
    return _json({"name": "twinserve", "version": VERSION, "extensions": []})
