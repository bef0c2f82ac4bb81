"""TF Serving's gRPC services: PredictionService (Predict, GetModelMetadata) and ModelService (GetModelStatus).

A synchronous gRPC server on its own threads; each call is handed to the
engine on the REST event loop, so both front ends share one batcher per model.
"""

from __future__ import annotations

import asyncio
from concurrent import futures

import grpc
import numpy as np
import tensorflow as tf
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
from services.tfserving.compat.registry import Servable


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
                with np.errstate(over="ignore"):  # beyond the input's float range becomes inf, refused next
                    inputs[key] = tensors.finite(tf.make_ndarray(proto).astype(sig.inputs[key].dtype, copy=False), f"input '{key}'")
            missing = set(sig.inputs) - set(inputs)
            if missing:
                raise invalid(f"missing input tensors: {sorted(missing)}")
            future = asyncio.run_coroutine_threadsafe(self.engine.predict(servable, sig.name, inputs, "grpc_predict"), self.loop)
            outputs = future.result()
            response = predict_pb2.PredictResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = sig.name
            wanted = list(request.output_filter) or list(outputs)
            for key in wanted:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
            return response
        except ServingError as exc:
            context.abort(exc.grpc_status, exc.message)

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
            context.abort(exc.grpc_status, exc.message)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def GetModelStatus(self, request, context):  # type: ignore[no-untyped-def]
        try:
            spec = request.model_spec
            version = spec.version.value if spec.HasField("version") else None
            response = get_model_status_pb2.GetModelStatusResponse()
            for servable in self.engine.registry.versions(spec.name, version):
                status = response.model_version_status.add()
                status.version = servable.version
                status.state = get_model_status_pb2.ModelVersionStatus.State.Value(servable.state)
            return response
        except ServingError as exc:
            context.abort(exc.grpc_status, exc.message)


def start(engine: Engine, loop: asyncio.AbstractEventLoop, host: str, port: int, threads: int = 8) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(engine, loop), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(engine), server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise SystemExit(f"cannot bind gRPC port {host}:{port}")
    server.start()
    return server
