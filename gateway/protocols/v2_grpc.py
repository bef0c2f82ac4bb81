"""The Open Inference Protocol (KServe V2) over gRPC: `inference.GRPCInferenceService`.

The messages are Triton's grpc_service.proto (a superset of KServe's grpc_predict_v2.proto, same
package, service and field numbers), so tritonclient.grpc and KServe's gRPC clients both work.
Every RPC answers what the HTTP route of the same name answers (gateway/protocols/v2.py), built by
the same functions: a ModelInfer request becomes the same parsed request as a V2 JSON body (its
`raw_input_contents` are the binary tensor data extension's bytes, its typed `contents` the JSON
`data`), is validated by the same code, and goes through the same data plane; metadata,
configuration and statistics are the HTTP routes' dicts, turned into their messages field by field.

Outputs go back in `raw_output_contents` (little-endian, BYTES length-prefixed), as Triton answers
and its clients read first; the serving backend is in the response's `parameters["backend"]` and
the initial metadata `x-backend`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from gateway import stats
from gateway.dataplane import DataPlane
from gateway.errors import GatewayError, bad_request
from gateway.grpcapi.schema import message
from gateway.grpcapi.server import Method, Rpc, Services
from gateway.protocols import v2, v2_binary
from models.spec import ModelSpec

SERVICE = "inference.GRPCInferenceService"

# V2 datatype -> the InferTensorContents field that carries it (FP16 travels only as raw bytes)
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def reply(name: str, body: dict) -> Message:
    """A response message from the dict the HTTP route answers (field names are the proto's)."""
    return json_format.ParseDict(body, message(f"inference.{name}")())


def model_of(plane: DataPlane, name: str, version: str) -> ModelSpec:
    spec = plane.spec(name)
    if version and version != str(spec.version):
        raise GatewayError(404, "unknown_version", f"model {name!r} has no version {version!r}; served: {spec.version}")
    return spec


async def server_live(plane: DataPlane, request: Any, rpc: Rpc) -> Message:
    return reply("ServerLiveResponse", {"live": True})


async def server_ready(plane: DataPlane, request: Any, rpc: Rpc) -> Message:
    return reply("ServerReadyResponse", {"ready": await v2.server_is_ready(plane)})


async def model_ready(plane: DataPlane, request: Any, rpc: Rpc) -> Message:
    spec = model_of(plane, request.name, request.version)
    rpc.outcome.model = spec.name
    states = await v2.model_states(plane, spec.name)
    return reply("ModelReadyResponse", {"ready": any(s == "READY" for s in states.values())})


async def server_metadata(plane: DataPlane, request: Any, rpc: Rpc) -> Message:
    return reply("ServerMetadataResponse", v2.server_metadata_body())


async def model_metadata(plane: DataPlane, request: Any, rpc: Rpc) -> Message:
    spec = model_of(plane, request.name, request.version)
    rpc.outcome.model = spec.name
    return reply("ModelMetadataResponse", v2.metadata(plane, spec))


async def model_config(plane: DataPlane, request: Any, rpc: Rpc) -> Message:
    spec = model_of(plane, request.name, request.version)
    rpc.outcome.model = spec.name
    return reply("ModelConfigResponse", {"config": v2.model_config(spec, v2.platform_of(plane), plane.names)})


async def model_statistics(plane: DataPlane, request: Any, rpc: Rpc) -> Message:
    if request.name:
        spec = model_of(plane, request.name, request.version)
        rpc.outcome.model = spec.name
        versions = {spec.name: str(spec.version)}
    else:
        versions = {name: str(spec.version) for name, spec in plane.specs.items()}
    return reply("ModelStatisticsResponse", {"model_stats": stats.model_stats(versions)})


def as_body(request: Any) -> tuple[dict, dict[str, bytes]]:
    """A ModelInferRequest as the V2 JSON body it stands for, and each input's bytes by name."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise bad_request(f"raw_input_contents holds {len(raw)} entries for {len(request.inputs)} inputs: send one per input, in the inputs' order, or none", "invalid_binary_data")
    if raw and any(tensor.HasField("contents") for tensor in request.inputs):
        raise bad_request("the request has both raw_input_contents and typed contents: send every input one way", "invalid_binary_data")
    inputs: list[dict] = []
    raws: dict[str, bytes] = {}
    for i, tensor in enumerate(request.inputs):
        entry: dict = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if raw:
            raws[tensor.name] = raw[i]
        else:
            field = CONTENTS.get(tensor.datatype)
            if field is None:
                raise bad_request(f"input {tensor.name!r}: datatype {tensor.datatype!r} has no typed contents; send it in raw_input_contents", "invalid_dtype")
            entry["data"] = list(getattr(tensor.contents, field))
        inputs.append(entry)
    body: dict = {"inputs": inputs, "outputs": [{"name": o.name} for o in request.outputs]}
    if request.id:
        body["id"] = request.id
    return body, raws


async def model_infer(plane: DataPlane, request: Any, rpc: Rpc) -> Message:
    spec = model_of(plane, request.model_name, request.model_version)
    rpc.outcome.model = spec.name
    body, raws = as_body(request)
    parsed = v2.parse_infer(body, spec, raws=raws)
    served, answer = await plane.infer_tensors(spec, parsed.inputs, rpc.override, rpc.rid)
    backend = served.result.backend
    response = message("inference.ModelInferResponse")(model_name=spec.name, model_version=str(spec.version), id=parsed.id or rpc.rid)
    response.parameters["backend"].string_param = backend
    if served.failover_from:
        response.parameters["failover_from"].string_param = served.failover_from
    for t, _ in parsed.outputs:
        value = answer[t.name]
        out = response.outputs.add(name=t.name, datatype=t.v2_datatype)
        out.shape.extend(value.shape)
        response.raw_output_contents.append(v2_binary.encode(value, t.v2_datatype, t.numpy_dtype))
    rpc.served(served)
    return response


def services() -> Services:
    def rpc(name: str, handler: Any, endpoint: str, open_: bool = False) -> tuple[str, Method]:
        return name, Method(f"inference.{name}Request", f"inference.{name}Response", handler, endpoint, open_)

    return {SERVICE: dict([
        rpc("ServerLive", server_live, "grpc_v2_live", True),
        rpc("ServerReady", server_ready, "grpc_v2_ready", True),
        rpc("ModelReady", model_ready, "grpc_v2_model_ready"),
        rpc("ServerMetadata", server_metadata, "grpc_v2_server_metadata"),
        rpc("ModelMetadata", model_metadata, "grpc_v2_metadata"),
        rpc("ModelConfig", model_config, "grpc_v2_config"),
        rpc("ModelStatistics", model_statistics, "grpc_v2_stats"),
        rpc("ModelInfer", model_infer, "grpc_v2_infer"),
    ])}
