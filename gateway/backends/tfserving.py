"""TensorFlow Serving (or the compatible server): REST predict and model status."""

from __future__ import annotations

import numpy as np
import orjson

from gateway.backends.base import Backend, BackendError, Explanation, malformed, register
from gateway.replicas import Replica
from models import explain as ig
from models.spec import ModelSpec
from gateway.settings import GatewaySettings


@register
class TFServingBackend(Backend):
    name = "tfserving"
    url_field = "tfserving_url"

    def __init__(self, settings: GatewaySettings) -> None:
        super().__init__(settings, settings.tfserving_url)
        self._paths = {m: f"/v1/models/{m}:predict" for m in settings.model_list}
        self.implementation = "unknown"

    def predict_path(self, model: str) -> str:
        return self._paths[model]

    async def explain(self, spec: ModelSpec, rows: np.ndarray, targets: list[int], request_id: str) -> Explanation:
        """The SavedModel's `explain` signature, through TF Serving's predict API (columnar form)."""
        body = orjson.dumps(
            {"signature_name": ig.SIGNATURE, "inputs": {spec.input_name: rows, ig.TARGET_INPUT: targets}},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        result = await self.post(self._paths[spec.name], body, request_id)
        try:
            outputs = orjson.loads(result.body)["outputs"]
            return Explanation(self.name, np.asarray(outputs[ig.ATTRIBUTIONS], dtype=np.float32), list(outputs[ig.TARGET_INPUT]), result.seconds)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise malformed(self.name, "explanation") from None

    async def replica_state(self, replica: Replica, model: str) -> str:
        try:
            answer = await self.request("GET", replica.url(f"/v1/models/{model}"), timeout=2.0)
        except BackendError as exc:
            return exc.as_state()
        self.implementation = answer.headers.get("x-tf-serving-implementation", "tensorflow_model_server")
        if answer.status != 200:
            return f"NOT LOADED ({answer.status})"
        try:
            states = [v.get("state") for v in answer.json().get("model_version_status", [])]  # type: ignore[union-attr]
        except (orjson.JSONDecodeError, AttributeError):
            return "DOWN (malformed status answer)"
        return "READY" if "AVAILABLE" in states else ",".join(map(str, states)) or "NO VERSION"
