"""The one data plane under both protocols: validate, route, call, fail over, mirror, compare.

Protocol modules turn HTTP into an `Inference` and back; backend adapters turn
V1 JSON into calls to their stack. Everything here is protocol- and
wire-format-free, and names no stack: backends come from the registry
(gateway/backends/), in the configured order, which is also the failover order.
Routing tables, paths and weights are computed once at start.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

import numpy as np

from gateway import metrics, stats
from gateway.backends.base import Backend, BackendError, Explanation, UpstreamResult
from gateway.errors import GatewayError
from gateway.resilience import CircuitBreaker, ConcurrencyLimit
from gateway.validation import Tensors, encode_inputs, outputs_of
from models.parity import output_diff
from models.spec import ModelSpec, get_spec
from gateway.settings import GatewaySettings

log = logging.getLogger("twinserve.gateway")

T = TypeVar("T")


@dataclass
class Inference:
    """A validated request: the model, its inputs by name, and the V1 body to forward."""

    spec: ModelSpec
    inputs: Tensors
    body: bytes
    row_format: bool

    @property
    def rows(self) -> np.ndarray:
        """The first input's batch: what the zoo's single-input classifiers explain."""
        return self.inputs[self.spec.input_name]

    @property
    def count(self) -> int:
        return len(next(iter(self.inputs.values())))


@dataclass
class Served:
    result: UpstreamResult
    failover_from: str | None = None


class DataPlane:
    def __init__(self, settings: GatewaySettings, backends: dict[str, Backend]) -> None:
        self.settings = settings
        self.backends = backends
        self.names = list(backends)
        self.specs = {name: get_spec(name) for name in settings.model_list}
        self.breakers = {n: CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s) for n in backends}
        self.limits = {n: ConcurrencyLimit(settings.max_in_flight) for n in backends}
        # failover (and mirror) order: the others, starting after the one that failed
        self.fallbacks = {n: self.names[i + 1:] + self.names[:i] for i, n in enumerate(self.names)}
        weights = settings.weight_map  # names checked against the registry in gateway.backends.create
        shares = [max(0.0, weights.get(n, 0.0)) if weights else 1.0 for n in self.names]  # none given: an equal split
        total = sum(shares) or 1.0
        self.cumulative = list(itertools.accumulate(w / total for w in shares))
        self.background: set[asyncio.Task] = set()
        # metric children resolved once: a labels() lookup takes a lock and a dict walk per call
        self.in_flight = {n: metrics.IN_FLIGHT.labels(n) for n in backends}
        self.circuit_open = {n: metrics.CIRCUIT.labels(n) for n in backends}
        self.upstream = {(m, n): metrics.UPSTREAM.labels(m, n) for m in self.specs for n in backends}
        self.stats = stats.Recorder(self.specs)  # V2's statistics extension
        for gauge in self.circuit_open.values():
            gauge.set(0)

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
            return self.names[min(bisect.bisect_right(self.cumulative, random.random()), len(self.names) - 1)]
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
        gauge = self.in_flight[name]
        gauge.inc()
        try:
            result = await op(self.backends[name])
        except asyncio.CancelledError:  # the caller went away (a gRPC deadline or cancel): no verdict on the stack
            if breaker.state == CircuitBreaker.HALF_OPEN:
                breaker.probing = False  # else the half-open circuit would wait for a probe that never ends
            raise
        except BackendError as exc:
            if exc.kind in ("rejected", "overloaded", "unimplemented"):
                breaker.success()  # the stack answered: it is alive
                status = 429 if exc.kind == "overloaded" else (exc.status or 400)
                kind = {"overloaded": "overloaded", "unimplemented": "not_implemented"}.get(exc.kind, "backend_rejected")
                raise GatewayError(status, kind, exc.message, name) from None
            before = breaker.state
            breaker.failure()
            if breaker.state != before:
                metrics.CIRCUIT_TRANSITIONS.labels(name, breaker.state).inc()
            self.circuit_open[name].set(1 if breaker.state == CircuitBreaker.OPEN else 0)
            status = {"timeout": 504, "unavailable": 503}.get(exc.kind, 502)
            raise GatewayError(status, f"backend_{exc.kind}", exc.message, name) from None
        finally:
            limit.release()
            gauge.dec()
        if breaker.state != CircuitBreaker.CLOSED:
            metrics.CIRCUIT_TRANSITIONS.labels(name, CircuitBreaker.CLOSED).inc()
        breaker.success()
        self.circuit_open[name].set(0)
        return result

    async def call(self, name: str, inf: Inference, request_id: str) -> UpstreamResult:
        result = await self.guarded(name, lambda b: b.predict(inf.spec.name, inf.body, request_id))
        self.upstream[inf.spec.name, name].observe(result.seconds)
        return result

    async def with_failover(self, primary: str, model: str, request_id: str, op: Callable[[Backend], Awaitable[T]]) -> tuple[T, str | None]:
        """Run op on the primary; on a 5xx-class failure (and failover on), on the next backends in turn.
        A 501 is no failure but what the stack cannot do (explanations from ONNX Runtime): said, not hidden."""
        try:
            return await self.guarded(primary, op), None
        except GatewayError as exc:
            if not self.settings.failover or exc.status < 500 or exc.status == 501 or not self.fallbacks[primary]:
                raise
            first, failures = exc, []
        for fallback in self.fallbacks[primary]:
            try:
                result = await self.guarded(fallback, op)
            except GatewayError as exc:
                if exc.status < 500:
                    raise
                failures.append(f"failover to {fallback} failed too: {exc.message}")
                continue
            metrics.FAILOVERS.labels(model, primary, fallback).inc()
            log.warning("request %s: %s failed (%s), served by %s", request_id, primary, first.message, fallback)
            return result, primary
        raise GatewayError(first.status, first.type, "; ".join([first.message, *failures]), first.backend, first.headers) from None

    async def infer(self, inf: Inference, override: str | None, request_id: str) -> Served:
        started = time.perf_counter()
        try:
            result, failed = await self.with_failover(self.choose(override), inf.spec.name, request_id, lambda b: b.predict(inf.spec.name, inf.body, request_id))
        except Exception:
            self.stats.failure(inf.spec.name, time.perf_counter() - started)
            raise
        self.stats.success(inf.spec.name, inf.count, time.perf_counter() - started, result.seconds)
        self.upstream[inf.spec.name, result.backend].observe(result.seconds)
        if failed is None and self.settings.routing == "mirror" and override is None:
            self._mirror(inf, result, request_id)
        return Served(result, failover_from=failed)

    async def infer_tensors(self, spec: ModelSpec, inputs: Tensors, override: str | None, request_id: str) -> tuple[Served, dict[str, np.ndarray]]:
        """Inputs the gateway decoded itself (V2 over HTTP and gRPC, TF Serving's gRPC Predict), sent to
        a stack as the V1 body encode_inputs writes: the served result and its outputs by name."""
        served = await self.infer(Inference(spec, inputs, encode_inputs(inputs, spec), len(spec.inputs) == 1), override, request_id)
        return served, outputs_of(served.result.body, served.result.backend, spec)

    async def explain(self, inf: Inference, targets: list[int], override: str | None, request_id: str) -> tuple[Explanation, str | None]:
        return await self.with_failover(self.choose(override), inf.spec.name, request_id, lambda b: b.explain(inf.spec, inf.rows, targets, request_id))

    async def explain_compare(self, inf: Inference, targets: list[int], request_id: str) -> dict:
        """Every explaining stack's attributions for the same rows, their largest difference and, per row,
        their lowest correlation over the pairs of stacks (a stack answering 501 explains nothing: left out)."""
        results = await asyncio.gather(*(self.guarded(n, lambda b: b.explain(inf.spec, inf.rows, targets, request_id)) for n in self.names), return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException) and not isinstance(res, GatewayError):
                raise res
        failed = [r for r in results if isinstance(r, GatewayError) and r.status != 501]  # 501: a stack that explains nothing
        if failed:
            raise failed[0]
        explanations: list[Explanation] = [r for r in results if isinstance(r, Explanation)]
        if not explanations:
            raise next(r for r in results if isinstance(r, GatewayError))
        flat = [e.attributions.reshape(len(e.attributions), -1) for e in explanations]
        pairs = list(itertools.combinations(flat, 2))
        corr = [min((row_correlation(x[i], y[i]) for x, y in pairs), default=1.0) for i in range(len(inf.rows))]
        return {
            "results": {e.backend: e for e in explanations},
            "max_abs_diff": max((float(np.abs(x - y).max()) for x, y in pairs), default=0.0),
            "correlation": corr,
            "targets_agree": all(e.targets == explanations[0].targets for e in explanations),
        }

    # mirror ------------------------------------------------------------------
    def _mirror(self, inf: Inference, primary: UpstreamResult, request_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._shadow(inf, primary, request_id))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _shadow(self, inf: Inference, primary: UpstreamResult, request_id: str) -> None:
        if not self.fallbacks[primary.backend]:
            return
        target = self.fallbacks[primary.backend][0]
        try:
            shadow = await self.call(target, inf, request_id)
            diff = max_diff(outputs_of(primary.body, primary.backend, inf.spec), outputs_of(shadow.body, target, inf.spec))
            result = "agree" if diff <= inf.spec.tolerance else "disagree"
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
        """The same inputs to every stack: each answer, the largest difference between any two over
        every output, and (a classifier) whether their classes agree."""
        spec = inf.spec
        results = await asyncio.gather(*(self.call(n, inf, request_id) for n in self.names), return_exceptions=True)
        out: dict = {"model": spec.name, "instances": inf.count, "results": {}}
        answers: dict[str, dict[str, np.ndarray]] = {}
        for name, res in zip(self.names, results):
            if isinstance(res, GatewayError):
                out["results"][name] = {"error": res.message, "type": res.type}
            elif isinstance(res, BaseException):
                raise res
            else:
                answers[name] = outputs_of(res.body, name, spec)
                # as float64 lists: the differences reported are those of the values shown
                shown = answers[name][spec.output_name].tolist() if len(spec.outputs) == 1 else {k: v.tolist() for k, v in answers[name].items()}
                out["results"][name] = {"predictions": shown, "latency_ms": round(res.seconds * 1000, 3)}
        if len(answers) >= 2:
            out["max_abs_diff"] = max(max_diff(a, b) for a, b in itertools.combinations(answers.values(), 2))
            if spec.classifier:
                classes = {n: a[spec.output_name].argmax(-1) for n, a in answers.items()}
                first = next(iter(classes.values()))
                out["classes_agree"] = all(bool((c == first).all()) for c in classes.values())
                out["classes"] = {n: c.tolist() for n, c in classes.items()}
            else:
                out["classes_agree"] = None
        else:
            out["max_abs_diff"] = None
            out["classes_agree"] = None
            if not answers:
                first_error = next(r for r in results if isinstance(r, GatewayError))
                raise GatewayError(first_error.status, "all_backends_failed", "; ".join(f"{n}: {out['results'][n]['error']}" for n in self.names), None)
        return out

    # state -------------------------------------------------------------------
    async def replica_states(self) -> dict[str, dict[str, dict[str, str]]]:
        """model -> backend -> replica -> state, every backend's replicas asked at once."""
        models = list(self.specs)
        per_backend = await asyncio.gather(*(self.backends[b].replica_states(models) for b in self.names))
        return {m: {b: states[m] for b, states in zip(self.names, per_backend)} for m in models}

    async def model_states(self) -> dict[str, dict[str, str]]:
        """model -> backend -> state: a stack serves a model when any of its replicas does."""
        return stack_states(await self.replica_states())

    def replica_load(self) -> dict[str, dict[str, dict]]:
        """backend -> replica -> in flight here, whether it is out of rotation after failures, and
        whether it is still warming up (found after start-up and not yet serving every model)."""
        return {n: {r.label: {"in_flight": r.in_flight, "ejected": b.replicas.ejects and r.breaker.state == "open", "warming": not r.warm} for r in b.replicas.replicas} for n, b in self.backends.items()}

    def start(self) -> None:
        """Background work of the backends (re-resolving replicas); needs the running loop."""
        for backend in self.backends.values():
            backend.start()

    def implementations(self) -> dict[str, str]:
        return {n: b.implementation for n, b in self.backends.items()}

    def circuits(self) -> dict[str, str]:
        return {n: b.state for n, b in self.breakers.items()}

    async def aclose(self) -> None:
        for task in list(self.background):
            task.cancel()
        for backend in self.backends.values():
            await backend.aclose()



def stack_states(replicas: dict[str, dict[str, dict[str, str]]]) -> dict[str, dict[str, str]]:
    """One state per model and stack from its replicas': READY when any replica is; otherwise the
    replicas' common state, or each replica's."""
    out: dict[str, dict[str, str]] = {}
    for model, backends in replicas.items():
        out[model] = {}
        for backend, states in backends.items():
            values = list(states.values())
            if "READY" in values:
                out[model][backend] = "READY"
            elif len(set(values)) == 1:
                out[model][backend] = values[0]
            else:
                out[model][backend] = "; ".join(f"{r}: {s}" for r, s in states.items())
    return out


def row_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two attribution rows; two constant rows count as agreeing."""
    return float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else 1.0


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """The largest absolute difference over every output, measured as parity measures it
    (models/parity.py: exact outputs count 0 when equal, inf when not)."""
    worst = 0.0
    for name, x in a.items():
        y = b[name]
        if x.shape != y.shape:
            return float("inf")
        if x.size:
            worst = max(worst, float(output_diff(x, y).max()))
    return worst
