"""Sweeps and bottlenecks: the pure rules `twinserve bench --profile sweep` applies to its steps.

Two sweeps, each a list of steps per target, every step a counted locust run:

- concurrency (closed loop): users step through `--ramp-users` (1, 2, 4, ...);
- request rate (open loop, `--rates 100,200,400`): each user follows its own schedule of intended
  send times, and latency is taken from the intended send time (no coordinated omission; see
  loadtests/locustfile.py `_PredictUser`).

A target stops stepping (`stop_reason`) once its p99 passes the objective (`--slo-p99`), once a
step failed requests, or once throughput grew by less than `MIN_GROWTH` (5%) over the previous step.

The knee (`knee`): the last step before the throughput gained per unit of load added falls below
`KNEE_EFFICIENCY` (one half) of proportional, i.e. the last step i-1 before the first step i with
(rps_i / rps_{i-1} - 1) / (load_i / load_{i-1} - 1) < 0.5, load being users (concurrency sweep)
or the offered request rate (rate sweep). Past it, adding load mostly adds queueing: latency grows
faster than throughput. A sweep whose every step stayed proportional has its knee at its last step
(marked "not reached").

The bottleneck (`bottleneck`): each component's CPU over the counted window, in cores (CPU seconds
per second) and as a share of the machine's cores. The single-process components — the gateway
(one uvicorn process) and each locust process — are saturated at `ONE_CORE` (0.9) of one core;
the machine is saturated when all measured components together keep `MACHINE_BUSY` (90%) of its
cores busy, and then the largest consumer is named. The gateway is checked first: a via-gateway
comparison whose gateway saturated measured the gateway, not the stacks.
"""

from __future__ import annotations

MIN_GROWTH = 0.05  # a step adding less than this fraction of throughput ends the sweep
KNEE_EFFICIENCY = 0.5  # the knee: the last step before marginal gain falls below this share of proportional
ONE_CORE = 0.9  # a single-threaded process at this share of one core is saturated
MACHINE_BUSY = 0.9  # the machine is saturated when this share of its cores is busy


def stop_reason(points: list[dict], slo_p99_ms: float, min_growth: float = MIN_GROWTH) -> str | None:
    """Why a sweep should not step further after its last point (None: keep going). Points carry
    "rps", "p99_ms" and optionally "failures"."""
    if not points:
        return None
    last = points[-1]
    if last.get("p99_ms") is not None and last["p99_ms"] > slo_p99_ms:
        return f"p99 {last['p99_ms']:.3g} ms passed the {slo_p99_ms:g} ms objective"
    if last.get("failures"):
        return f"{last['failures']} failed requests"
    if len(points) >= 2:
        prev = points[-2]["rps"]
        if prev > 0 and last["rps"] < (1 + min_growth) * prev:
            return f"throughput grew {100 * (last['rps'] / prev - 1):.1f}% (< {100 * min_growth:g}%) over the previous step"
    return None


def knee(points: list[dict], load_key: str, fraction: float = KNEE_EFFICIENCY) -> dict | None:
    """The knee of a sweep (see the module docstring): {"index", "load", "rps", "p50_ms", "p99_ms",
    "efficiency" (of the step after it, None if none), "reached"}; None for no point."""
    if not points:
        return None
    for i in range(1, len(points)):
        a, b = points[i - 1], points[i]
        if a["rps"] <= 0 or b[load_key] <= a[load_key]:
            continue
        eff = (b["rps"] / a["rps"] - 1) / (b[load_key] / a[load_key] - 1)
        if eff < fraction:
            return _knee_point(points, i - 1, load_key, round(eff, 3), True)
    return _knee_point(points, len(points) - 1, load_key, None, False)


def _knee_point(points: list[dict], i: int, load_key: str, eff: float | None, reached: bool) -> dict:
    p = points[i]
    return {"index": i, "load": p[load_key], "rps": p["rps"], "p50_ms": p.get("p50_ms"), "p99_ms": p.get("p99_ms"), "efficiency_after": eff, "reached": reached}


def shares(cpu_seconds: dict[str, float | None], window_s: float, cores: int) -> dict[str, dict]:
    """Per component, {"cores": CPU seconds per second, "machine_share": that over the machine's cores}."""
    out = {}
    if window_s <= 0 or cores <= 0:
        return out
    for name, cpu in cpu_seconds.items():
        if cpu is not None:
            used = cpu / window_s
            out[name] = {"cores": round(used, 3), "machine_share": round(used / cores, 3)}
    return out


def bottleneck(components: dict[str, dict], cores: int, locust_busiest: float | None, machine_busy: float | None = None) -> dict:
    """Which component saturated: components as from `shares` (keys "stack", a front such as
    "gateway", "load generator"); `locust_busiest` the busiest locust process's share of one core.
    `machine_busy`: the whole machine's busy share over the window, when measured (it also counts
    processes outside the components). Returns {"saturated": name or None, "why": text,
    "machine_share": the busy share judged: the larger of the components' sum and machine_busy}."""
    total = round(max(sum(c["machine_share"] for c in components.values()), machine_busy or 0.0), 3)
    gw = components.get("gateway")
    if gw and gw["cores"] >= ONE_CORE:
        return {"saturated": "gateway", "why": f"the gateway (one process) used {gw['cores']:.2f} of a core", "machine_share": total}
    if locust_busiest is not None and locust_busiest >= ONE_CORE:
        return {"saturated": "load generator", "why": f"locust's busiest process used {locust_busiest:.2f} of a core", "machine_share": total}
    if total >= MACHINE_BUSY and components:
        top = max(components, key=lambda k: components[k]["cores"])
        return {"saturated": top, "why": f"the machine was {total:.0%} busy ({cores} cores); {top} used {components[top]['cores']:.2f} cores, the most", "machine_share": total}
    return {"saturated": None, "why": f"nothing saturated: the machine was {total:.0%} busy, no single-process component at {ONE_CORE:g} of a core", "machine_share": total}
