"""What the gateway costs, and how much of each framework's speed survives serving.

Three measurements, each interleaved so that machine noise hits every target alike:
- saturation: the same closed-loop locust load direct to each stack and through the gateway
  (from `bench`), giving the gateway/direct throughput ratio and the gateway's CPU per request;
- added latency under light load: a paced single client alternating direct and gateway
  requests, timed with perf_counter (locust rounds to whole milliseconds, too coarse here);
- the rows per second each stack served, against the in-process throughput of the same model
  (models/inprocess.py: loadtests/ never imports torch or TensorFlow).
"""

from __future__ import annotations

import time

import httpx
import numpy as np

from loadtests.payloads import bodies
from loadtests.targets import TARGETS


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q * 100)) if values else 0.0


def added_latency(urls: dict[str, str], model: str, requests: int = 400, rate: float = 50.0) -> dict:
    """Paced requests (no queue forms), alternating direct and via-gateway for each stack."""
    body = bodies(model, 1, count=1)[0]
    pairs = {stack: (TARGETS[stack], TARGETS[f"gateway-{stack}"]) for stack in ("torchserve", "tfserving")}
    times: dict[str, list[float]] = {name: [] for pair in pairs.values() for name in (pair[0].name, pair[1].name)}
    headers = {"Content-Type": "application/json"}
    with httpx.Client(timeout=10, headers=headers) as client:
        order = [t for pair in pairs.values() for t in pair]
        for t in order:  # warm the connections
            client.post(urls[t.url_key] + t.path(model), content=body)
        interval = 1.0 / rate
        next_at = time.perf_counter()
        for i in range(requests):
            t = order[i % len(order)]
            now = time.perf_counter()
            if next_at > now:
                time.sleep(next_at - now)
            next_at += interval
            started = time.perf_counter()
            r = client.post(urls[t.url_key] + t.path(model), content=body)
            elapsed = time.perf_counter() - started
            if r.status_code == 200:
                times[t.name].append(elapsed * 1000)
    out = {}
    for stack, (direct, via) in pairs.items():
        d, g = times[direct.name], times[via.name]
        out[stack] = {
            "requests_each": min(len(d), len(g)),
            "direct_p50_ms": round(percentile(d, 0.5), 3),
            "gateway_p50_ms": round(percentile(g, 0.5), 3),
            "added_p50_ms": round(percentile(g, 0.5) - percentile(d, 0.5), 3),
            "direct_p99_ms": round(percentile(d, 0.99), 3),
            "gateway_p99_ms": round(percentile(g, 0.99), 3),
            "added_p99_ms": round(percentile(g, 0.99) - percentile(d, 0.99), 3),
        }
    return out


def saturation_summary(results: list[dict], model: str, instances: int) -> dict:
    """Gateway/direct throughput ratios and the gateway's CPU per request, from `bench.summarise`."""
    index = {r["target"]: r for r in results if r["model"] == model}
    out = {}
    for stack in ("torchserve", "tfserving"):
        direct, via = index.get(stack), index.get(f"gateway-{stack}")
        if not direct or not via:
            continue
        out[stack] = {
            "direct_rps": direct["median"]["rps"],
            "gateway_rps": via["median"]["rps"],
            "gateway_to_direct": round(via["median"]["rps"] / direct["median"]["rps"], 3) if direct["median"]["rps"] else None,
            "gateway_cpu_us_per_request": round(1000 * via["server"].get("gateway", {}).get("cpu_ms_per_request", float("nan")), 1),
            "stack_cpu_us_per_request_direct": round(1000 * direct["server"].get("stack", {}).get("cpu_ms_per_request", float("nan")), 1),
            "served_rows_per_s_direct": round(direct["median"]["rps"] * instances, 1),
        }
    return out


def served_ratio(saturation: dict, inprocess: dict) -> dict:
    return {
        stack: round(saturation[stack]["served_rows_per_s_direct"] / inprocess[stack]["rows_per_s"], 3)
        for stack in saturation
        if stack in inprocess and inprocess[stack]["rows_per_s"]
    }

