"""TensorFlow Serving's V1 REST protocol (also KServe V1's shape): predict, plus compare and model info."""

from __future__ import annotations

from typing import Awaitable, Callable

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.dataplane import DataPlane, Inference
from gateway.errors import GatewayError
from gateway.http import Outcome, backend_override, read_body, request_id, served_headers
from gateway.schemas import (
    INFERENCE_ERRORS,
    CompareResponse,
    ExplainCompareResponse,
    ExplainRequest,
    ExplainResponse,
    ModelInfo,
    ModelList,
    PredictRequest,
    PredictResponse,
    error_responses,
    request_body,
)
from gateway.validation import explain_targets, parse_json, v1_instances
from models import explain as ig

router = APIRouter(tags=["V1 (TensorFlow Serving REST)"])

BACKEND_PARAM = {"parameters": [{"name": "backend", "in": "query", "required": False, "schema": {"type": "string", "enum": ["torchserve", "tfserving"]}, "description": "serve from this stack (or send the X-Backend header)"}]}


async def _inference(plane: DataPlane, model: str, read: Callable[[], Awaitable[bytes]], outcome: Outcome) -> tuple[Inference, dict]:
    """The model's spec, the body read within its limit, and its rows validated: (inference, parsed body)."""
    spec = plane.spec(model)
    outcome.model = model
    raw = await read()
    body = parse_json(raw)
    rows, row_format = v1_instances(body, spec)
    return Inference(spec, rows, raw, row_format), body


def _reader(request: Request, plane: DataPlane) -> Callable[[], Awaitable[bytes]]:
    return lambda: read_body(request, plane.settings.max_body_bytes)


async def predict_core(plane: DataPlane, model: str, read: Callable[[], Awaitable[bytes]], override: str | None, rid: str) -> tuple[int, bytes, dict[str, str]]:
    """The whole predict exchange, free of any web framework: both the documented FastAPI route and
    the ASGI fast path (gateway/fastpath.py) answer through it. Returns (status, body, headers)."""
    outcome = Outcome("predict")
    try:
        backend = plane.check_backend(override)
        inf, _ = await _inference(plane, model, read, outcome)
        served = await plane.infer(inf, backend, rid)
        result = served.result
        outcome.backend, outcome.status = result.backend, 200
        headers = served_headers(result.backend, result.seconds, rid, served.failover_from)
        return 200, result.body, headers
    except GatewayError as exc:
        outcome.status, outcome.backend = exc.status, exc.backend or "none"
        return exc.status, exc.body(), {**exc.headers, "X-Request-ID": rid}
    finally:
        outcome.record()


@router.post(
    "/v1/models/{model}:predict",
    summary="Predict (TF Serving request and response bodies)",
    response_model=PredictResponse,
    responses=INFERENCE_ERRORS,
    openapi_extra={**request_body(PredictRequest), **BACKEND_PARAM},
)
async def predict(model: str, request: Request) -> Response:
    plane: DataPlane = request.app.state.plane
    status, body, headers = await predict_core(plane, model, _reader(request, plane), backend_override(request), request_id(request))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


@router.post(
    "/v1/models/{model}:compare",
    summary="Send one request to both stacks and compare their answers",
    response_model=CompareResponse,
    responses=INFERENCE_ERRORS,
    openapi_extra=request_body(PredictRequest),
)
async def compare(model: str, request: Request) -> Response:
    plane: DataPlane = request.app.state.plane
    rid = request_id(request)
    outcome = Outcome("compare", backend="both")
    try:
        inf, _ = await _inference(plane, model, _reader(request, plane), outcome)
        body = await plane.compare(inf, rid)
        outcome.status = 200
        return Response(orjson.dumps(body), media_type="application/json", headers={"X-Request-ID": rid})
    except GatewayError as exc:
        outcome.status = exc.status
        return exc.response(rid)
    finally:
        outcome.record()


IG_FIELDS = {"method": ig.METHOD, "integration": ig.INTEGRATION, "steps": ig.STEPS, "baseline": ig.BASELINE}


@router.post(
    "/v1/models/{model}:explain",
    summary="Integrated Gradients attributions from one stack (or both, with ?compare=true)",
    response_model=ExplainResponse | ExplainCompareResponse,
    responses=INFERENCE_ERRORS,
    openapi_extra={
        **request_body(ExplainRequest),
        "parameters": [
            *BACKEND_PARAM["parameters"],
            {"name": "compare", "in": "query", "required": False, "schema": {"type": "boolean"}, "description": "ask both stacks and compare their attributions"},
        ],
    },
)
async def explain(model: str, request: Request) -> Response:
    plane: DataPlane = request.app.state.plane
    rid = request_id(request)
    compare = request.query_params.get("compare", "").lower() in ("1", "true", "yes")
    outcome = Outcome("explain_compare" if compare else "explain", backend="both" if compare else "none")
    try:
        override = plane.check_backend(backend_override(request))
        inf, body = await _inference(plane, model, _reader(request, plane), outcome)
        targets = explain_targets(body, len(inf.rows), inf.spec)
        if compare:
            cmp = await plane.explain_compare(inf, targets, rid)
            out = {
                "model": model,
                **IG_FIELDS,
                "results": {n: {"targets": r.targets, "attributions": r.attributions, "latency_ms": round(r.seconds * 1000, 3)} for n, r in cmp.pop("results").items()},
                **cmp,
            }
            outcome.status = 200
            return Response(orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json", headers={"X-Request-ID": rid})
        result, failed = await plane.explain(inf, targets, override, rid)
        outcome.backend, outcome.status = result.backend, 200
        out = {
            "model": model,
            "backend": result.backend,
            **IG_FIELDS,
            "score": "logit",
            "explanations": [{"target": t, "attributions": a} for t, a in zip(result.targets, result.attributions)],
        }
        headers = served_headers(result.backend, result.seconds, rid, failed)
        return Response(orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json", headers=headers)
    except GatewayError as exc:
        outcome.status = exc.status
        if not compare:
            outcome.backend = exc.backend or "none"
        return exc.response(rid)
    finally:
        outcome.record()


def model_info(plane: DataPlane, name: str, states: dict[str, str]) -> dict:
    spec = plane.spec(name)
    return {
        "name": spec.name,
        "input_name": spec.input_name,
        "dtype": spec.dtype,
        "shape": list(spec.shape),
        "output_name": spec.output_name,
        "labels": list(spec.labels),
        "synthetic": spec.synthetic,
        "description": spec.description,
        "max_batch": spec.max_batch,
        "backends": states,
    }


@router.get("/v1/models", summary="Every model's spec and its state on each backend", response_model=ModelList)
async def list_models(request: Request) -> Response:
    plane: DataPlane = request.app.state.plane
    states = await plane.model_states()
    return Response(orjson.dumps({"models": [model_info(plane, m, states[m]) for m in plane.specs]}), media_type="application/json")


@router.get("/v1/models/{model}", summary="One model's spec and its state on each backend", response_model=ModelInfo, responses=error_responses(404))
async def get_model(model: str, request: Request) -> Response:
    plane: DataPlane = request.app.state.plane
    try:
        plane.spec(model)
    except GatewayError as exc:
        return exc.response()
    states = await plane.model_states()
    return Response(orjson.dumps(model_info(plane, model, states[model])), media_type="application/json")
