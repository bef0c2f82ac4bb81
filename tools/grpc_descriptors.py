"""Write the gateway's gRPC schema, gateway/grpcapi/protos.binpb, from the published client packages.

The gateway serves two gRPC protocols: KServe's V2 `inference.GRPCInferenceService` (as Triton
publishes it, a superset of KServe's grpc_predict_v2.proto with the same package, service and field
numbers) and TF Serving's `tensorflow.serving` Predict, GetModelMetadata and GetModelStatus. Their
.proto sources do not ship in any wheel, but the wheels carry each file's compiled descriptor. This
script collects those descriptors (and every file they import) from tritonclient (BSD-3-Clause) and
tensorflow-serving-api (Apache-2.0) into one FileDescriptorSet, which the gateway loads into a
private descriptor pool (gateway/grpcapi/schema.py). Why not import the generated modules in the
gateway: tensorflow-serving-api requires TensorFlow itself, which the gateway must not carry, and
its modules live under the `tensorflow` package name.

Run with the project's venv after moving either client package; tests/test_grpc_schema.py fails
while the committed file differs from what this writes:

    .venv/bin/python tools/grpc_descriptors.py
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

OUT = Path(__file__).resolve().parent.parent / "gateway" / "grpcapi" / "protos.binpb"

# the generated modules whose files (and their imports) the gateway serves
MODULES = [
    "tritonclient.grpc.service_pb2",  # grpc_service.proto (+ model_config.proto)
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.get_model_metadata_pb2",
    "tensorflow_serving.apis.get_model_status_pb2",
]


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """Every file the modules define or import, each after the files it imports."""
    out = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(fd) -> None:  # type: ignore[no-untyped-def]
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            add(dep)
        proto = out.file.add()
        fd.CopyToProto(proto)

    for name in MODULES:
        add(importlib.import_module(name).DESCRIPTOR)
    return out


def main() -> int:
    data = descriptor_set().SerializeToString(deterministic=True)
    if "--check" in sys.argv[1:]:
        same = OUT.exists() and OUT.read_bytes() == data
        print(f"{OUT}: {'up to date' if same else 'differs from the installed client packages; run tools/grpc_descriptors.py'}")
        return 0 if same else 1
    OUT.write_bytes(data)
    print(f"wrote {OUT} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
