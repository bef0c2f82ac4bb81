"""TorchServe: predictions on the inference API, model state from the management API."""

from __future__ import annotations

import httpx
import orjson

import numpy as np

from gateway.backends.base import Backend, Explanation, make_client, malformed
from models.spec import ModelSpec
from services.torchserve.keys import auth_header
from twinserve.settings import GatewaySettings


class TorchServeBackend(Backend):
    name = "torchserve"

    def __init__(self, settings: GatewaySettings) -> None:
        super().__init__(settings, settings.torchserve_url)
        self.management = make_client(settings, settings.torchserve_management_url)
        # token authorisation left on: send the inference key (given, or read from TorchServe's key file)
        if settings.torchserve_key_file:
            self.headers.update(auth_header(settings.torchserve_key_file, "inference"))
            self.management.headers.update(auth_header(settings.torchserve_key_file, "management"))
        if settings.torchserve_token:
            self.headers["Authorization"] = f"Bearer {settings.torchserve_token}"
        self._paths = {m: f"/predictions/{m}" for m in settings.model_list}

    def predict_path(self, model: str) -> str:
        return self._paths[model]

    async def explain(self, spec: ModelSpec, rows: np.ndarray, targets: list[int], request_id: str) -> Explanation:
        body = orjson.dumps({"instances": rows, "target": targets}, option=orjson.OPT_SERIALIZE_NUMPY)
        result = await self.post(f"/explanations/{spec.name}", body, request_id)
        try:
            data = orjson.loads(result.body)
            return Explanation(self.name, np.asarray(data["attributions"], dtype=np.float32), list(data["targets"]), result.seconds)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise malformed(self.name, "explanation") from None

    def error_message(self, response: httpx.Response) -> str:
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return response.text[:300]
        if isinstance(data, dict):
            return str(data.get("error") or data.get("message") or data)[:300]
        return str(data)[:300]

    async def model_state(self, model: str) -> str:
        try:
            r = await self.management.get(f"/models/{model}", timeout=2.0)
        except httpx.HTTPError as exc:
            return f"DOWN ({type(exc).__name__})"
        if r.status_code != 200:
            return f"NOT LOADED ({r.status_code})"
        workers = r.json()[0].get("workers", [])
        ready = sum(1 for w in workers if w.get("status") == "READY")
        return "READY" if workers and ready == len(workers) else f"{ready}/{len(workers)} workers ready"

    async def aclose(self) -> None:
        await super().aclose()
        await self.management.aclose()
