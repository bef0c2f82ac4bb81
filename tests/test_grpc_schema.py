"""The gateway's gRPC schema (gateway/grpcapi/protos.binpb) against the client packages it comes from.

The committed descriptor set must be what tools/grpc_descriptors.py writes from the installed
tritonclient and tensorflow-serving-api: when either package moves, this fails until the set is
rewritten. The set loads into its own pool, so a process that also imports the clients' generated
modules (as this one does) holds both, and bytes written by either side parse on the other.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_schema_is_what_the_client_packages_define() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "grpc_descriptors.py"), "--check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_messages_cross_between_the_clients_and_the_gateway_in_one_process() -> None:
    import tensorflow as tf
    import tritonclient.grpc.service_pb2 as triton
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

    from gateway.grpcapi.schema import message

    request = triton.ModelInferRequest(model_name="tabular", id="r1")
    request.inputs.add(name="features", datatype="FP32", shape=[1, 3])
    request.raw_input_contents.append(np.arange(3, dtype="<f4").tobytes())
    ours = message("inference.ModelInferRequest").FromString(request.SerializeToString())
    assert ours.model_name == "tabular" and list(ours.inputs[0].shape) == [1, 3]
    assert np.frombuffer(ours.raw_input_contents[0], "<f4").tolist() == [0.0, 1.0, 2.0]

    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "tabular"
    predict.inputs["features"].CopyFrom(tf.make_tensor_proto(np.ones((2, 3), np.float32)))
    parsed = message("tensorflow.serving.PredictRequest").FromString(predict.SerializeToString())
    assert parsed.inputs["features"].tensor_shape.dim[1].size == 3

    answer = message("tensorflow.serving.GetModelMetadataResponse")()
    signatures = message("tensorflow.serving.SignatureDefMap")()
    signatures.signature_def["serving_default"].method_name = "tensorflow/serving/predict"
    answer.metadata["signature_def"].Pack(signatures)
    theirs = get_model_metadata_pb2.GetModelMetadataResponse.FromString(answer.SerializeToString())
    unpacked = get_model_metadata_pb2.SignatureDefMap()
    assert theirs.metadata["signature_def"].Unpack(unpacked)
    assert unpacked.signature_def["serving_default"].method_name == "tensorflow/serving/predict"
