"""Predictions for every model through a gateway, to both stacks, checked for agreement; with
`--grpc host:port`, the same inputs through the gateway's gRPC port (V2 ModelInfer) must give the
same answers as REST.

Used by the compose smoke test: `python -m loadtests.smoke http://127.0.0.1:8000 --grpc 127.0.0.1:8001`.
"""

from __future__ import annotations

import sys

import httpx
import numpy as np

from loadtests import payloads
from loadtests.payloads import bodies, check_answer
from models.spec import ModelSpec, get_spec


def check(gateway: str, grpc_target: str | None = None) -> list[str]:
    problems = []
    with httpx.Client(base_url=gateway, timeout=30) as client:
        ready = client.get("/readyz").json()
        print(f"gateway ready: {ready['ready']}; TF backend: {ready['implementations'].get('tfserving')}")
        for model in ready.get("models", {}):  # the models this gateway serves
            spec = get_spec(model)
            body = bodies(model, 2, count=1)[0]
            answers = {}
            for backend in ("torchserve", "tfserving"):
                r = client.post(f"/v1/models/{model}:predict", params={"backend": backend}, content=body)
                if r.status_code != 200 or r.headers.get("x-backend") != backend:
                    problems.append(f"{model} via {backend}: HTTP {r.status_code} {r.text[:200]}")
                    continue
                problem = check_answer(r.content, 2, spec)
                if problem:
                    problems.append(f"{model} via {backend}: {problem}")
                    continue
                preds = r.json()["predictions"]
                answers[backend] = np.concatenate([np.ravel(row[t.name] if len(spec.outputs) > 1 else row).astype(np.float64) for row in preds for t in spec.outputs])
            if len(answers) == 2:
                diff = float(np.abs(answers["torchserve"] - answers["tfserving"]).max())
                print(f"{model:8s} torchserve and tfserving agree: max |diff| {diff:.2e}")
                if diff > spec.tolerance:
                    problems.append(f"{model}: the stacks disagree by {diff}")
            if grpc_target:
                problems += grpc_check(grpc_target, spec, answers)
    return problems


LITTLE_ENDIAN = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "INT64": "<i8", "INT32": "<i4", "INT8": "i1", "UINT8": "u1", "BOOL": "?"}


def grpc_check(target: str, spec: ModelSpec, rest: dict[str, np.ndarray]) -> list[str]:
    """The first two instances through the gateway's gRPC port (KServe V2 ModelInfer, raw tensors),
    from each stack: the same outputs as the REST answers `rest` (flattened, in the spec's order)."""
    import grpc

    from gateway.grpcapi.schema import message

    if any(t.is_bytes for t in spec.inputs):
        print(f"{spec.name:8s} gRPC: skipped (a bytes input; the compose stack serves row models)")
        return []
    request_type, response_type = message("inference.ModelInferRequest"), message("inference.ModelInferResponse")
    data = {k: v[:2] for k, v in payloads.inputs(spec, 2).items()}
    problems = []
    with grpc.insecure_channel(target) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=request_type.SerializeToString, response_deserializer=response_type.FromString)
        for backend, expected in rest.items():
            request = request_type(model_name=spec.name)
            for t in spec.inputs:
                value = data[t.name]
                request.inputs.add(name=t.name, datatype=t.v2_datatype, shape=[len(value), *np.shape(value)[1:]])
                # the binary form written here, not with the gateway's codec: numbers little-endian, row-major
                request.raw_input_contents.append(np.ascontiguousarray(value, dtype=np.dtype(t.numpy_dtype).newbyteorder("<")).tobytes())
            try:
                response, call = infer.with_call(request, metadata=[("x-backend", backend)], timeout=30)
            except grpc.RpcError as exc:
                problems.append(f"{spec.name} via gRPC to {backend}: {exc.code()} {exc.details()}")
                continue
            outputs = {o.name: np.frombuffer(raw, dtype=LITTLE_ENDIAN[o.datatype]).reshape(list(o.shape)) for o, raw in zip(response.outputs, response.raw_output_contents)}
            got = np.concatenate([np.asarray(outputs[t.name], np.float64).reshape(len(data[spec.input_name]), -1) for t in spec.outputs], axis=1).ravel()
            diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
            served_by = dict(call.initial_metadata()).get("x-backend")
            print(f"{spec.name:8s} gRPC via {backend}: served by {served_by}, max |diff| to REST {diff:.2e}")
            if served_by != backend or diff > spec.tolerance:
                problems.append(f"{spec.name} via gRPC to {backend}: served by {served_by}, differs from REST by {diff}")
    return problems


def served(gateway: str) -> int:
    """Requests the gateway has answered with 200, from its Prometheus metrics."""
    text = httpx.get(f"{gateway}/metrics", timeout=10).text
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("twinserve_gateway_requests_total{") and 'status="200"' in line))


def main() -> int:
    if sys.argv[1:2] == ["--served"]:
        print(served(sys.argv[2]))
        return 0
    args = sys.argv[1:]
    grpc_target = None
    if "--grpc" in args:
        at = args.index("--grpc")
        grpc_target = args[at + 1]
        del args[at:at + 2]
    problems = check(args[0] if args else "http://127.0.0.1:8000", grpc_target)
    for p in problems:
        print(f"FAIL {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
