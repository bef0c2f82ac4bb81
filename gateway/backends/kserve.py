"""KServe's Python model server running ONNX Runtime (services/kserve/): the third stack.

KServe's V1 protocol is TensorFlow Serving's JSON (`instances` -> `predictions`, `inputs` ->
`outputs`), the gateway's canonical body, so requests and answers pass through unchanged. Errors
come back as `{"error": "..."}`, as TF Serving's do. ONNX Runtime has no gradients at serving time,
so this stack serves no explanations: a 501 that says so, which the data plane does not fail over.
"""

from __future__ import annotations

import numpy as np

from gateway.backends.base import Backend, BackendError, Explanation, register
from gateway.replicas import Replica
from gateway.settings import GatewaySettings
from models.spec import ModelSpec


@register
class KServeBackend(Backend):
    name = "kserve"
    url_field = "kserve_url"
    implementation = "KServe model server + ONNX Runtime"

    def __init__(self, settings: GatewaySettings) -> None:
        super().__init__(settings, settings.kserve_url)
        self._paths = {m: f"/v1/models/{m}:predict" for m in settings.model_list}

    def predict_path(self, model: str) -> str:
        return self._paths[model]

    async def explain(self, spec: ModelSpec, rows: np.ndarray, targets: list[int], request_id: str) -> Explanation:
        raise BackendError(self.name, "unimplemented", f"{self.name} serves no explanations: its ONNX graphs carry no gradients; ask ?backend=torchserve or tfserving", 501)

    async def replica_state(self, replica: Replica, model: str) -> str:
        try:
            answer = await self.request("GET", replica.url(f"/v1/models/{model}"), timeout=2.0)
        except BackendError as exc:
            return exc.as_state()
        if answer.status == 200:
            return "READY"
        if answer.status == 503:
            return "NOT READY"
        return f"NOT LOADED ({answer.status})"
