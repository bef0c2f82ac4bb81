"""Request and response shapes for the OpenAPI schema. The hot path does not build these:
bodies are validated with numpy and forwarded as bytes; these models document them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    type: str = Field(description="machine-readable error kind, e.g. invalid_shape, unknown_model, backend_timeout")
    message: str
    backend: str | None = Field(None, description="the backend the error concerns, if any")


class ErrorBody(BaseModel):
    error: ErrorDetail


class PredictRequest(BaseModel):
    """TensorFlow Serving's predict body: exactly one of `instances` or `inputs`."""

    signature_name: str | None = Field(None, description="only 'serving_default'")
    instances: list[Any] | None = Field(None, description="row format: one entry per instance")
    inputs: Any | None = Field(None, description="columnar format: one tensor, or {input_name: tensor}")


class ExplainRequest(PredictRequest):
    """A predict body plus the class to explain: one int for every row, a list (one per row), or absent
    (each row's predicted class)."""

    target: int | list[int] | None = None


class RowExplanation(BaseModel):
    target: int
    attributions: list[Any] = Field(description="same shape as the instance")


class ExplainResponse(BaseModel):
    model: str
    backend: str
    method: str
    integration: str
    steps: int
    baseline: str
    score: str = Field(description="what is attributed: the target class's logit")
    explanations: list[RowExplanation]


class BackendExplanation(BaseModel):
    targets: list[int]
    attributions: list[Any]
    latency_ms: float


class ExplainCompareResponse(BaseModel):
    model: str
    method: str
    integration: str
    steps: int
    baseline: str
    results: dict[str, BackendExplanation]
    max_abs_diff: float
    correlation: list[float] = Field(description="per row, between the two stacks' attributions")
    targets_agree: bool


class PredictResponse(BaseModel):
    predictions: list[Any] | None = Field(None, description="for a row-format request: class probabilities per instance")
    outputs: Any | None = Field(None, description="for a columnar request")


class BackendResult(BaseModel):
    predictions: list[Any] | dict[str, list[Any]] | None = Field(None, description="the one output per instance, or every output by name")
    latency_ms: float | None = None
    error: dict[str, str] | None = None


class CompareResponse(BaseModel):
    model: str
    instances: int
    results: dict[str, BackendResult]
    max_abs_diff: float | None
    classes_agree: bool | None
    classes: dict[str, list[int]] | None = None


class TensorInfo(BaseModel):
    name: str
    dtype: str = Field(description="float32, float16, float64, int8, uint8, int32, int64, bool or bytes")
    shape: list[int] = Field(description="per instance; -1: any size")


class ModelInfo(BaseModel):
    name: str
    input_name: str = Field(description="the first input's name (the zoo's models have one)")
    dtype: str = Field(description="the first input's dtype")
    shape: list[int] = Field(description="the first input's shape per instance")
    output_name: str = Field(description="the first output's name")
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    explainable: bool = Field(description="served by :explain (the zoo's classifiers)")
    labels: list[str]
    synthetic: bool
    description: str
    max_batch: int
    backends: dict[str, str] = Field(description="state of the model on each backend")


class ModelList(BaseModel):
    models: list[ModelInfo]


class V2Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["FP32", "FP64", "INT32", "INT64"] | str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2OutputRequest(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor]
    outputs: list[V2OutputRequest] | None = None


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[V2Tensor]


class V2TensorMeta(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMeta]
    outputs: list[V2TensorMeta]


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


# what any route that calls a backend can answer besides 200
INFERENCE_ERRORS = error_responses(400, 401, 404, 413, 429, 502, 503, 504)


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    models: dict[str, dict[str, str]] = Field(description="model -> backend -> state")
    circuits: dict[str, str]
    routing: dict[str, Any]
    implementations: dict[str, str] = Field(description="backend -> what serves it (the TF backend says whether it is TensorFlow Serving or the compatible server)")


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool
    backends: dict[str, str]


REQUEST_MODELS: list[type[BaseModel]] = [PredictRequest, ExplainRequest, V2InferRequest]


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """openapi_extra that documents a body the route reads as raw bytes."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def request_components() -> dict[str, Any]:
    """Component schemas for the request models, merged into the OpenAPI document once."""
    out: dict[str, Any] = {}
    for model in REQUEST_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def model_parameter_enum(schema: dict[str, Any], models: list[str]) -> None:
    """Document the `model` path parameter as the zoo's names (others answer 404)."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for param in operation.get("parameters", []):
                if param.get("name") == "model" and param.get("in") == "path":
                    param["schema"] = {"type": "string", "enum": list(models), "title": "Model"}
