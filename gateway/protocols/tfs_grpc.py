"""TensorFlow Serving's gRPC API: PredictionService (Predict, GetModelMetadata) and ModelService
(GetModelStatus), so code written against tensorflow-serving-api's stubs reaches either stack.

A Predict request is TF Serving's columnar predict: its TensorProtos become the V1 body's
`inputs` (batch first) and go through the V1 validation and the data plane like a REST
`:predict`, so the stacks see the same request whichever door it came in by. What TF Serving
itself checks on this API is checked here as it checks it: a tensor's dtype must be the input's
(TF Serving refuses a DT_DOUBLE tensor for a DT_FLOAT input, where REST JSON has no dtype to
refuse), the signature must be the served one, output_filter must name outputs. TensorProto values
are read as TensorFlow reads them (tensor_content, else the typed `*_val` field, where fewer values
than the shape holds are completed with the last one); outputs go back in tensor_content.

GetModelMetadata answers the signature_def map from the spec (TensorInfo names as a Keras export
names them); GetModelStatus reports the version AVAILABLE while any backend serves it.
Classify, Regress and MultiInference need tf.Example signatures the served models do not have:
UNIMPLEMENTED, as the REST :classify and :regress answer 501.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from google.protobuf.message import Message

from gateway.dataplane import DataPlane
from gateway.errors import GatewayError, bad_request
from gateway.grpcapi.schema import message, pool
from gateway.grpcapi.server import Method, Rpc, Services
from gateway.validation import SIGNATURE, v1_inputs
from models.spec import ModelSpec, TensorSpec

PREDICTION = "tensorflow.serving.PredictionService"
MODEL = "tensorflow.serving.ModelService"
PREDICT_METHOD = "tensorflow/serving/predict"

# numpy dtype name -> TensorFlow DataType name, and the TensorProto field of its values
DT_NAMES = {
    "float32": "DT_FLOAT", "float64": "DT_DOUBLE", "float16": "DT_HALF",
    "int8": "DT_INT8", "int16": "DT_INT16", "int32": "DT_INT32", "int64": "DT_INT64",
    "uint8": "DT_UINT8", "uint16": "DT_UINT16", "uint32": "DT_UINT32", "uint64": "DT_UINT64",
    "bool": "DT_BOOL", "object": "DT_STRING",
}
VAL_FIELDS = {
    "DT_FLOAT": "float_val", "DT_DOUBLE": "double_val", "DT_HALF": "half_val",
    "DT_INT8": "int_val", "DT_INT16": "int_val", "DT_INT32": "int_val", "DT_UINT8": "int_val", "DT_UINT16": "int_val",
    "DT_INT64": "int64_val", "DT_UINT32": "uint32_val", "DT_UINT64": "uint64_val",
    "DT_BOOL": "bool_val", "DT_STRING": "string_val",
}


def _enum() -> Any:
    return pool().FindEnumTypeByName("tensorflow.DataType")


def dt_number(numpy_dtype: str) -> int:
    return _enum().values_by_name[DT_NAMES[numpy_dtype]].number


def dt_name(number: int) -> str:
    value = _enum().values_by_number.get(number)
    return value.name if value is not None else f"DataType {number}"


def model_of(plane: DataPlane, model_spec: Any) -> ModelSpec:
    """The served model a request's ModelSpec names (its version, when given, must be the served one)."""
    if not model_spec.name:
        raise bad_request("model_spec.name is empty: name the model", "unknown_model")
    spec = plane.spec(model_spec.name)
    if model_spec.HasField("version") and model_spec.version.value != spec.version:
        raise GatewayError(404, "unknown_version", f"Servable not found for request: Specific({spec.name}, {model_spec.version.value}); served: version {spec.version}")
    if model_spec.version_label:
        raise GatewayError(404, "unknown_version", f"model {spec.name!r} has no version label {model_spec.version_label!r}: the gateway serves one version per model, without labels")
    return spec


def tensor_value(proto: Any, spec: ModelSpec, t: TensorSpec) -> Any:
    """An input TensorProto as TensorFlow reads it: an array of its shape, or, for DT_STRING, the list
    of its values (one per instance). INVALID_ARGUMENT naming the input for what does not fit.

    The shape is checked against the input (rank, per-instance shape, batch limit) before any value
    is read or expanded: a message of a few bytes can declare billions of elements, which TensorFlow's
    rule for typed values (fewer values than the shape holds repeat the last) would then allocate."""
    where = f"input {t.name!r}"
    wanted = DT_NAMES[t.numpy_dtype]
    got = dt_name(proto.dtype)
    if got != wanted:
        raise bad_request(f"{where} expects {wanted} values, got a {got} tensor", "invalid_dtype")
    if proto.tensor_shape.unknown_rank or any(d.size < 0 for d in proto.tensor_shape.dim):
        raise bad_request(f"{where}: tensor_shape must give every dimension's size", "invalid_shape")
    shape = [d.size for d in proto.tensor_shape.dim]
    if len(shape) != 1 + len(t.shape) or not t.matches(tuple(shape[1:])):
        raise bad_request(f"each instance of input {t.name!r} of model {spec.name!r} must have shape {t.shown()}; got a tensor of shape {shape} (batch first)", "invalid_shape")
    if shape[0] > spec.max_batch:
        raise bad_request(f"batch of {shape[0]} instances exceeds the limit of {spec.max_batch} for model {spec.name!r}", "batch_too_large")
    count = math.prod(shape)  # bounded now: max_batch instances of the input's shape (or its -1 sizes)
    if t.is_bytes:
        return complete(list(proto.string_val), count, where)
    dtype = np.dtype(t.numpy_dtype).newbyteorder("<")
    if proto.tensor_content:
        if len(proto.tensor_content) != count * dtype.itemsize:
            raise bad_request(f"{where}: tensor_content holds {len(proto.tensor_content)} bytes but {wanted} of shape {shape} takes {count * dtype.itemsize}", "invalid_shape")
        return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape)
    values = getattr(proto, VAL_FIELDS[wanted])
    if len(values) > count:
        raise bad_request(f"{where} holds {len(values)} values but its shape holds {count}", "invalid_shape")
    try:
        if wanted == "DT_HALF":  # half_val carries each float16's bit pattern in an int32
            array = np.asarray(values, dtype=np.uint16).view(np.float16)
        else:
            array = np.asarray(values, dtype=dtype)
    except OverflowError:
        raise bad_request(f"{where} holds a value out of {wanted}'s range", "invalid_dtype") from None
    return np.asarray(complete(array, count, where), dtype=dtype).reshape(shape)


def complete(values: Any, count: int, where: str) -> Any:
    """TensorFlow's rule for typed values: as many as the shape holds, or fewer, the last repeated."""
    if len(values) == count:
        return values
    if len(values) == 0:
        raise bad_request(f"{where} holds no values for a shape of {count}", "invalid_shape")
    if len(values) > count:
        raise bad_request(f"{where} holds {len(values)} values but its shape holds {count}", "invalid_shape")
    if isinstance(values, list):
        return values + [values[-1]] * (count - len(values))
    return np.concatenate([values, np.repeat(values[-1:], count - len(values))])


def tensor_proto(value: np.ndarray) -> Message:
    """An output array as a TensorProto: dtype, shape, and the values little-endian in tensor_content."""
    array = np.asarray(value)
    proto = message("tensorflow.TensorProto")(dtype=dt_number(array.dtype.name))
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_content = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return proto


async def predict(plane: DataPlane, request: Any, rpc: Rpc) -> Message:
    spec = model_of(plane, request.model_spec)
    rpc.outcome.model = spec.name
    signature = request.model_spec.signature_name or SIGNATURE
    by_name = {t.name: t for t in spec.inputs}
    columns: dict[str, Any] = {}
    for key, proto in request.inputs.items():
        t = by_name.get(key)
        if t is None:
            raise bad_request(f"input tensor alias not found in signature: {key}. Inputs expected to be in the set {{{','.join(by_name)}}}.", "unknown_input")
        columns[key] = tensor_value(proto, spec, t)
    inputs, _ = v1_inputs({"signature_name": signature, "inputs": columns}, spec)
    known = [t.name for t in spec.outputs]
    wanted = list(request.output_filter) or known
    unknown = [k for k in wanted if k not in known]
    if unknown:
        raise bad_request(f"output tensor alias not found in signature: {unknown[0]} Outputs expected to be in the set {{{','.join(known)}}}.", "unknown_output")
    served, answer = await plane.infer_tensors(spec, inputs, rpc.override, rpc.rid)
    response = message("tensorflow.serving.PredictResponse")()
    response.model_spec.name = spec.name
    response.model_spec.version.value = spec.version
    response.model_spec.signature_name = SIGNATURE
    for name in wanted:
        response.outputs[name].CopyFrom(tensor_proto(answer[name]))
    rpc.served(served)
    return response


def signature_def_map(spec: ModelSpec) -> Message:
    """The serving signature as GetModelMetadata answers it: each tensor's dtype and shape, batch -1."""
    out = message("tensorflow.serving.SignatureDefMap")()
    sig = out.signature_def[SIGNATURE]
    sig.method_name = PREDICT_METHOD

    def info(target: Any, t: TensorSpec, tensor_name: str) -> None:
        target.name = tensor_name
        target.dtype = dt_number(t.numpy_dtype)
        for size in (-1, *t.shape):
            target.tensor_shape.dim.add(size=size)

    for t in spec.inputs:
        info(sig.inputs[t.name], t, f"{SIGNATURE}_{t.name}:0")
    for i, t in enumerate(spec.outputs):
        info(sig.outputs[t.name], t, f"StatefulPartitionedCall:{i}")
    return out


async def get_model_metadata(plane: DataPlane, request: Any, rpc: Rpc) -> Message:
    fields = list(request.metadata_field)
    if fields != ["signature_def"]:
        raise bad_request(f"Metadata field(s) not supported: {fields}; ask for ['signature_def']", "invalid_metadata_field")
    spec = model_of(plane, request.model_spec)
    rpc.outcome.model = spec.name
    response = message("tensorflow.serving.GetModelMetadataResponse")()
    response.model_spec.name = spec.name
    response.model_spec.version.value = spec.version
    response.metadata["signature_def"].Pack(signature_def_map(spec))
    return response


async def get_model_status(plane: DataPlane, request: Any, rpc: Rpc) -> Message:
    spec = model_of(plane, request.model_spec)
    rpc.outcome.model = spec.name
    states = (await plane.model_states())[spec.name]
    response = message("tensorflow.serving.GetModelStatusResponse")()
    status = response.model_version_status.add(version=spec.version)
    if any(s == "READY" for s in states.values()):
        status.state = status.State.Value("AVAILABLE")
    else:  # no stack serves it: TF Serving's state for a version that failed to load, with why
        status.state = status.State.Value("END")
        status.status.error_code = pool().FindEnumTypeByName("tensorflow.error.Code").values_by_name["UNAVAILABLE"].number
        status.status.error_message = "no backend serves it: " + ", ".join(f"{b} {s}" for b, s in states.items())
    return response


async def unimplemented(plane: DataPlane, request: Any, rpc: Rpc) -> Message:
    raise GatewayError(501, "not_implemented", f"the gateway serves Predict (and GetModelMetadata) only: {rpc.outcome.endpoint.removeprefix('grpc_tfs_')} needs a signature over tf.Example inputs, which the served models do not have; send the same rows to Predict")


def services() -> Services:
    def method(name: str, handler: Any, endpoint: str, request: str | None, response: str | None) -> tuple[str, Method]:
        return name, Method(request and f"tensorflow.serving.{request}", response and f"tensorflow.serving.{response}", handler, endpoint)

    return {
        PREDICTION: dict([
            method("Predict", predict, "grpc_tfs_predict", "PredictRequest", "PredictResponse"),
            method("GetModelMetadata", get_model_metadata, "grpc_tfs_metadata", "GetModelMetadataRequest", "GetModelMetadataResponse"),
            # answered UNIMPLEMENTED without reading their messages (which are not in the schema)
            *(method(verb, unimplemented, f"grpc_tfs_{verb}", None, None) for verb in ("Classify", "Regress", "MultiInference")),
        ]),
        MODEL: dict([
            method("GetModelStatus", get_model_status, "grpc_tfs_status", "GetModelStatusRequest", "GetModelStatusResponse"),
        ]),
    }
