"""What the gateway costs, and how much of each framework's speed survives serving.

Three measurements, each interleaved so that machine noise hits every target alike:
- saturation: the same closed-loop locust load direct to each stack, through the gateway and
  through two reference proxies, nginx and a bare Python proxy (from `bench`), giving the
  gateway/direct throughput ratio and the gateway's CPU per request beside theirs;
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
from loadtests.targets import STACKS, TARGETS, Target, reference_target
from loadtests.verdict import PAIRS


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q * 100)) if values else 0.0


def _probe(client: httpx.Client, url: str, body: bytes) -> str | None:
    """None when `url` answers 200, else why not, in words a user can act on."""
    try:
        r = client.post(url, content=body)
    except httpx.HTTPError as exc:
        return f"nothing answered at {url} ({type(exc).__name__}: {exc})"
    return None if r.status_code == 200 else f"{url} answered HTTP {r.status_code}: {r.text[:200]}"


def added_latency(urls: dict[str, str], model: str, stacks: tuple[str, ...] | list[str] = STACKS, requests: int = 400, rate: float = 50.0) -> dict:
    """Paced requests (no queue forms), alternating direct and via-gateway for each of `stacks`.

    A stack whose direct path or gateway path does not answer is skipped, with the reason under
    "skipped", instead of ending the whole bench in a connection error after its load runs are done.
    """
    body = bodies(model, 1, count=1)[0]
    headers = {"Content-Type": "application/json"}
    out: dict[str, dict] = {}
    pairs: dict[str, tuple[Target, Target]] = {}
    with httpx.Client(timeout=10, headers=headers) as client:
        for stack in stacks:
            pair = (TARGETS[stack], TARGETS[f"gateway-{stack}"])
            problems = [p for p in (_probe(client, urls[t.url_key] + t.path(model), body) for t in pair) if p]  # also warms the connections
            if problems:
                out[stack] = {"skipped": "; ".join(problems)}
            else:
                pairs[stack] = pair
        times: dict[str, list[float]] = {t.name: [] for pair in pairs.values() for t in pair}
        errors: dict[str, int] = {name: 0 for name in times}
        order = [t for pair in pairs.values() for t in pair]
        interval = 1.0 / rate
        next_at = time.perf_counter()
        for i in range(requests if order else 0):
            t = order[i % len(order)]
            now = time.perf_counter()
            if next_at > now:
                time.sleep(next_at - now)
            next_at += interval
            started = time.perf_counter()
            try:
                r = client.post(urls[t.url_key] + t.path(model), content=body)
            except httpx.HTTPError:
                errors[t.name] += 1
                continue
            elapsed = time.perf_counter() - started
            if r.status_code == 200:
                times[t.name].append(elapsed * 1000)
            else:
                errors[t.name] += 1
    for stack, (direct, via) in pairs.items():
        d, g = times[direct.name], times[via.name]
        out[stack] = {
            "requests_each": min(len(d), len(g)),
            "errors": errors[direct.name] + errors[via.name],
            "direct_p50_ms": round(percentile(d, 0.5), 3),
            "gateway_p50_ms": round(percentile(g, 0.5), 3),
            "added_p50_ms": round(percentile(g, 0.5) - percentile(d, 0.5), 3),
            "direct_p99_ms": round(percentile(d, 0.99), 3),
            "gateway_p99_ms": round(percentile(g, 0.99), 3),
            "added_p99_ms": round(percentile(g, 0.99) - percentile(d, 0.99), 3),
        }
    return out


def _cpu_us(result: dict | None, role: str) -> float | None:
    """CPU µs per request of one process (role "stack", "gateway", "nginx" or "floor") in a result row."""
    ms = (result or {}).get("server", {}).get(role, {}).get("cpu_ms_per_request")
    return None if ms is None else round(1000 * ms, 1)


def _quotient(a: float | None, b: float | None, digits: int = 3) -> float | None:
    return round(a / b, digits) if a is not None and b else None


def saturation_summary(results: list[dict], model: str, instances: int) -> dict:
    """Per stack, from `bench.summarise`: the gateway against direct, nginx and the Python floor.

    nginx and the floor (loadtests/floorproxy.py) forward the same direct path under the same load in
    the same run: on a shared 2-core machine absolute figures drift, so the gateway's cost is read as
    ratios to them (gateway CPU / nginx CPU per request, gateway/direct throughput).
    """
    index = {r["target"]: r for r in results if r["model"] == model}
    out = {}
    for stack in STACKS:
        direct, via = index.get(stack), index.get(f"gateway-{stack}")
        if not direct or not via:
            continue
        nginx, floor = index.get(reference_target("nginx", stack)), index.get(reference_target("floor", stack))
        rps = {name: (r["median"]["rps"] if r else None) for name, r in (("direct", direct), ("gateway", via), ("nginx", nginx), ("floor", floor))}
        cpu = {"gateway": _cpu_us(via, "gateway"), "nginx": _cpu_us(nginx, "nginx"), "floor": _cpu_us(floor, "floor")}
        out[stack] = {
            "direct_rps": rps["direct"],
            "gateway_rps": rps["gateway"],
            "gateway_to_direct": _quotient(rps["gateway"], rps["direct"]),
            "gateway_cpu_us_per_request": cpu["gateway"],
            "stack_cpu_us_per_request_direct": _cpu_us(direct, "stack"),
            "served_rows_per_s_direct": round(direct["median"]["rps"] * instances, 1),
            "nginx_rps": rps["nginx"],
            "nginx_to_direct": _quotient(rps["nginx"], rps["direct"]),
            "nginx_cpu_us_per_request": cpu["nginx"],
            "floor_rps": rps["floor"],
            "floor_to_direct": _quotient(rps["floor"], rps["direct"]),
            "floor_cpu_us_per_request": cpu["floor"],
            "gateway_cpu_over_nginx": _quotient(cpu["gateway"], cpu["nginx"], 2),
            "gateway_cpu_over_floor": _quotient(cpu["gateway"], cpu["floor"], 2),
        }
    return out


def framework_ratio(results: list[dict], model: str, a: str = "torchserve", b: str = "tfserving") -> dict | None:
    """Stack a's throughput over stack b's (TorchServe/TF by default), direct and through the
    gateway, and how far the gateway moves it.

    A gateway that costs both stacks alike keeps the ratio (gateway_vs_direct near 1): the comparison
    of the frameworks survives being served through it.
    """
    index = {r["target"]: r["median"]["rps"] for r in results if r["model"] == model}
    direct = _quotient(index.get(a), index.get(b))
    via = _quotient(index.get(f"gateway-{a}"), index.get(f"gateway-{b}"))
    if direct is None or via is None:
        return None
    return {"a": a, "b": b, "direct": direct, "via_gateway": via, "gateway_vs_direct": _quotient(via, direct)}


def framework_ratios(results: list[dict], model: str) -> list[dict]:
    """`framework_ratio` for every pair of stacks (loadtests/verdict.py `PAIRS`) measured both
    directly and through the gateway in this run."""
    return [r for r in (framework_ratio(results, model, a, b) for a, b in PAIRS) if r]


def served_ratio(saturation: dict, inprocess: dict) -> dict:
    return {
        stack: round(saturation[stack]["served_rows_per_s_direct"] / inprocess[stack]["rows_per_s"], 3)
        for stack in saturation
        if stack in inprocess and inprocess[stack]["rows_per_s"]
    }

