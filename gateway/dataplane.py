"""The one data plane under both protocols: validate, route, call, fail over, mirror, compare.

Protocol modules turn HTTP into an `Inference` and back; backend clients turn
V1 JSON into calls to their stack. Everything here is protocol- and
wire-format-free. Routing tables, paths and weights are computed once at start.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

import numpy as np
import orjson

from gateway import metrics
from gateway.backends.base import Backend, BackendError, Explanation, UpstreamResult
from gateway.errors import GatewayError
from gateway.resilience import CircuitBreaker, ConcurrencyLimit
from gateway.validation import outputs_of
from models.spec import ModelSpec, get_spec
from twinserve.settings import GatewaySettings

log = logging.getLogger("twinserve.gateway")

BACKEND_NAMES = ("torchserve", "tfserving")
T = TypeVar("T")


@dataclass
class Inference:
    """A validated request: the model, the rows, and the V1 body to forward."""

    spec: ModelSpec
    rows: np.ndarray
    body: bytes
    row_format: bool


@dataclass
class Served:
    result: UpstreamResult
    failover_from: str | None = None


def v1_body(rows: np.ndarray) -> bytes:
    return orjson.dumps({"instances": rows}, option=orjson.OPT_SERIALIZE_NUMPY)


class DataPlane:
    def __init__(self, settings: GatewaySettings, backends: dict[str, Backend]) -> None:
        self.settings = settings
        self.backends = backends
        self.specs = {name: get_spec(name) for name in settings.model_list}
        self.breakers = {n: CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s) for n in backends}
        self.limits = {n: ConcurrencyLimit(settings.max_in_flight) for n in backends}
        self.other = {"torchserve": "tfserving", "tfserving": "torchserve"}
        weights = settings.weight_map
        total = sum(weights.get(n, 0.0) for n in BACKEND_NAMES) or 1.0
        self.torchserve_share = weights.get("torchserve", 0.0) / total
        self.background: set[asyncio.Task] = set()
        for n in backends:
            metrics.CIRCUIT.labels(n).set(0)

    # lookup ------------------------------------------------------------------
    def spec(self, model: str) -> ModelSpec:
        spec = self.specs.get(model)
        if spec is None:
            raise GatewayError(404, "unknown_model", f"unknown model {model!r}; served models: {', '.join(self.specs)}")
        return spec

    def check_backend(self, name: str | None) -> str | None:
        if name is None or name == "":
            return None
        if name not in self.backends:
            raise GatewayError(400, "unknown_backend", f"unknown backend {name!r}; choose one of {', '.join(self.backends)}")
        return name

    def choose(self, override: str | None) -> str:
        if override:
            return override
        if self.settings.routing == "weighted":
            return "torchserve" if random.random() < self.torchserve_share else "tfserving"
        return self.settings.primary

    # calls -------------------------------------------------------------------
    async def guarded(self, name: str, op: Callable[[Backend], Awaitable[T]]) -> T:
        """One upstream operation through the backend's breaker and concurrency limit."""
        breaker, limit = self.breakers[name], self.limits[name]
        if not breaker.allow():
            raise GatewayError(503, "circuit_open", f"{name} is failing; its circuit is open for {breaker.retry_after():.1f} s more", name, {"Retry-After": str(max(1, round(breaker.retry_after())))})
        if not limit.try_acquire():
            if breaker.state == CircuitBreaker.HALF_OPEN:
                breaker.probing = False
            metrics.REJECTED.labels("concurrency_limit").inc()
            raise GatewayError(429, "overloaded", f"{name} has {limit.limit} requests in flight; retry shortly", name, {"Retry-After": "1"})
        gauge = metrics.IN_FLIGHT.labels(name)
        gauge.inc()
        try:
            result = await op(self.backends[name])
        except BackendError as exc:
            if exc.kind in ("rejected", "overloaded"):
                breaker.success()  # the stack answered: it is alive
                status = 429 if exc.kind == "overloaded" else (exc.status or 400)
                raise GatewayError(status, "backend_rejected" if status != 429 else "overloaded", exc.message, name) from None
            before = breaker.state
            breaker.failure()
            if breaker.state != before:
                metrics.CIRCUIT_TRANSITIONS.labels(name, breaker.state).inc()
            metrics.CIRCUIT.labels(name).set(1 if breaker.state == CircuitBreaker.OPEN else 0)
            status = {"timeout": 504, "unavailable": 503}.get(exc.kind, 502)
            raise GatewayError(status, f"backend_{exc.kind}", exc.message, name) from None
        finally:
            limit.release()
            gauge.dec()
        if breaker.state != CircuitBreaker.CLOSED:
            metrics.CIRCUIT_TRANSITIONS.labels(name, CircuitBreaker.CLOSED).inc()
        breaker.success()
        metrics.CIRCUIT.labels(name).set(0)
        return result

    async def call(self, name: str, inf: Inference, request_id: str) -> UpstreamResult:
        result = await self.guarded(name, lambda b: b.predict(inf.spec.name, inf.body, request_id))
        metrics.UPSTREAM.labels(inf.spec.name, name).observe(result.seconds)
        return result

    async def with_failover(self, primary: str, model: str, request_id: str, op: Callable[[Backend], Awaitable[T]]) -> tuple[T, str | None]:
        """Run op on the primary; on a 5xx-class failure (and failover on), on the other stack."""
        try:
            return await self.guarded(primary, op), None
        except GatewayError as exc:
            if not self.settings.failover or exc.status < 500:
                raise
            fallback = self.other[primary]
            try:
                result = await self.guarded(fallback, op)
            except GatewayError as second:
                if second.status < 500:
                    raise
                raise GatewayError(exc.status, exc.type, f"{exc.message}; failover to {fallback} failed too: {second.message}", exc.backend, exc.headers) from None
            metrics.FAILOVERS.labels(model, primary, fallback).inc()
            log.warning("request %s: %s failed (%s), served by %s", request_id, primary, exc.message, fallback)
            return result, primary

    async def infer(self, inf: Inference, override: str | None, request_id: str) -> Served:
        result, failed = await self.with_failover(self.choose(override), inf.spec.name, request_id, lambda b: b.predict(inf.spec.name, inf.body, request_id))
        metrics.UPSTREAM.labels(inf.spec.name, result.backend).observe(result.seconds)
        if failed is None and self.settings.routing == "mirror" and override is None:
            self._mirror(inf, result, request_id)
        return Served(result, failover_from=failed)

    async def explain(self, inf: Inference, targets: list[int], override: str | None, request_id: str) -> tuple[Explanation, str | None]:
        return await self.with_failover(self.choose(override), inf.spec.name, request_id, lambda b: b.explain(inf.spec, inf.rows, targets, request_id))

    async def explain_compare(self, inf: Inference, targets: list[int], request_id: str) -> dict:
        """Both stacks' attributions for the same rows, their largest difference and their correlation."""
        names = list(BACKEND_NAMES)
        results = await asyncio.gather(*(self.guarded(n, lambda b: b.explain(inf.spec, inf.rows, targets, request_id)) for n in names), return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException) and not isinstance(res, GatewayError):
                raise res
        failed = [r for r in results if isinstance(r, GatewayError)]
        if failed:
            raise failed[0]
        a, b = (r.attributions for r in results)  # type: ignore[union-attr]
        flat_a, flat_b = a.reshape(len(a), -1), b.reshape(len(b), -1)
        corr = [float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else 1.0 for x, y in zip(flat_a, flat_b)]
        return {
            "results": {r.backend: r for r in results},  # type: ignore[union-attr]
            "max_abs_diff": float(np.abs(a - b).max()),
            "correlation": corr,
            "targets_agree": results[0].targets == results[1].targets,  # type: ignore[union-attr]
        }

    # mirror ------------------------------------------------------------------
    def _mirror(self, inf: Inference, primary: UpstreamResult, request_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._shadow(inf, primary, request_id))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _shadow(self, inf: Inference, primary: UpstreamResult, request_id: str) -> None:
        target = self.other[primary.backend]
        try:
            shadow = await self.call(target, inf, request_id)
            diff = float(np.abs(outputs_of(primary.body, primary.backend) - outputs_of(shadow.body, target)).max())
            result = "agree" if diff <= 1e-4 else "disagree"
            if result == "disagree":
                log.warning("request %s: mirror disagreement on %s, max |diff| %.3g", request_id, inf.spec.name, diff)
        except GatewayError as exc:
            result = "skipped" if exc.status == 429 or exc.type == "circuit_open" else "error"
        except Exception:  # a mirror must never surface to the client
            log.exception("mirror of request %s failed", request_id)
            result = "error"
        metrics.MIRROR.labels(inf.spec.name, result).inc()

    # compare -----------------------------------------------------------------
    async def compare(self, inf: Inference, request_id: str) -> dict:
        names = list(BACKEND_NAMES)
        results = await asyncio.gather(*(self.call(n, inf, request_id) for n in names), return_exceptions=True)
        out: dict = {"model": inf.spec.name, "instances": int(inf.rows.shape[0]), "results": {}}
        probs: dict[str, np.ndarray] = {}
        for name, res in zip(names, results):
            if isinstance(res, GatewayError):
                out["results"][name] = {"error": {"type": res.type, "message": res.message}}
            elif isinstance(res, BaseException):
                raise res
            else:
                probs[name] = outputs_of(res.body, name)
                out["results"][name] = {"predictions": probs[name].tolist(), "latency_ms": round(res.seconds * 1000, 3)}
        if len(probs) == 2:
            a, b = probs["torchserve"], probs["tfserving"]
            out["max_abs_diff"] = float(np.abs(a - b).max())
            out["classes_agree"] = bool((a.argmax(-1) == b.argmax(-1)).all())
            out["classes"] = {"torchserve": a.argmax(-1).tolist(), "tfserving": b.argmax(-1).tolist()}
        else:
            out["max_abs_diff"] = None
            out["classes_agree"] = None
            if not probs:
                first = next(r for r in results if isinstance(r, GatewayError))
                raise GatewayError(first.status, "all_backends_failed", "; ".join(f"{n}: {out['results'][n]['error']['message']}" for n in names), None)
        return out

    # state -------------------------------------------------------------------
    async def model_states(self) -> dict[str, dict[str, str]]:
        names = list(self.specs)
        backends = list(self.backends)
        states = await asyncio.gather(*(self.backends[b].model_state(m) for m in names for b in backends))
        it = iter(states)
        return {m: {b: next(it) for b in backends} for m in names}

    def circuits(self) -> dict[str, str]:
        return {n: b.state for n, b in self.breakers.items()}

    async def aclose(self) -> None:
        for task in list(self.background):
            task.cancel()
        for backend in self.backends.values():
            await backend.aclose()

