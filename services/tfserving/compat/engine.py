"""What the REST and gRPC front ends share: find the servable, run it (batched or not), report status."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from google.protobuf import json_format

from services.tfserving.compat import metrics
from services.tfserving.compat.batching import Batcher, BatchingParameters
from services.tfserving.compat.errors import ServingError, from_graph
from services.tfserving.compat.registry import Registry, Servable

IMPLEMENTATION = "twinserve-tf-compat"


class Engine:
    def __init__(self, registry: Registry, batching: BatchingParameters | None) -> None:
        self.registry = registry
        self.batching = batching
        threads = batching.num_batch_threads if batching else (os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tf-run")

    def _batcher(self, servable: Servable, signature: str) -> Batcher | None:
        if self.batching is None:
            return None
        batcher = servable.batchers.get(signature)
        if batcher is None:
            sig = servable.signatures[signature]
            if not sig.batchable:
                return None
            batcher = servable.batchers[signature] = Batcher(sig.call, self.batching, self.pool)
        return batcher

    async def predict(self, servable: Servable, signature_name: str | None, inputs: dict[str, np.ndarray], api: str) -> dict[str, np.ndarray]:
        sig = servable.signature(signature_name)
        started = time.perf_counter()
        status = "OK"
        try:
            batcher = self._batcher(servable, sig.name)
            if batcher is not None:
                return await batcher.submit(inputs)
            return await asyncio.get_running_loop().run_in_executor(self.pool, sig.call, inputs)
        except ServingError as exc:
            status = exc.code
            raise
        except Exception as exc:
            # an error of the graph keeps its code (InvalidArgumentError: bad values the graph itself
            # rejects → INVALID_ARGUMENT) with its root cause only; anything else is ours: INTERNAL
            error = from_graph(exc, servable.name, list(sig.inputs)) or ServingError("INTERNAL", f"model execution failed: {type(exc).__name__}")
            status = error.code
            raise error from exc
        finally:
            metrics.observe(servable.name, api, status, time.perf_counter() - started)

    def status_dict(self, name: str, version: int | None) -> dict:
        statuses = [
            {"version": str(s.version), "state": s.state, "status": {"error_code": "OK", "error_message": ""}}
            for s in self.registry.versions(name, version)
        ]
        if version is None:  # versions that failed to load, as TF Serving lists them: END, with the error
            statuses += [
                {"version": str(v), "state": "END", "status": {"error_code": "UNKNOWN", "error_message": error}}
                for (n, v), (_, error) in sorted(self.registry.failed.items())
                if n == name
            ]
        return {"model_version_status": statuses}

    def signature_def_map(self, servable: Servable):  # type: ignore[no-untyped-def]
        from tensorflow_serving.apis import get_model_metadata_pb2

        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, value in servable.signature_defs.items():
            sig_map.signature_def[key].CopyFrom(value)
        return sig_map

    def metadata_dict(self, servable: Servable) -> dict:
        sig_map = json_format.MessageToDict(self.signature_def_map(servable), preserving_proto_field_name=True)
        return {
            "model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": sig_map},
        }
