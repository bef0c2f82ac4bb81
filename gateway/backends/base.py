"""The one interface every backend adapter implements, and the HTTP plumbing they share.

The data plane speaks TensorFlow Serving's V1 JSON (the gateway's canonical
body); an adapter is the only place that knows how its stack wants it sent and
how its stack reports model state and errors.

A stack may have several replicas (gateway/replicas.py): `call` picks one per request and moves on
to another when one gives no answer. Upstream calls go through one aiohttp session per backend, created in the event loop on first use.
aiohttp directly, rather than httpx over an aiohttp transport: the httpx layers (Request and
Response objects, header normalisation, the transport adapter) cost about a quarter of the
gateway's CPU per proxied request (980-1000 -> 750-780 us, same run, wrk 16 connections, tabular).
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Mapping

import aiohttp
import numpy as np
import orjson
from yarl import URL

from gateway.replicas import Replica, ReplicaSet
from gateway.settings import GatewaySettings
from models.spec import ModelSpec


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
    """kind: unavailable (cannot connect), timeout, bad_gateway (5xx or garbage), rejected (4xx), overloaded (429),
    unimplemented (the stack cannot do this at all: 501)."""

    def __init__(self, backend: str, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.backend = backend
        self.kind = kind
        self.message = message
        self.status = status

    def as_state(self) -> str:
        """The model state shown for a stack that gave no answer, in the words predict uses:
        "DOWN (unreachable (connection refused))", "DOWN (did not answer within 2 s)"."""
        return f"DOWN ({self.message.removeprefix(f'{self.backend} ').removeprefix('is ')})"


@dataclass(frozen=True)
class Answer:
    """A stack's raw HTTP answer."""

    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> object:
        return orjson.loads(self.body)


REGISTRY: dict[str, type["Backend"]] = {}


def register(cls: type["Backend"]) -> type["Backend"]:
    """Class decorator: make an adapter available under its `name`."""
    REGISTRY[cls.name] = cls
    return cls


class Backend(ABC):
    name: str
    url_field: str  # the GatewaySettings field holding the stack's URL(s), e.g. "tfserving_url"
    implementation: str = "unknown"  # what actually serves (e.g. the real binary or a compatible server)

    def __init__(self, settings: GatewaySettings, urls: str) -> None:
        self.settings = settings
        self.replicas = ReplicaSet(self.name, urls, settings.breaker_failures, settings.breaker_cooldown_s, settings.resolve_interval_s)
        self.session: aiohttp.ClientSession | None = None
        self.headers: dict[str, str] = {"Content-Type": "application/json"}

    def http(self) -> aiohttp.ClientSession:
        """The backend's keep-alive pool, made on first use (a session belongs to a running loop)."""
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.settings.pool_size, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.settings.connect_timeout_s),
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                auto_decompress=False,
            )
        return self.session

    def start(self) -> None:
        """Background work that needs the running loop: re-resolving the replicas."""
        self.replicas.start(self.replica_ready)

    async def replica_ready(self, replica: Replica) -> bool:
        states = await asyncio.gather(*(self.replica_state(replica, m) for m in self.settings.model_list))
        return all(s == "READY" for s in states)

    async def request(self, method: str, url: URL | str, body: bytes | None = None, headers: Mapping[str, str] | None = None, timeout: float | None = None) -> Answer:
        """One bounded HTTP exchange at one address (a state probe, a key renewal); a failure to get
        any answer is a BackendError that says what happened (refused, unreachable, or too slow)."""
        limit = timeout or self.settings.timeout_s
        try:
            async with asyncio.timeout(limit):
                return await self._send(method, url, body, headers)
        except TimeoutError:
            raise BackendError(self.name, "timeout", f"{self.name} did not answer within {limit:g} s") from None

    async def call(self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None, timeout: float | None = None) -> Answer:
        """One request to the stack, at a replica the balancer picks. A replica that gives no answer
        at all (refused, reset, gone mid-request: a killed or rescheduled server) is left for the next
        one within the same time bound, so a replica's death loses no request while another serves.
        A timeout is not retried: the request may be running there, and the bound is the client's."""
        limit = timeout or self.settings.timeout_s
        replicas = self.replicas
        eject = replicas.ejects
        tried: set[Replica] = set()
        current: Replica | None = None
        last: BackendError | None = None
        try:
            async with asyncio.timeout(limit):
                while (replica := replicas.pick(tried)) is not None:
                    tried.add(replica)
                    current = replica
                    replica.in_flight += 1
                    replica.in_flight_gauge.inc()
                    try:
                        answer = await self._send(method, replica.url(path), body, headers, replica if eject else None)
                    except BackendError as exc:
                        current = None
                        replica.record("failed", eject)
                        last = exc
                        continue
                    except asyncio.CancelledError:  # the deadline (recorded below) or the client gone
                        if replica.breaker.state == replica.breaker.HALF_OPEN:
                            replica.breaker.probing = False  # else it waits for a probe that never ends
                        raise
                    finally:  # the deadline cancels the exchange: `current` then names the replica
                        replica.in_flight -= 1
                        replica.in_flight_gauge.dec()
                    current = None
                    replica.record("ok" if answer.status < 400 else "rejected" if answer.status < 500 else "failed", eject)
                    return answer
        except TimeoutError:
            if current is not None:
                current.record("failed", eject)
            where = f" at {current.label}" if eject and current is not None else ""
            raise BackendError(self.name, "timeout", f"{self.name} did not answer within {limit:g} s{where}") from None
        raise last or BackendError(self.name, "unavailable", replicas.nothing_to_pick(tried))

    async def _send(self, method: str, url: URL | str, body: bytes | None, headers: Mapping[str, str] | None, replica: Replica | None = None) -> Answer:
        where = f" at {replica.label}" if replica is not None else ""
        try:
            async with self.http().request(method, url, data=body, headers=headers) as response:
                return Answer(response.status, await response.read(), response.headers)
        except aiohttp.ClientConnectorError as exc:
            reason = "connection refused" if isinstance(exc.os_error, ConnectionRefusedError) else (exc.os_error.strerror or type(exc.os_error).__name__)
            raise BackendError(self.name, "unavailable", f"{self.name} is unreachable{where} ({reason})") from None
        except aiohttp.ClientError as exc:
            raise BackendError(self.name, "unavailable", f"{self.name} is unreachable{where} ({type(exc).__name__})") from None

    async def replica_states(self, models: list[str]) -> dict[str, dict[str, str]]:
        """model -> replica -> state, every replica asked at once."""
        replicas = list(self.replicas.replicas)
        if not replicas:
            why = f"DOWN ({self.replicas.nothing_to_pick(set()).removeprefix(self.name + ' ')})"
            return {m: {s.name: why for s in self.replicas.sources} for m in models}
        states = iter(await asyncio.gather(*(self.replica_state(r, m) for m in models for r in replicas)))
        return {m: {r.label: next(states) for r in replicas} for m in models}

    @abstractmethod
    async def replica_state(self, replica: Replica, model: str) -> str:
        """READY, or a short reason it is not, for one model on one replica."""

    @abstractmethod
    def predict_path(self, model: str) -> str: ...

    def error_message(self, answer: Answer) -> str:
        """The stack's `{"error": "<message>"}` (TF Serving's and KServe's shape), else the raw body."""
        try:
            data = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict) and data.get("error") is not None:
            return str(data["error"])[:300]
        return answer.body[:300].decode("utf-8", "replace")

    def key_refused(self, answer: Answer) -> bool:
        """The stack refused the gateway's own credentials (not the client's request)."""
        return False

    @abstractmethod
    async def explain(self, spec: ModelSpec, rows: np.ndarray, targets: list[int], request_id: str) -> Explanation:
        """Integrated Gradients per row, from the stack's own explanation path."""

    async def predict(self, model: str, body: bytes, request_id: str) -> UpstreamResult:
        return await self.post(self.predict_path(model), body, request_id)

    async def post(self, path: str, body: bytes, request_id: str) -> UpstreamResult:
        """One bounded upstream call; every failure becomes a BackendError that says what happened."""
        started = time.perf_counter()
        answer = await self.call("POST", path, body, {**self.headers, "X-Request-ID": request_id})
        seconds = time.perf_counter() - started
        status = answer.status
        if status == 200:
            return UpstreamResult(self.name, answer.body, seconds)
        message = self.error_message(answer)
        if self.key_refused(answer):
            raise BackendError(self.name, "bad_gateway", f"{self.name} refused the gateway's key: {message}", 401)
        if status == 429:
            raise BackendError(self.name, "overloaded", f"{self.name} is overloaded: {message}", status)
        if 400 <= status < 500 and status != 408:
            raise BackendError(self.name, "rejected", message, status)
        raise BackendError(self.name, "bad_gateway", f"{self.name} answered {status}: {message}", status)

    async def aclose(self) -> None:
        await self.replicas.aclose()
        if self.session is not None:
            await self.session.close()
