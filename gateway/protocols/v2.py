"""The Open Inference Protocol (KServe V2), so KServe and Triton clients work unchanged."""

from __future__ import annotations

import numpy as np
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.core import Call, Reply, Route
from gateway.dataplane import DataPlane, Inference, v1_body
from gateway.errors import GatewayError, bad_request
from gateway.http import served_headers
from gateway.protocols.v1 import backend_param
from gateway.schemas import V2InferRequest, V2InferResponse, V2Live, V2ModelMetadata, V2ModelReady, V2Ready, V2ServerMetadata, INFERENCE_ERRORS, error_responses, request_body
from gateway.validation import outputs_of, parse_json, to_array
from models.spec import ModelSpec
from models import __version__

TAGS = ["V2 (Open Inference Protocol)"]
router = APIRouter(tags=TAGS)  # metadata and health; the inference route is in routes()

NUMERIC = {"FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
VERSION = __version__


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def parse_infer(body: object, spec: ModelSpec) -> tuple[np.ndarray, str | None]:
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise bad_request("V2 infer body must be an object with an 'inputs' list")
    inputs = body["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise bad_request(f"model {spec.name!r} takes exactly one input tensor, {spec.input_name!r}")
    tensor = inputs[0]
    if tensor.get("name") != spec.input_name:
        raise bad_request(f"input tensor must be named {spec.input_name!r}; got {tensor.get('name')!r}")
    datatype = tensor.get("datatype")
    if datatype not in NUMERIC:
        raise bad_request(f"datatype {datatype!r} is not supported; send FP32 (or another numeric type)", "invalid_dtype")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise bad_request("'shape' must be a list of non-negative integers")
    data = tensor.get("data")
    if not isinstance(data, list):
        raise bad_request("'data' must be a list")
    values = to_flat(data)
    expected = int(np.prod(shape)) if shape else 1
    if values.size != expected:
        raise bad_request(f"'data' holds {values.size} values but 'shape' {shape} needs {expected}", "invalid_shape")
    arr = to_array(values.reshape(shape), spec, "data")
    request_id = body.get("id")
    return arr, request_id if isinstance(request_id, str) else None


def to_flat(data: list) -> np.ndarray:
    try:
        arr = np.array(data)
    except (ValueError, TypeError):
        raise bad_request("'data' must be a flat or rectangular list of numbers") from None
    if arr.dtype.kind == "O":
        raise bad_request("'data' must be a flat or rectangular list of numbers")
    if arr.dtype.kind not in "fiu":
        raise bad_request("'data' must hold numbers", "invalid_dtype")
    return arr.reshape(-1)


async def infer(plane: DataPlane, spec: ModelSpec, call: Call) -> Reply:
    """V2 infer: the tensor validated, sent to a stack as V1 rows, its answer re-shaped as V2 outputs."""
    rows, client_id = parse_infer(parse_json(await call.read()), spec)
    served = await plane.infer(Inference(spec, rows, v1_body(rows), True), call.override, call.rid)
    result = served.result
    probs = outputs_of(result.body, result.backend)
    body = {
        "model_name": spec.name,
        "model_version": str(spec.version),
        "id": client_id or call.rid,
        "parameters": {"backend": result.backend, **({"failover_from": served.failover_from} if served.failover_from else {})},
        "outputs": [{"name": spec.output_name, "shape": list(probs.shape), "datatype": "FP32", "data": probs.reshape(-1)}],
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
            "inputs": [{"name": spec.input_name, "datatype": "FP32", "shape": [-1, *spec.shape]}],
            "outputs": [{"name": spec.output_name, "datatype": "FP32", "shape": [-1, spec.num_classes]}],
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
