"""The gateway's gRPC port, through the real client libraries, unmodified and with their defaults:
tritonclient.grpc 2.73 (KServe V2 / Triton's `inference.GRPCInferenceService`) and the stubs of
tensorflow-serving-api 2.20 (`tensorflow.serving.PredictionService` and `ModelService`), against the
session's gateway. For every model and both backends, an infer through each client agrees with that
stack's own V1 answer to the same inputs, within the model's tolerance, and the backend asked for is
the one that served. Health, server and model metadata, the model configuration and statistics equal
the gateway's REST answers; typed `contents`, requested outputs, `output_filter` and the request id
are honoured. Errors reach each client as the gRPC status the contract names, with a message naming
the problem (never a traceback) and the gateway's error type in the trailing metadata; Classify,
Regress and MultiInference are UNIMPLEMENTED.
"""

from __future__ import annotations

import base64
import functools
import io

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from conftest import OWN_MODEL
from models.samples import DEFAULT_SEED, inputs as sample_inputs, jpeg_photos
from models.spec import ModelSpec, load_manifest

BACKENDS = ("torchserve", "tfserving")
MODELS = ("digits", "tabular", "resnet", "mobilenet", OWN_MODEL)
BODY_LIMIT = 4 * 1024 * 1024  # TWINSERVE_GATEWAY_MAX_BODY_BYTES's default
LEAKS = ("Traceback", 'File "', "\n")


@pytest.fixture(scope="module")
def specs(own_model: dict) -> dict[str, ModelSpec]:
    """Every served model's spec, the imported one included (models.spec.SPECS predates the import)."""
    return load_manifest(own_model["manifest"])


@pytest.fixture(scope="module")
def triton(urls: dict):  # type: ignore[no-untyped-def]
    c = grpcclient.InferenceServerClient(urls["gateway_grpc"])
    yield c
    c.close()


@pytest.fixture(scope="module")
def channel(urls: dict):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(urls["gateway_grpc"]) as ch:
        yield ch


@pytest.fixture(scope="module")
def v2(channel):  # type: ignore[no-untyped-def]
    """tritonclient's own generated stub, for what its client object hides: typed contents, metadata."""
    return service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def predict(channel):  # type: ignore[no-untyped-def]
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def examples(spec: ModelSpec) -> dict[str, np.ndarray]:
    """A small batch of the model's sample inputs: two photos, or three rows."""
    if spec.inputs[0].is_bytes:
        return {spec.input_name: jpeg_photos(DEFAULT_SEED, 2)}
    return {k: v[:3] for k, v in sample_inputs(spec, DEFAULT_SEED, 3).items()}


def direct(urls: dict, backend: str, spec: ModelSpec, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The stack's own V1 answer, past the gateway: outputs by name (one output: its name)."""
    if spec.inputs[0].is_bytes:
        body: dict = {"instances": [{"b64": base64.b64encode(v).decode()} for v in arrays[spec.input_name]]}
    elif len(arrays) == 1:
        body = {"instances": arrays[spec.input_name].tolist()}
    else:
        body = {"inputs": {k: v.tolist() for k, v in arrays.items()}}
    url = f"{urls['torchserve']}/predictions/{spec.name}" if backend == "torchserve" else f"{urls['tfserving']}/v1/models/{spec.name}:predict"
    r = httpx.post(url, json=body, timeout=60)
    assert r.status_code == 200, r.text
    values = r.json().get("predictions", r.json().get("outputs"))
    if isinstance(values, dict):
        return {k: np.asarray(v) for k, v in values.items()}
    if values and isinstance(values[0], dict):
        return {k: np.asarray([row[k] for row in values]) for k in values[0]}
    return {spec.output_name: np.asarray(values)}


def datatype(arr: np.ndarray) -> str:
    return "BYTES" if arr.dtype == object else {"float32": "FP32", "int64": "INT64", "float64": "FP64"}[arr.dtype.name]


def triton_inputs(arrays: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    out = []
    for name, arr in arrays.items():
        t = grpcclient.InferInput(name, list(arr.shape), datatype(arr))
        t.set_data_from_numpy(arr)  # raw_input_contents: the client's default
        out.append(t)
    return out


def v2_request(model: str, arrays: dict[str, np.ndarray]) -> service_pb2.ModelInferRequest:
    """What tritonclient sends, built with its own protos: raw little-endian tensors, BYTES length-prefixed."""
    req = service_pb2.ModelInferRequest(model_name=model)
    for name, arr in arrays.items():
        req.inputs.add(name=name, datatype=datatype(arr), shape=list(arr.shape))
        req.raw_input_contents.append(serialize_byte_tensor(arr).item() if arr.dtype == object else arr.tobytes())
    return req


def predict_request(model: str, arrays: dict[str, np.ndarray], signature: str = "serving_default", output_filter: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    for name, arr in arrays.items():
        req.inputs[name].CopyFrom(tf.make_tensor_proto(arr))
    req.output_filter.extend(output_filter)
    return req


def metadata_of(pairs) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {m.key: m.value for m in pairs or ()}


# health, metadata, configuration, statistics: the REST answers, over gRPC -------------------------------
def test_health_and_server_metadata(triton, urls: dict) -> None:  # type: ignore[no-untyped-def]
    assert triton.is_server_live() and triton.is_server_ready()
    assert all(triton.is_model_ready(m) for m in MODELS)
    meta = triton.get_server_metadata()
    rest = httpx.get(f"{urls['gateway']}/v2", timeout=10).json()
    assert meta.name == "twinserve" == rest["name"]
    assert list(meta.extensions) == rest["extensions"] and meta.version == rest["version"]


@pytest.mark.parametrize("model", [OWN_MODEL, "mobilenet", "resnet"])
def test_model_metadata_and_config_equal_rest(triton, urls: dict, model: str) -> None:  # type: ignore[no-untyped-def]
    rest = httpx.get(f"{urls['gateway']}/v2/models/{model}", timeout=10).json()
    meta = triton.get_model_metadata(model)
    assert (meta.name, list(meta.versions), meta.platform) == (rest["name"], ["1"], rest["platform"])
    for got, want in ((meta.inputs, rest["inputs"]), (meta.outputs, rest["outputs"])):
        assert [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in got] == want
        assert all(t["shape"][0] == -1 for t in want)

    rest = httpx.get(f"{urls['gateway']}/v2/models/{model}/config", timeout=10).json()
    config = triton.get_model_config(model).config
    assert (config.name, config.platform, config.max_batch_size) == (rest["name"], rest["platform"], rest["max_batch_size"])
    assert config.parameters["backends"].string_value == rest["parameters"]["backends"]["string_value"]
    for got, want in ((config.input, rest["input"]), (config.output, rest["output"])):
        seen = [{"name": t.name, "data_type": model_config_pb2.DataType.Name(t.data_type), "dims": list(t.dims)} | ({"reshape": {"shape": list(t.reshape.shape)}} if t.HasField("reshape") else {}) for t in got]
        assert seen == want

    with pytest.raises(InferenceServerException) as err:
        triton.get_model_metadata("nope")
    assert err.value.status() == "StatusCode.NOT_FOUND" and "nope" in err.value.message()


def test_statistics_grow_and_equal_rest(triton, urls: dict, specs: dict) -> None:  # type: ignore[no-untyped-def]
    def stat():  # type: ignore[no-untyped-def]
        (s,) = triton.get_inference_statistics("tabular").model_stats
        assert (s.name, s.version) == ("tabular", "1")
        return s

    before = stat()
    arrays = {k: v[:2] for k, v in examples(specs["tabular"]).items()}
    for _ in range(2):
        triton.infer("tabular", triton_inputs(arrays))
    after = stat()
    assert after.inference_stats.success.count - before.inference_stats.success.count == 2
    assert after.inference_count - before.inference_count == 4 and after.execution_count - before.execution_count == 2
    assert after.inference_stats.success.ns > before.inference_stats.success.ns and after.last_inference > 0

    (rest,) = httpx.get(f"{urls['gateway']}/v2/models/tabular/stats", timeout=10).json()["model_stats"]
    assert (rest["inference_count"], rest["execution_count"], rest["last_inference"]) == (after.inference_count, after.execution_count, after.last_inference)
    for part in ("success", "fail", "queue", "compute_infer"):
        got = getattr(after.inference_stats, part)
        assert {"count": got.count, "ns": got.ns} == rest["inference_stats"][part], part


# both stacks, every model, both clients ------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", MODELS)
def test_both_clients_agree_with_the_stack(triton, predict, urls: dict, specs: dict, model: str, backend: str) -> None:  # type: ignore[no-untyped-def]
    import tensorflow as tf

    spec = specs[model]
    arrays = examples(spec)
    rows = len(next(iter(arrays.values())))
    want = direct(urls, backend, spec, arrays)
    assert set(want) == {t.name for t in spec.outputs}

    result = triton.infer(model, triton_inputs(arrays), headers={"x-backend": backend})
    assert result.get_response().parameters["backend"].string_param == backend
    assert result.get_response().model_name == model
    for t in spec.outputs:
        got = result.as_numpy(t.name)
        assert got is not None and got.dtype == np.float32 and got.shape == (rows, *t.shape), t.name
        np.testing.assert_allclose(got, want[t.name], atol=spec.tolerance, err_msg=f"tritonclient {t.name}")

    response, call = predict.Predict.with_call(predict_request(model, arrays), metadata=[("x-backend", backend)], timeout=60)
    meta = metadata_of(call.initial_metadata())
    assert meta.get("x-backend") == backend and meta.get("x-request-id"), meta
    assert (response.model_spec.name, response.model_spec.version.value, response.model_spec.signature_name) == (model, 1, "serving_default")
    assert set(response.outputs) == {t.name for t in spec.outputs}
    for t in spec.outputs:
        got = tf.make_ndarray(response.outputs[t.name])
        assert got.dtype == np.float32 and got.shape == (rows, *t.shape), t.name
        np.testing.assert_allclose(got, want[t.name], atol=spec.tolerance, err_msg=f"Predict {t.name}")


# what the clients can ask for: typed contents, requested outputs, the id, output_filter -----------------
def test_typed_contents_requested_output_and_id(v2, triton, urls: dict, specs: dict) -> None:  # type: ignore[no-untyped-def]
    spec = specs[OWN_MODEL]
    arrays = examples(spec)
    want = direct(urls, "tfserving", spec, arrays)
    features, tokens = arrays["features"], arrays["tokens"]
    req = service_pb2.ModelInferRequest(model_name=OWN_MODEL, id="typed-1")
    req.inputs.add(name="features", datatype="FP32", shape=list(features.shape)).contents.fp32_contents.extend(features.ravel().tolist())
    req.inputs.add(name="tokens", datatype="INT64", shape=list(tokens.shape)).contents.int64_contents.extend(tokens.ravel().tolist())
    req.outputs.add(name="scores")
    response, call = v2.ModelInfer.with_call(req, metadata=[("x-backend", "tfserving")], timeout=60)
    meta = metadata_of(call.initial_metadata())
    assert meta.get("x-backend") == "tfserving" and meta.get("x-request-id"), meta
    assert response.id == "typed-1" and response.model_name == OWN_MODEL
    assert response.parameters["backend"].string_param == "tfserving"
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("scores", "FP32", [3, 3])]
    assert len(response.raw_output_contents) == 1  # answered raw, not in typed contents
    scores = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(3, 3)
    np.testing.assert_allclose(scores, want["scores"], atol=spec.tolerance)

    result = triton.infer(OWN_MODEL, triton_inputs(arrays), outputs=[grpcclient.InferRequestedOutput("hidden")], request_id="req-7", headers={"x-backend": "tfserving"})
    assert result.get_response().id == "req-7"
    assert result.as_numpy("scores") is None and [o.name for o in result.get_response().outputs] == ["hidden"]
    np.testing.assert_allclose(result.as_numpy("hidden"), want["hidden"], atol=spec.tolerance)


@pytest.mark.parametrize("signature", ["", "serving_default"])
def test_predict_output_filter_and_default_signature(predict, specs: dict, signature: str) -> None:  # type: ignore[no-untyped-def]
    arrays = examples(specs[OWN_MODEL])
    response = predict.Predict(predict_request(OWN_MODEL, arrays, signature, ("hidden",)), timeout=60)
    assert list(response.outputs) == ["hidden"] and response.model_spec.signature_name == "serving_default"
    assert [d.size for d in response.outputs["hidden"].tensor_shape.dim] == [3, 8]


def test_tf_metadata_and_status(predict, channel, specs: dict) -> None:  # type: ignore[no-untyped-def]
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc

    for model in (OWN_MODEL, "mobilenet"):
        spec = specs[model]
        req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        req.model_spec.name = model
        response = predict.GetModelMetadata(req, timeout=30)
        assert response.model_spec.name == model and response.model_spec.version.value == 1
        sigs = get_model_metadata_pb2.SignatureDefMap()
        assert response.metadata["signature_def"].Unpack(sigs)
        sig = sigs.signature_def["serving_default"]
        for got, tensors in ((sig.inputs, spec.inputs), (sig.outputs, spec.outputs)):
            assert {n: (i.dtype, [d.size for d in i.tensor_shape.dim]) for n, i in got.items()} == {t.name: (tf.as_dtype(t.tf_dtype).as_datatype_enum, [-1, *t.shape]) for t in tensors}

    status_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "tabular"
    (status,) = status_stub.GetModelStatus(req, timeout=30).model_version_status
    assert status.version == 1 and status.state == get_model_status_pb2.ModelVersionStatus.State.AVAILABLE

    req.model_spec.name = "nope"
    unknown_meta = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=req.model_spec, metadata_field=["signature_def"])
    for call, request in ((status_stub.GetModelStatus, req), (predict.GetModelMetadata, unknown_meta)):
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "nope" in err.value.details()
        assert metadata_of(err.value.trailing_metadata()).get("x-error-type") == "unknown_model"


def test_classify_regress_multi_inference_are_unimplemented(predict) -> None:  # type: ignore[no-untyped-def]
    from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

    classify, regress = classification_pb2.ClassificationRequest(), regression_pb2.RegressionRequest()
    classify.model_spec.name = regress.model_spec.name = "tabular"
    multi = inference_pb2.MultiInferenceRequest()
    multi.tasks.add().model_spec.name = "tabular"
    for call, req in ((predict.Classify, classify), (predict.Regress, regress), (predict.MultiInference, multi)):
        with pytest.raises(grpc.RpcError) as err:
            call(req, timeout=30)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED, (call, err.value.details())


# errors: the same mistakes through both clients -------------------------------------------------------
def f32(*shape: int) -> np.ndarray:
    return np.zeros(shape, np.float32)


def objects(*values: bytes) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


@functools.cache
def huge_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (5000, 4000)).save(buf, format="PNG")  # 20 Mpx over mobilenet's 16.8, a few KB
    return buf.getvalue()


# id, model, inputs (built when run), x-backend, status code, x-error-type, fragments the message names
ERRORS = [
    ("unknown_model", "nope", lambda: {"features": f32(1, 30)}, None, "NOT_FOUND", "unknown_model", ("nope",)),
    ("wrong_shape", "tabular", lambda: {"features": f32(1, 29)}, None, "INVALID_ARGUMENT", "invalid_shape", ("features", "29")),
    ("wrong_dtype", OWN_MODEL, lambda: {"features": f32(1, 4), "tokens": f32(1, 3)}, None, "INVALID_ARGUMENT", "invalid_dtype", ("tokens",)),
    ("unknown_input", "tabular", lambda: {"features": f32(1, 30), "nope": f32(1, 30)}, None, "INVALID_ARGUMENT", "unknown_input", ("nope",)),
    ("missing_input", OWN_MODEL, lambda: {"features": f32(1, 4)}, None, "INVALID_ARGUMENT", "missing_input", ("tokens",)),
    ("batch_too_large", "tabular", lambda: {"features": f32(65, 30)}, None, "INVALID_ARGUMENT", "batch_too_large", ("65", "64")),
    ("unknown_backend", "tabular", lambda: {"features": f32(1, 30)}, "nope-backend", "INVALID_ARGUMENT", "unknown_backend", ("nope-backend",)),
    ("not_an_image", "mobilenet", lambda: {"image_bytes": objects(b"this is not an image")}, None, "INVALID_ARGUMENT", "invalid_image", ("image_bytes",)),
    ("image_too_large", "mobilenet", lambda: {"image_bytes": objects(huge_png())}, None, "RESOURCE_EXHAUSTED", "image_too_large", ("image_bytes",)),
    ("body_too_large", "mobilenet", lambda: {"image_bytes": objects(b"\xff" * (BODY_LIMIT + 1))}, None, "RESOURCE_EXHAUSTED", "body_too_large", (str(BODY_LIMIT),)),
]


def assert_clean(message: str, fragments: tuple[str, ...]) -> None:
    assert all(f in message for f in fragments), (fragments, message)
    assert not [m for m in LEAKS if m in message], message


@pytest.mark.parametrize("model, build, backend, code, kind, fragments", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_through_tritonclient(triton, v2, model: str, build, backend: str | None, code: str, kind: str, fragments: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    arrays = build()
    headers = {"x-backend": backend} if backend else None
    with pytest.raises(InferenceServerException) as err:
        triton.infer(model, triton_inputs(arrays), headers=headers)
    assert err.value.status() == f"StatusCode.{code}", (err.value.status(), err.value.message())
    assert_clean(err.value.message(), fragments)

    with pytest.raises(grpc.RpcError) as raw:  # the same request by the client's stub: the trailing metadata
        v2.ModelInfer(v2_request(model, arrays), metadata=list((headers or {}).items()), timeout=60)
    assert raw.value.code() == getattr(grpc.StatusCode, code)
    assert metadata_of(raw.value.trailing_metadata()).get("x-error-type") == kind


@pytest.mark.parametrize("model, build, backend, code, kind, fragments", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_through_tf_predict(predict, model: str, build, backend: str | None, code: str, kind: str, fragments: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    metadata = [("x-backend", backend)] if backend else None
    with pytest.raises(grpc.RpcError) as err:
        predict.Predict(predict_request(model, build()), metadata=metadata, timeout=60)
    assert err.value.code() == getattr(grpc.StatusCode, code), (err.value.code(), err.value.details())
    assert_clean(err.value.details(), fragments)
    assert metadata_of(err.value.trailing_metadata()).get("x-error-type") == kind


def test_malformed_tensors_are_invalid_argument(predict, v2) -> None:  # type: ignore[no-untyped-def]
    """Bytes that do not fit the declared dtype and shape: 116 bytes for FP32 [1, 30] (120)."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=bytes(116), tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[{"size": 1}, {"size": 30}]))
    req = predict_request("tabular", {})
    req.inputs["features"].CopyFrom(tensor)
    v2_req = v2_request("tabular", {"features": f32(1, 30)})
    v2_req.raw_input_contents[0] = bytes(116)
    for call, request in ((predict.Predict, req), (v2.ModelInfer, v2_req)):
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (call, err.value.code(), err.value.details())
        assert_clean(err.value.details(), ("features",))
        assert metadata_of(err.value.trailing_metadata()).get("x-error-type"), err.value.trailing_metadata()


# what TF Serving's own clients may send: typed values, versions; and the gateway's resilience over gRPC ----
def test_typed_values_are_read_as_tensorflow_reads_them_and_shapes_are_checked_first(predict) -> None:  # type: ignore[no-untyped-def]
    """float_val with fewer values than the shape holds repeats the last one (TensorFlow's rule); a
    shape beyond the batch limit is refused before anything is expanded (a 40-byte message could
    otherwise declare billions of values)."""
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    def typed(rows: int, values: list[float]):  # type: ignore[no-untyped-def]
        req = predict_request("tabular", {})
        req.inputs["features"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=values, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[{"size": rows}, {"size": 30}])))
        return req

    short = tf.make_ndarray(predict.Predict(typed(2, [0.5]), timeout=60).outputs["probabilities"])
    full = tf.make_ndarray(predict.Predict(predict_request("tabular", {"features": np.full((2, 30), 0.5, np.float32)}), timeout=60).outputs["probabilities"])
    np.testing.assert_array_equal(short, full)
    for rows, kind in ((3_000_000, "batch_too_large"), (2**62, "batch_too_large")):
        with pytest.raises(grpc.RpcError) as err:
            predict.Predict(typed(rows, [0.5]), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert metadata_of(err.value.trailing_metadata()).get("x-error-type") == kind
    with pytest.raises(grpc.RpcError) as err:
        predict.Predict(typed(1, [0.5] * 31), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "31 values" in err.value.details()


def test_versions_and_malformed_messages(predict, channel) -> None:  # type: ignore[no-untyped-def]
    req = predict_request("tabular", {"features": f32(1, 30)})
    req.model_spec.version.value = 7
    with pytest.raises(grpc.RpcError) as err:
        predict.Predict(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "7" in err.value.details()
    assert metadata_of(err.value.trailing_metadata()).get("x-error-type") == "unknown_version"

    raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\xff\xff\xff\xff not a protobuf", timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "PredictRequest" in err.value.details()
    assert metadata_of(err.value.trailing_metadata()).get("x-error-type") == "malformed_message"


def test_grpc_calls_are_counted_in_the_metrics(triton, urls: dict, specs: dict) -> None:  # type: ignore[no-untyped-def]
    triton.infer("tabular", triton_inputs(examples(specs["tabular"])), headers={"x-backend": "tfserving"})
    text = httpx.get(f"{urls['gateway']}/metrics", timeout=10).text
    assert 'twinserve_gateway_requests_total{backend="tfserving",endpoint="grpc_v2_infer",model="tabular",status="200"}' in text
    assert 'endpoint="grpc_tfs_predict"' in text


def test_failover_and_a_dead_stack_over_grpc(urls: dict, specs: dict) -> None:
    """The data plane's failover reaches gRPC clients: the answer says who served and who failed;
    with failover off, the dead stack is UNAVAILABLE naming it."""
    from gatewayutil import dead_url, running_gateway

    from conftest import free_port

    arrays = examples(specs["tabular"])
    stacks = {"torchserve_url": urls["torchserve"], "torchserve_management_url": urls["management"], "tfserving_url": dead_url()}
    for failover in (True, False):
        port = free_port()
        with running_gateway(**stacks, primary="tfserving", failover=failover, grpc_port=port), grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            if failover:
                _, call = stub.Predict.with_call(predict_request("tabular", arrays), timeout=60)
                meta = metadata_of(call.initial_metadata())
                assert (meta.get("x-backend"), meta.get("x-failover-from")) == ("torchserve", "tfserving"), meta
            else:
                with pytest.raises(grpc.RpcError) as err:
                    stub.Predict(predict_request("tabular", arrays), timeout=60)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "tfserving" in err.value.details()
                trailing = metadata_of(err.value.trailing_metadata())
                assert (trailing.get("x-error-type"), trailing.get("x-backend")) == ("backend_unavailable", "tfserving"), trailing


def test_the_compose_smoke_client_agrees_over_rest_and_grpc(urls: dict, own_model: dict) -> None:
    """What `make compose-smoke` runs against the containers, here against the native stack (its own
    process, reading the session's manifest from TWINSERVE_MANIFEST like every twinserve process)."""
    import os
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "loadtests.smoke", urls["gateway"], "--grpc", urls["gateway_grpc"]], capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("gRPC via") == 3 * 4, run.stdout  # the four row models, the three stacks (mobilenet's bytes skipped)
