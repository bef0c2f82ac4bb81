"""Prometheus metrics under TF Serving's own names, served at the monitoring config's path."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

REGISTRY = CollectorRegistry()
REQUESTS = Counter(":tensorflow:serving:request_count", "Number of requests by model, API and status.", ["model_name", "API", "status"], registry=REGISTRY)
LATENCY = Histogram(
    ":tensorflow:serving:request_latency",
    "Request latency in microseconds.",
    ["model_name", "API", "entrypoint"],
    buckets=(50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1e6),
    registry=REGISTRY,
)


def observe(model: str, api: str, status: str, seconds: float) -> None:
    REQUESTS.labels(model, api, status).inc()
    LATENCY.labels(model, api, "REST" if api.startswith("rest") else "GRPC").observe(seconds * 1e6)


def render() -> bytes:
    return generate_latest(REGISTRY)
