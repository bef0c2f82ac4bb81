"""TF Serving's gRPC services: PredictionService (Predict, GetModelMetadata) and ModelService (GetModelStatus).

A synchronous gRPC server on its own threads; each call is handed to the
engine on the REST event loop, so both front ends share one batcher per model.

Inputs are checked as the REST front end checks them, before batching: the dtype (DT_STRING
for a string input, `string_val`, and a numeric one for a numeric input), finite values, and
the signature's shape; a malformed TensorProto is INVALID_ARGUMENT too. Every ServingError
code goes out as the gRPC status of the same name (TF Serving's `ToGRPCStatus` casts the
canonical code unchanged; see errors.py), anything unexpected as INTERNAL.
"""

from __future__ import annotations

import asyncio
from concurrent import futures

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from services.tfserving.compat import tensors
from services.tfserving.compat.engine import Engine
from services.tfserving.compat.errors import ServingError, invalid
from services.tfserving.compat.registry import Servable, TensorInfo

DT_STRING = 7  # tensorflow.DataType.DT_STRING (tensorflow/core/framework/types.proto)


def _dtype_name(dtype: np.dtype) -> str:
    from tensorflow.core.framework import types_pb2

    if dtype.kind == "O":
        return "DT_STRING"
    try:
        return types_pb2.DataType.Name(tf.as_dtype(dtype).as_datatype_enum)
    except (TypeError, ValueError):
        return str(dtype)


def _input(proto, info: TensorInfo) -> np.ndarray:  # type: ignore[no-untyped-def]
    """One input TensorProto as an array the signature accepts, or INVALID_ARGUMENT naming the input."""
    from tensorflow.core.framework import types_pb2

    key = info.name
    wants_string = info.dtype.kind == "O"
    if (proto.dtype == DT_STRING) != wants_string:
        got = types_pb2.DataType.Name(proto.dtype) if proto.dtype in types_pb2.DataType.values() else str(proto.dtype)
        raise invalid(f"input '{key}' expects {_dtype_name(info.dtype)} values, got a {got} tensor")
    try:
        arr = tf.make_ndarray(proto)
    except Exception as exc:  # noqa: BLE001  (values that do not fill the shape, unknown dtypes, ...)
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise invalid(f"input '{key}': malformed TensorProto: {detail}") from None
    if not wants_string:
        if arr.dtype.kind not in "fiub":
            raise invalid(f"input '{key}' expects {_dtype_name(info.dtype)} values, got a {_dtype_name(arr.dtype)} tensor")
        with np.errstate(over="ignore"):  # beyond the input's float range becomes inf, refused next
            arr = tensors.finite(arr.astype(info.dtype, copy=False), f"input '{key}'")
    return tensors.check_shape(arr, info)


def _find(engine: Engine, spec) -> Servable:  # type: ignore[no-untyped-def]
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label or None
    return engine.registry.find(spec.name, version, label)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.loop = loop

    def Predict(self, request, context):  # type: ignore[no-untyped-def]
        try:
            servable = _find(self.engine, request.model_spec)
            sig = servable.signature(request.model_spec.signature_name or None)
            inputs = {}
            for key, proto in request.inputs.items():
                if key not in sig.inputs:
                    raise invalid(f"input tensor alias not found in signature: {key}. Inputs expected to be in the set {{{','.join(sig.inputs)}}}.")
                inputs[key] = _input(proto, sig.inputs[key])
            missing = set(sig.inputs) - set(inputs)
            if missing:
                raise invalid(f"missing input tensors: {sorted(missing)}")
            wanted = list(request.output_filter) or None
            unknown = [k for k in wanted or () if k not in sig.outputs]
            if unknown:
                raise invalid(f"output tensor alias not found in signature: {unknown[0]} Outputs expected to be in the set {{{','.join(sig.outputs)}}}.")
            future = asyncio.run_coroutine_threadsafe(self.engine.predict(servable, sig.name, inputs, "grpc_predict"), self.loop)
            outputs = future.result()
            response = predict_pb2.PredictResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = sig.name
            for key in wanted or outputs:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
            return response
        except ServingError as exc:
            context.abort(exc.grpc_status, exc.grpc_message)
        except Exception as exc:  # noqa: BLE001  (never a Python traceback as the status message)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")

    def GetModelMetadata(self, request, context):  # type: ignore[no-untyped-def]
        try:
            if list(request.metadata_field) != ["signature_def"]:
                raise invalid("Metadata field(s) not supported: only signature_def is")
            servable = _find(self.engine, request.model_spec)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.metadata["signature_def"].Pack(self.engine.signature_def_map(servable))
            return response
        except ServingError as exc:
            context.abort(exc.grpc_status, exc.grpc_message)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def GetModelStatus(self, request, context):  # type: ignore[no-untyped-def]
        try:
            spec = request.model_spec
            version = spec.version.value if spec.HasField("version") else None
            # the REST status answer is this message's JSON form: one source for both, versions that
            # failed to load included (END, with their error), as TF Serving lists them
            return json_format.ParseDict(self.engine.status_dict(spec.name, version), get_model_status_pb2.GetModelStatusResponse())
        except ServingError as exc:
            context.abort(exc.grpc_status, exc.grpc_message)


def start(engine: Engine, loop: asyncio.AbstractEventLoop, host: str, port: int, threads: int = 8) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(engine, loop), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(engine), server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise SystemExit(f"cannot bind gRPC port {host}:{port}")
    server.start()
    return server
