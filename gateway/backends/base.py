"""The one interface every backend client implements, and the HTTP plumbing they share.

The data plane speaks TensorFlow Serving's V1 JSON (the gateway's canonical
body); a client is the only place that knows how its stack wants it sent and
how its stack reports model state and errors.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import httpx
import numpy as np

from models.spec import ModelSpec
from gateway.settings import GatewaySettings


@dataclass(frozen=True)
class UpstreamResult:
    backend: str
    body: bytes  # V1 JSON: {"predictions": ...} or {"outputs": ...}
    seconds: float


@dataclass(frozen=True)
class Explanation:
    backend: str
    attributions: np.ndarray  # same shape as the input rows
    targets: list[int]
    seconds: float


def malformed(backend: str, what: str) -> "BackendError":
    return BackendError(backend, "bad_gateway", f"{backend} returned a malformed {what}")


class BackendError(Exception):
    """kind: unavailable (cannot connect), timeout, bad_gateway (5xx or garbage), rejected (4xx), overloaded (429)."""

    def __init__(self, backend: str, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.backend = backend
        self.kind = kind
        self.message = message
        self.status = status


def make_transport(settings: GatewaySettings) -> httpx.AsyncBaseTransport:
    limits = httpx.Limits(max_connections=settings.pool_size, max_keepalive_connections=settings.pool_size, keepalive_expiry=30)
    if settings.transport == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        return AiohttpTransport(limits=limits)
    return httpx.AsyncHTTPTransport(limits=limits)


def make_client(settings: GatewaySettings, base_url: str, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
    return httpx.AsyncClient(base_url=base_url, transport=transport or make_transport(settings), timeout=timeout)


def refused(exc: BaseException) -> bool:
    """True when the cause is a refused connection. httpx-aiohttp 0.2 reports a refused
    connection as ConnectTimeout; the aiohttp error underneath tells the truth."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or isinstance(getattr(seen, "os_error", None), ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


REGISTRY: dict[str, type["Backend"]] = {}


def register(cls: type["Backend"]) -> type["Backend"]:
    """Class decorator: make an adapter available under its `name`."""
    REGISTRY[cls.name] = cls
    return cls


class Backend(ABC):
    name: str
    implementation: str = "unknown"  # what actually serves (e.g. the real binary or a compatible server)

    def __init__(self, settings: GatewaySettings, base_url: str) -> None:
        self.settings = settings
        # The hot path hands httpx.Requests straight to the transport: the client's per-request URL
        # merging, cookie jar, auth and redirect handling cost about a third of the gateway's CPU per
        # request (py-spy, README) and none applies to a proxied call. Other calls use the client.
        self.transport = make_transport(settings)
        self.client = make_client(settings, base_url, self.transport)
        self.base_url = base_url.rstrip("/")
        self._urls: dict[str, httpx.URL] = {}
        self._timeouts = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s).as_dict()
        self.headers: dict[str, str] = {"Content-Type": "application/json"}

    def url(self, path: str) -> httpx.URL:
        """Parsed once per path; paths come from the model list, so the cache stays small."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self.base_url + path)
        return url

    @abstractmethod
    def predict_path(self, model: str) -> str: ...

    @abstractmethod
    async def model_state(self, model: str) -> str:
        """READY, or a short reason it is not."""

    def error_message(self, response: httpx.Response) -> str:
        return response.text[:300]

    def key_refused(self, response: httpx.Response) -> bool:
        """The stack refused the gateway's own credentials (not the client's request)."""
        return False

    @abstractmethod
    async def explain(self, spec: ModelSpec, rows: np.ndarray, targets: list[int], request_id: str) -> Explanation:
        """Integrated Gradients per row, from the stack's own explanation path."""

    async def predict(self, model: str, body: bytes, request_id: str) -> UpstreamResult:
        return await self.post(self.predict_path(model), body, request_id)

    async def post(self, path: str, body: bytes, request_id: str) -> UpstreamResult:
        """One bounded upstream call; every failure becomes a BackendError that says what happened."""
        request = httpx.Request("POST", self.url(path), headers={**self.headers, "X-Request-ID": request_id}, content=body, extensions={"timeout": self._timeouts})
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                response = await self.transport.handle_async_request(request)
                try:
                    content = await response.aread()
                finally:
                    await response.aclose()
        except TimeoutError:
            raise BackendError(self.name, "timeout", f"{self.name} did not answer within {self.settings.timeout_s:g} s") from None
        except httpx.TimeoutException as exc:
            if refused(exc):
                raise BackendError(self.name, "unavailable", f"{self.name} is unreachable (connection refused)") from None
            raise BackendError(self.name, "timeout", f"{self.name} did not answer within {self.settings.timeout_s:g} s") from None
        except httpx.TransportError as exc:
            raise BackendError(self.name, "unavailable", f"{self.name} is unreachable ({type(exc).__name__})") from None
        seconds = time.perf_counter() - started
        status = response.status_code
        if status == 200:
            return UpstreamResult(self.name, content, seconds)
        message = self.error_message(response)
        if self.key_refused(response):
            raise BackendError(self.name, "bad_gateway", f"{self.name} refused the gateway's key: {message}", 401)
        if status == 429:
            raise BackendError(self.name, "overloaded", f"{self.name} is overloaded: {message}", status)
        if 400 <= status < 500 and status != 408:
            raise BackendError(self.name, "rejected", message, status)
        raise BackendError(self.name, "bad_gateway", f"{self.name} answered {status}: {message}", status)

    async def aclose(self) -> None:
        await self.client.aclose()
