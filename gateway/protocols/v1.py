"""TensorFlow Serving's V1 REST protocol (also KServe V1's shape): predict, plus compare and model info."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.core import Call, Reply, Route
from gateway.dataplane import DataPlane, Inference, stack_states
from gateway.errors import GatewayError
from gateway.http import served_headers
from gateway.schemas import (
    INFERENCE_ERRORS,
    CompareResponse,
    ErrorBody,
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
from gateway.validation import encode_inputs, explain_targets, parse_json, raw_input, v1_inputs
from models import explain as ig
from models.spec import ModelSpec, TensorSpec

TAGS = ["V1 (TensorFlow Serving REST)"]
router = APIRouter(tags=TAGS)  # the administrative routes; the inference routes are in routes()
IG_FIELDS = {"method": ig.METHOD, "integration": ig.INTEGRATION, "steps": ig.STEPS, "baseline": ig.BASELINE}


def backend_param(names: list[str]) -> dict:
    return {"name": "backend", "in": "query", "required": False, "schema": {"type": "string", "enum": names}, "description": "serve from this backend (or send the X-Backend header)"}


async def inference(spec: ModelSpec, call: Call) -> tuple[Inference, dict]:
    """The body read within its limit and its inputs validated against the spec: (inference, parsed
    body). A JSON body is forwarded as the client sent it; a raw one (an image as the body, for a
    model with one bytes input, as TorchServe's image classifiers take it) is sent on as V1 JSON.
    Told apart by the first byte, whatever the Content-Type (curl's --data-binary sends a form
    type): a JSON request is an object, and no image format begins with "{"."""
    raw = await call.read()
    if not (len(spec.inputs) == 1 and spec.inputs[0].is_bytes) or raw.lstrip()[:1] == b"{":
        body = parse_json(raw)
        inputs, row_format = v1_inputs(body, spec)
        return Inference(spec, inputs, raw, row_format), body
    inputs = raw_input(raw, spec)
    return Inference(spec, inputs, encode_inputs(inputs, spec), True), {}


async def predict(plane: DataPlane, spec: ModelSpec, call: Call) -> Reply:
    """TF Serving's predict: the client's own bytes are forwarded once validated."""
    inf, _ = await inference(spec, call)
    served = await plane.infer(inf, call.override, call.rid)
    result = served.result
    call.outcome.backend = result.backend
    return 200, result.body, served_headers(result.backend, result.seconds, served.failover_from)


async def compare(plane: DataPlane, spec: ModelSpec, call: Call) -> Reply:
    inf, _ = await inference(spec, call)
    return 200, orjson.dumps(await plane.compare(inf, call.rid), option=orjson.OPT_SERIALIZE_NUMPY), {}


async def explain(plane: DataPlane, spec: ModelSpec, call: Call) -> Reply:
    if not spec.explainable:
        raise GatewayError(501, "not_implemented", f"model {spec.name!r} has no explanation: Integrated Gradients is served for the zoo's classifiers over one float input (an `explain` signature in the SavedModel)")
    inf, body = await inference(spec, call)
    targets = explain_targets(body, len(inf.rows), spec)
    if call.query.get("compare", "").lower() in ("1", "true", "yes"):
        call.outcome.endpoint, call.outcome.backend = "explain_compare", "both"
        cmp = await plane.explain_compare(inf, targets, call.rid)
        out = {
            "model": spec.name,
            **IG_FIELDS,
            "results": {n: {"targets": r.targets, "attributions": r.attributions, "latency_ms": round(r.seconds * 1000, 3)} for n, r in cmp.pop("results").items()},
            **cmp,
        }
        return 200, orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY), {}
    result, failed = await plane.explain(inf, targets, call.override, call.rid)
    call.outcome.backend = result.backend
    out = {
        "model": spec.name,
        "backend": result.backend,
        **IG_FIELDS,
        "score": "logit",
        "explanations": [{"target": t, "attributions": a} for t, a in zip(result.targets, result.attributions)],
    }
    return 200, orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY), served_headers(result.backend, result.seconds, failed)


async def example_verb(plane: DataPlane, spec: ModelSpec, call: Call) -> Reply:
    """TF Serving's :classify and :regress take tf.Example inputs for Classify/Regress signatures;
    the served models have a predict signature only, so the gateway says so instead of a bare 405."""
    verb = call.outcome.endpoint
    raise GatewayError(501, "not_implemented", f"the gateway serves :predict (and :compare, :explain) only; TF Serving's :{verb} needs a {verb} signature over tf.Example inputs, which model {spec.name!r} does not have: send the same rows to /v1/models/{spec.name}:predict")


def routes(backends: list[str]) -> list[Route]:
    """The V1 inference routes, served by gateway/core.py and documented from these entries."""
    param = backend_param(backends)
    return [
        Route("POST", "/v1/models/{model}:predict", "predict", predict, {
            "tags": TAGS,
            "responses": INFERENCE_ERRORS,
            "summary": "Predict (TF Serving request and response bodies)",
            "response_model": PredictResponse,
            "openapi_extra": {**request_body(PredictRequest), "parameters": [param]},
        }),
        Route("POST", "/v1/models/{model}:compare", "compare", compare, {
            "tags": TAGS,
            "responses": INFERENCE_ERRORS,
            "summary": "Send one request to every backend and compare their answers",
            "response_model": CompareResponse,
            "openapi_extra": request_body(PredictRequest),
        }, backend_label="both"),
        Route("POST", "/v1/models/{model}:explain", "explain", explain, {
            "tags": TAGS,
            "responses": {**INFERENCE_ERRORS, 501: {"model": ErrorBody, "description": "the model has no explanation (imported models, the image model)"}},
            "summary": "Integrated Gradients attributions from one backend (or all, with ?compare=true)",
            "response_model": ExplainResponse | ExplainCompareResponse,
            "openapi_extra": {
                **request_body(ExplainRequest),
                "parameters": [param, {"name": "compare", "in": "query", "required": False, "schema": {"type": "boolean"}, "description": "ask every backend and compare their attributions"}],
            },
        }),
        *(
            Route("POST", f"/v1/models/{{model}}:{verb}", verb, example_verb, {
                "tags": TAGS,
                "summary": f"TF Serving's :{verb}: not served (the models have a predict signature only); answers 501",
                "responses": {501: {"model": ErrorBody}, **error_responses(401, 404)},
                "openapi_extra": {"requestBody": {"required": False, "content": {"application/json": {"schema": {"type": "object"}}}}},
            })
            for verb in ("classify", "regress")
        ),
    ]


def tensor_info(t: TensorSpec) -> dict:
    return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}


def model_info(plane: DataPlane, name: str, replicas: dict[str, dict[str, str]]) -> dict:
    spec = plane.spec(name)
    states = stack_states({name: replicas})[name]
    return {
        "name": spec.name,
        "input_name": spec.input_name,
        "dtype": spec.dtype,
        "shape": list(spec.shape),
        "output_name": spec.output_name,
        "inputs": [tensor_info(t) for t in spec.inputs],
        "outputs": [tensor_info(t) for t in spec.outputs],
        "explainable": spec.explainable,
        "labels": list(spec.labels),
        "synthetic": spec.synthetic,
        "description": spec.description,
        "max_batch": spec.max_batch,
        "backends": states,
        "replicas": replicas,
    }


@router.get("/v1/models", summary="Every model's spec and its state on each backend", response_model=ModelList)
async def list_models(request: Request) -> Response:
    plane: DataPlane = request.app.state.plane
    replicas = await plane.replica_states()
    return Response(orjson.dumps({"models": [model_info(plane, m, replicas[m]) for m in plane.specs]}), media_type="application/json")


@router.get("/v1/models/{model}", summary="One model's spec and its state on each backend", response_model=ModelInfo, responses=error_responses(404))
async def get_model(model: str, request: Request) -> Response:
    plane: DataPlane = request.app.state.plane
    plane.spec(model)  # an unknown model raises GatewayError: a 404 from the app's handler
    replicas = await plane.replica_states()
    return Response(orjson.dumps(model_info(plane, model, replicas[model])), media_type="application/json")
