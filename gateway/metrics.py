"""The gateway's Prometheus metrics: one registry per process, or summed over the uvicorn workers
when they share a multiprocess directory (gateway/serve.py sets it up)."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

REGISTRY = CollectorRegistry()
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter("twinserve_gateway_requests", "Requests answered, by model, backend, endpoint and status.", ["model", "backend", "endpoint", "status"], registry=REGISTRY)
LATENCY = Histogram("twinserve_gateway_request_seconds", "Gateway request latency.", ["model", "backend", "endpoint"], buckets=BUCKETS, registry=REGISTRY)
UPSTREAM = Histogram("twinserve_gateway_upstream_seconds", "Upstream call latency.", ["model", "backend"], buckets=BUCKETS, registry=REGISTRY)
IN_FLIGHT = Gauge("twinserve_gateway_in_flight", "Upstream requests in flight.", ["backend"], registry=REGISTRY, multiprocess_mode="livesum")
FAILOVERS = Counter("twinserve_gateway_failovers", "Requests served by the other stack after a failure.", ["model", "from_backend", "to_backend"], registry=REGISTRY)
MIRROR = Counter("twinserve_gateway_mirror", "Mirrored requests by outcome (agree, disagree, error, skipped).", ["model", "result"], registry=REGISTRY)
CIRCUIT = Gauge("twinserve_gateway_circuit_open", "1 while a backend's circuit is open (in any worker: each has its own breaker).", ["backend"], registry=REGISTRY, multiprocess_mode="livemax")
CIRCUIT_TRANSITIONS = Counter("twinserve_gateway_circuit_transitions", "Circuit state changes, by backend and new state.", ["backend", "state"], registry=REGISTRY)
REPLICA_REQUESTS = Counter("twinserve_gateway_replica_requests", "Upstream attempts per replica of a stack, by outcome: ok, rejected (the replica answered 4xx), failed (no answer, a timeout or a 5xx).", ["backend", "replica", "outcome"], registry=REGISTRY)
REPLICA_IN_FLIGHT = Gauge("twinserve_gateway_replica_in_flight", "Upstream requests in flight per replica.", ["backend", "replica"], registry=REGISTRY, multiprocess_mode="livesum")
REPLICA_EJECTED = Gauge("twinserve_gateway_replica_ejected", "1 while a replica is out of rotation after failures (in any worker: each ejects on its own).", ["backend", "replica"], registry=REGISTRY, multiprocess_mode="livemax")
REJECTED = Counter("twinserve_gateway_rejected", "Requests rejected before any backend call, by reason.", ["reason"], registry=REGISTRY)


SHARED_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def worker_stopped() -> None:
    """A stopping worker drops out of the live gauges (in-flight, circuit-open) of the shared directory;
    otherwise a worker that uvicorn replaces would keep counting."""
    if SHARED_DIR:
        mark_process_dead(os.getpid(), SHARED_DIR)


def _scrape_registry() -> CollectorRegistry:
    if not SHARED_DIR:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=SHARED_DIR)
    return registry


SCRAPE = _scrape_registry()


def render() -> bytes:
    return generate_latest(SCRAPE)
