"""TorchServe: predictions on the inference API, model state from the management API."""

from __future__ import annotations

import asyncio

import httpx
import orjson

import numpy as np

from gateway.backends.base import Backend, BackendError, Explanation, UpstreamResult, make_client, malformed, register
from models.spec import ModelSpec
from gateway.backends.torchserve_keys import KEY_REFUSED, TOKEN_PATH, read_keys
from gateway.settings import GatewaySettings


@register
class TorchServeBackend(Backend):
    name = "torchserve"
    implementation = "TorchServe"

    def __init__(self, settings: GatewaySettings) -> None:
        super().__init__(settings, settings.torchserve_url)
        self.management = make_client(settings, settings.torchserve_management_url)
        self._key_file = settings.torchserve_key_file
        self._refresh_lock = asyncio.Lock()
        # token authorisation left on: send the inference key (given, or read from TorchServe's key file)
        if self._key_file:
            self._use_keys(read_keys(self._key_file))
        if settings.torchserve_token:
            self.headers["Authorization"] = f"Bearer {settings.torchserve_token}"
        self._paths = {m: f"/predictions/{m}" for m in settings.model_list}

    def _use_keys(self, keys: dict[str, str]) -> None:
        if "inference" in keys:
            self.headers["Authorization"] = f"Bearer {keys['inference']}"
        if "management" in keys:
            self.management.headers["Authorization"] = f"Bearer {keys['management']}"

    def _sent(self, kind: str) -> str | None:
        return (self.headers if kind == "inference" else self.management.headers).get("Authorization")

    async def post(self, path: str, body: bytes, request_id: str) -> UpstreamResult:
        """A refused key means TorchServe's inference key expired (60 min by default) or was replaced:
        take the current key, renewing it when it is stale, and send the request once more."""
        sent = self._sent("inference")
        try:
            return await super().post(path, body, request_id)
        except BackendError as exc:
            if exc.status != 401 or not await self._refresh("inference", sent):
                raise
        return await super().post(path, body, request_id)

    async def _refresh(self, kind: str, rejected: str | None) -> bool:
        """True when a different key of this kind is now in use. One renewal at a time: the
        requests refused together wait here and then find the key the first one obtained."""
        if not self._key_file:
            return False
        async with self._refresh_lock:
            if self._sent(kind) != rejected:
                return True
            keys = read_keys(self._key_file)
            if f"Bearer {keys.get(kind)}" == rejected and keys.get("API"):
                # the key on file is the one refused, so it expired: TorchServe writes a new one
                try:
                    await self.management.get(TOKEN_PATH, params={"type": kind}, headers={"Authorization": f"Bearer {keys['API']}"})
                except httpx.HTTPError:
                    return False
                keys = read_keys(self._key_file)
            self._use_keys(keys)
            return self._sent(kind) != rejected

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

    def key_refused(self, response: httpx.Response) -> bool:
        # TorchServe answers an expired or wrong key with 400 and this type, not 401
        return response.status_code in (400, 401) and KEY_REFUSED in response.content

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
            sent = self._sent("management")
            r = await self.management.get(f"/models/{model}", timeout=2.0)
            if self.key_refused(r) and await self._refresh("management", sent):
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
