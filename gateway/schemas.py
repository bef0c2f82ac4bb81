"""Request and response shapes for the OpenAPI schema. The hot path does not build these:
bodies are validated with numpy and forwarded as bytes; these models document them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Both protocols' error body, {"error": "<message>"}, with the gateway's detail beside it."""

    error: str = Field(description="what went wrong, in words (TF Serving's and KServe V2's error body)")
    type: str = Field(description="machine-readable error kind, e.g. invalid_shape, unknown_model, backend_timeout")
    backend: str | None = Field(None, description="the backend the error concerns, if any")


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
    error: str | None = Field(None, description="this backend's error, when it failed")
    type: str | None = Field(None, description="its machine-readable kind")


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
    backends: dict[str, str] = Field(description="state of the model on each backend (READY when any of its replicas is)")
    replicas: dict[str, dict[str, str]] = Field(description="backend -> replica (address:port) -> state of the model there")


class ModelList(BaseModel):
    models: list[ModelInfo]


class V2Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["FP32", "FP64", "INT32", "INT64"] | str
    data: list[Any] | None = Field(None, description="the values, flat or nested; absent when the tensor travels as binary data after the JSON header")
    parameters: dict[str, Any] | None = Field(None, description='binary tensor data extension: {"binary_data_size": <bytes>} when the values travel as binary')


class V2OutputRequest(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(None, description='binary tensor data extension: {"binary_data": true} to answer this output as binary')


class V2InferRequest(BaseModel):
    """The V2 infer body. With the binary tensor data extension the body is this JSON object, as many
    bytes as the Inference-Header-Content-Length header says, followed by the binary inputs' bytes."""

    id: str | None = None
    parameters: dict[str, Any] | None = Field(None, description='{"binary_data_output": true}: every output as binary, unless the output says otherwise')
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
    extensions: list[str] = Field(description="the extensions served: binary_tensor_data, model_configuration, statistics")


class V2ConfigReshape(BaseModel):
    shape: list[int]


class V2ConfigTensor(BaseModel):
    name: str
    data_type: str = Field(description="Triton's type name: TYPE_FP32, TYPE_INT64, TYPE_STRING (V2 BYTES), ...")
    dims: list[int] = Field(description="per instance, without the batch dimension; -1: any size")
    reshape: V2ConfigReshape | None = Field(None, description="a scalar per instance: dims [1], reshaped to []")


class V2ModelConfig(BaseModel):
    """Triton's model configuration (its model_configuration extension), derived from the model's spec."""

    name: str
    platform: str
    backend: str
    max_batch_size: int = Field(description="instances per request the gateway accepts; the inputs' first dimension")
    version_policy: dict[str, Any]
    input: list[V2ConfigTensor]
    output: list[V2ConfigTensor]
    parameters: dict[str, dict[str, str]] = Field(description="Triton's string parameters; here the backends that serve the model")


class V2DurationStat(BaseModel):
    count: int
    ns: int


class V2InferenceStats(BaseModel):
    success: V2DurationStat
    fail: V2DurationStat
    queue: V2DurationStat
    compute_input: V2DurationStat
    compute_infer: V2DurationStat
    compute_output: V2DurationStat
    cache_hit: V2DurationStat
    cache_miss: V2DurationStat


class V2ModelStat(BaseModel):
    name: str
    version: str
    last_inference: int = Field(description="milliseconds since the epoch; 0 before the first")
    inference_count: int = Field(description="instances inferred successfully")
    execution_count: int = Field(description="successful requests, one stack call each")
    inference_stats: V2InferenceStats
    batch_stats: list[Any]


class V2ModelStats(BaseModel):
    """Triton's statistics extension, counted by the gateway (gateway/stats.py says what each field means here)."""

    model_stats: list[V2ModelStat]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


# what any route that calls a backend can answer besides 200
INFERENCE_ERRORS = error_responses(400, 401, 404, 413, 429, 502, 503, 504)


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    models: dict[str, dict[str, str]] = Field(description="model -> backend -> state (READY when any replica is)")
    replicas: dict[str, dict[str, dict[str, str]]] = Field(description="model -> backend -> replica (address:port) -> state")
    load: dict[str, dict[str, dict[str, Any]]] = Field(description="backend -> replica -> {in_flight: requests in flight from this worker, ejected: out of rotation after failures, warming: found after start-up and not yet serving every model}")
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
