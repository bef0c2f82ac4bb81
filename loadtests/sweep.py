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
faster than throughput. A step whose p99 passed the objective also ends the search: the knee is the
step before it (in an open-loop sweep throughput keeps up with the offered rate until the queue
builds, so latency, not throughput, shows the knee: tabular's last rate step kept 92-98% of the
offered rate while its p99 went from 22-30 ms to 161-341 ms). A sweep whose every step stayed
proportional and within the objective has its knee at its last step (marked "not reached").

The bottleneck (`bottleneck`): each component's CPU over the counted window, in cores (CPU seconds
per second) and as a share of the machine's cores. Checked in this order, the first that holds named:

1. the gateway (one uvicorn process) at `ONE_CORE` (0.9) of one core: a via-gateway comparison
   whose gateway saturated measured the gateway, not the stacks — the warning that matters most;
2. locust's busiest process at `ONE_CORE`: the figures are capped by the load generator;
3. the machine: all measured components together (or the machine as measured, when larger) keep
   `MACHINE_BUSY` (90%) of its cores busy; its largest consumer is named;
4. the stack at `ONE_CORE` of a core while the machine still had room: the stacks here run one
   worker (TorchServe), one busy thread (the TF side) or, by default, one worker process with one
   ONNX Runtime intra-op thread (KServe + ONNX Runtime), so one core's worth is their limit.
   This is the healthy outcome of a sweep's top step. Not applied to a target whose "stack"
   component sums two stacks (the routed gateway), whose one core may be two halves.

Over a whole sweep (`sweep_bottleneck`), a gateway or load generator saturated at any step is named
first (those steps measured the wrong thing); else the knee's, else the last step's.
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
            change = 100 * (last["rps"] / prev - 1)
            moved = f"grew {change:.1f}% (< {100 * min_growth:g}%)" if change >= 0 else f"fell {-change:.1f}%"
            return f"throughput {moved} over the previous step"
    return None


def knee(points: list[dict], load_key: str, fraction: float = KNEE_EFFICIENCY, slo_p99_ms: float | None = None) -> dict | None:
    """The knee of a sweep (see the module docstring): {"index", "load", "rps", "p50_ms", "p99_ms",
    "efficiency" (of the step after it, None if none), "reached"}; None for no point."""
    if not points:
        return None
    for i in range(1, len(points)):
        a, b = points[i - 1], points[i]
        if slo_p99_ms is not None and (b.get("p99_ms") or 0) > slo_p99_ms >= (a.get("p99_ms") or 0):
            return _knee_point(points, i - 1, load_key, None, True)
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


def cores_text(cores: float) -> str:
    """CPU in the words the report uses: "0.94 of a core" below one, "1.09 cores" from one on."""
    return f"{cores:.2f} of a core" if round(cores, 2) < 1 else f"{cores:.2f} cores"


def bottleneck(
    components: dict[str, dict], cores: int, locust_busiest: float | None, machine_busy: float | None = None,
    stack: str | None = None, stacks: int = 1,
) -> dict:
    """Which component saturated (the order is the module docstring's): components as from `shares`
    (keys "stack", a front such as "gateway", "load generator"); `locust_busiest` the busiest locust
    process's share of one core; `machine_busy` the whole machine's busy share over the window, when
    measured (it also counts processes outside the components); `stack` the stack's name for the
    wording, `stacks` how many stacks the "stack" component sums. Returns {"saturated": name or None,
    "why": text, "machine_share": the busy share judged: the larger of the components' sum and
    machine_busy}."""
    total = round(max(sum(c["machine_share"] for c in components.values()), machine_busy or 0.0), 3)
    gw = components.get("gateway")
    if gw and gw["cores"] >= ONE_CORE:
        return {"saturated": "gateway", "why": f"the gateway (one process) used {cores_text(gw['cores'])}", "machine_share": total}
    if locust_busiest is not None and locust_busiest >= ONE_CORE:
        return {"saturated": "load generator", "why": f"locust's busiest process used {cores_text(locust_busiest)}", "machine_share": total}
    if total >= MACHINE_BUSY and components:
        top = max(components, key=lambda k: components[k]["cores"])
        return {"saturated": top, "why": f"the machine was {total:.0%} busy ({cores} cores); {top} used {components[top]['cores']:.2f} cores, the most", "machine_share": total}
    st = components.get("stack")
    if st and stacks == 1 and st["cores"] >= ONE_CORE:
        who = f"the stack ({stack})" if stack else "the stack"
        why = f"{who} used {cores_text(st['cores'])}, a core's worth: with one worker or one busy thread, that is its limit (the machine was {total:.0%} busy)"
        return {"saturated": "stack", "why": why, "machine_share": total}
    return {"saturated": None, "why": f"nothing saturated: the machine was {total:.0%} busy, no single-process component nor the stack at {ONE_CORE:g} of a core", "machine_share": total}


def sweep_bottleneck(points: list[dict], knee_index: int | None) -> dict:
    """The bottleneck a sweep reports: a gateway or load generator saturated at any step first (the
    steps from there on measured the front or locust, whatever the knee's step says), else the
    knee's step's when it named one, else the last step's."""
    necks = [p.get("bottleneck") or {} for p in points]
    for who in ("gateway", "load generator"):
        hit = next((n for n in necks if n.get("saturated") == who), None)
        if hit:
            return hit
    at_knee = necks[knee_index] if knee_index is not None and 0 <= knee_index < len(necks) else {}
    if at_knee.get("saturated") or not necks:
        return at_knee
    return necks[-1] if necks[-1].get("saturated") else at_knee


def load_text(load: float, load_key: str) -> str:
    """A sweep step in words: "1 user", "8 users", "200 req/s offered"."""
    if load_key == "users":
        return f"{load:g} user" + ("" if load == 1 else "s")
    return f"{load:g} req/s offered"


def knee_text(k: dict | None, points: list[dict], load_key: str, detail: str = "") -> str:
    """The knee in words, saying what "not reached" means: one step measured finds no knee; a last
    step that still scaled means the knee lies beyond the steps run. `detail` follows the req/s."""
    if not k:
        return ""
    at = f"{load_text(k['load'], load_key)}: {k['rps']:.1f} req/s{detail}"
    if k["reached"]:
        return f"at {at}"
    if len(points) < 2:
        return f"not found: one step only ({at})"
    return f"not reached: throughput still scaled up to the last step ({at})"
