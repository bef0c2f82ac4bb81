"""TorchServe: predictions on the inference API, model state from the management API."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
from yarl import URL

from gateway.backends.base import Answer, Backend, BackendError, Explanation, UpstreamResult, malformed, register
from models.spec import ModelSpec
from gateway.replicas import Replica
from gateway.backends.torchserve_keys import KEY_REFUSED, TOKEN_PATH, read_keys
from gateway.settings import GatewaySettings


@register
class TorchServeBackend(Backend):
    name = "torchserve"
    url_field = "torchserve_url"
    implementation = "TorchServe"

    def __init__(self, settings: GatewaySettings) -> None:
        super().__init__(settings, settings.torchserve_url)
        self.management_url = settings.torchserve_management_url.rstrip("/")
        self.management_port = URL(self.management_url).port
        self.management_headers: dict[str, str] = {}
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
            self.management_headers["Authorization"] = f"Bearer {keys['management']}"

    def _sent(self, kind: str) -> str | None:
        return (self.headers if kind == "inference" else self.management_headers).get("Authorization")

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
                    await self.request("GET", f"{self.management_url}{TOKEN_PATH}?type={kind}", headers={"Authorization": f"Bearer {keys['API']}"}, timeout=5.0)
                except BackendError:
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

    def key_refused(self, answer: Answer) -> bool:
        # TorchServe answers an expired or wrong key with 400 and this type, not 401
        return answer.status in (400, 401) and KEY_REFUSED in answer.body

    def error_message(self, answer: Answer) -> str:
        try:
            data = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            return super().error_message(answer)
        if isinstance(data, dict):
            return str(data.get("error") or data.get("message") or data)[:300]
        return str(data)[:300]

    def management_origin(self, replica: Replica) -> str:
        """The management API as configured for one replica; with several, each replica's own at the
        configured URL's port (TorchServe's management API answers for its own server only)."""
        return self.management_url if not self.replicas.ejects else replica.at_port(self.management_port or 8081)

    async def replica_state(self, replica: Replica, model: str) -> str:
        url = f"{self.management_origin(replica)}/models/{model}"
        try:
            sent = self._sent("management")
            answer = await self.request("GET", url, headers=self.management_headers, timeout=2.0)
            if self.key_refused(answer) and await self._refresh("management", sent):
                answer = await self.request("GET", url, headers=self.management_headers, timeout=2.0)
        except BackendError as exc:
            return exc.as_state()
        if answer.status != 200:
            return f"NOT LOADED ({answer.status})"
        try:
            workers = answer.json()[0].get("workers", [])  # type: ignore[index]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            return "DOWN (malformed model description)"
        ready = sum(1 for w in workers if w.get("status") == "READY")
        return "READY" if workers and ready == len(workers) else f"{ready}/{len(workers)} workers ready"
