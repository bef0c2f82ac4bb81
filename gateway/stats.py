"""Per-model inference statistics in the shape of Triton's statistics extension
(`GET /v2/models[/{model}]/stats`, triton-inference-server/server docs/protocol/extension_statistics.md),
counted from what the gateway itself sees.

The gateway sees a request reach the data plane (validated, in the stack's wire format), the call
to the stack that answers it (one HTTP round trip, after a failover the second stack's), and the
request's end there. It does not see inside a stack, so Triton's split of a request's time into
queue, input, compute and output is mapped onto what is visible. In the answer:

- `success`: requests for the model that the data plane answered; `ns` is their total time there,
  from the validated request to the stack's answer, failover attempts included.
- `fail`: requests that failed there (a stack's error, a timeout, an open circuit, the in-flight
  limit's 429), with their time. Bad input refused by validation (4xx before any stack is asked)
  never reaches a model and is not counted here; `/metrics` counts it by status.
- `queue`: `ns` is the part of the successes' time not spent in the answering stack's call: failed
  attempts before a failover and the gateway's own bookkeeping. The gateway queues nothing (over
  its in-flight limit it answers 429), so without failovers this is close to zero.
- `compute_infer`: `ns` is the answering stack's round trip: the stack's own queueing, batching,
  input handling, model execution and output, and the loopback network.
- `compute_input`, `compute_output`: not measured separately (they happen inside the stack's round
  trip): the successes' count with 0 ns.
- `inference_count`: instances inferred successfully (a batch of 8 counts 8), as in Triton;
  `execution_count`: successful requests, one stack call each (the stacks' server-side batching of
  several requests into one execution is not visible from here); `last_inference`: milliseconds
  since the epoch of the last request that reached the data plane, successful or not.

Only predictions count (V1 predict, V2 infer, raw bodies: `DataPlane.infer`); `:compare`, `:explain`
and mirrored copies are not inferences a client asked one model for. The counters are Prometheus
metrics in the gateway's registry, so with several uvicorn workers they are summed over the workers
like everything in `/metrics`, and a client polling the statistics sees one gateway.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from prometheus_client import Counter, Gauge, Summary

from gateway import metrics

PREFIX = "twinserve_gateway_inference_stat_"
DURATION = Summary(PREFIX + "seconds", "Time in the data plane of the predictions per model, by outcome (success, fail): Triton's statistics extension.", ["model", "outcome"], registry=metrics.REGISTRY)
UPSTREAM = Counter(PREFIX + "upstream_seconds", "Time of the answering stack's call in successful predictions per model.", ["model"], registry=metrics.REGISTRY)
INSTANCES = Counter(PREFIX + "instances", "Instances inferred successfully per model.", ["model"], registry=metrics.REGISTRY)
LAST = Gauge(PREFIX + "last_ms", "Milliseconds since the epoch of the last prediction per model.", ["model"], registry=metrics.REGISTRY, multiprocess_mode="max")


class Recorder:
    """Counts each model's predictions; the metric children are resolved once, at start-up."""

    def __init__(self, models: Iterable[str]) -> None:
        self.children = {m: (DURATION.labels(m, "success"), DURATION.labels(m, "fail"), UPSTREAM.labels(m), INSTANCES.labels(m), LAST.labels(m)) for m in models}

    def success(self, model: str, instances: int, seconds: float, upstream_seconds: float) -> None:
        ok, _, upstream, count, last = self.children[model]
        ok.observe(seconds)
        upstream.inc(min(upstream_seconds, seconds))
        count.inc(instances)
        last.set(time.time() * 1000)

    def failure(self, model: str, seconds: float) -> None:
        _, failed, _, _, last = self.children[model]
        failed.observe(seconds)
        last.set(time.time() * 1000)


def duration(count: float, seconds: float) -> dict[str, int]:
    return {"count": int(count), "ns": round(seconds * 1e9)}


def model_stats(models: dict[str, str]) -> list[dict[str, Any]]:
    """Triton's `model_stats` list for these models (name -> version), from the registry that
    `/metrics` shows (summed over the workers); a model never asked has zeros."""
    seen: dict[tuple[str, str, str], float] = {}  # (model, sample, outcome) -> value
    for family in metrics.SCRAPE.collect():
        if family.name.startswith(PREFIX):
            for sample in family.samples:
                model = sample.labels.get("model")
                if model in models:
                    key = (model, sample.name[len(PREFIX):], sample.labels.get("outcome", ""))
                    seen[key] = seen.get(key, 0.0) + sample.value

    def get(model: str, name: str, outcome: str = "") -> float:
        return seen.get((model, name, outcome), 0.0)

    out = []
    for model, version in models.items():
        ok_count, ok_s = get(model, "seconds_count", "success"), get(model, "seconds_sum", "success")
        upstream_s = get(model, "upstream_seconds_total")
        out.append({
            "name": model,
            "version": version,
            "last_inference": int(get(model, "last_ms")),
            "inference_count": int(get(model, "instances_total")),
            "execution_count": int(ok_count),
            "inference_stats": {
                "success": duration(ok_count, ok_s),
                "fail": duration(get(model, "seconds_count", "fail"), get(model, "seconds_sum", "fail")),
                "queue": duration(ok_count, max(0.0, ok_s - upstream_s)),
                "compute_input": duration(ok_count, 0.0),
                "compute_infer": duration(ok_count, upstream_s),
                "compute_output": duration(ok_count, 0.0),
                "cache_hit": duration(0, 0.0),
                "cache_miss": duration(0, 0.0),
            },
            "batch_stats": [],
        })
    return out
