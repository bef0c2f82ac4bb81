"""The comparison runner: identical locust load at each target, in varied order, with server-side cost.

Fairness rules it keeps: the same profile (users, spawn rate, duration) for
every target; a warm-up per target that is not counted; several repetitions
with the target order rotated, so slow drift of the machine hits all targets
alike; figures from locust's JSON; the load generator's own CPU watched, since
on a small machine it competes with the servers it measures.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

from loadtests import stats, sweep
from loadtests.resources import GroupMonitor, TreeMonitor, in_window
from loadtests.stability import Rule
from loadtests.targets import FRONTS, TARGETS, Target
from loadtests.verdict import PAIRS, pair_paths

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
SATURATION = 0.85  # locust CPU share of one core above which its figures are suspect
BACKSTOP_S = 60  # locust's own -t, past the locustfile's clock: ends a run whose clock never started
WINDOW_TOLERANCE = 0.15  # a measured window further than this from the duration asked for is warned about


@dataclass
class BenchConfig:
    models: list[str]
    targets: list[str]
    urls: dict[str, str]  # base URL per Target.url_key: torchserve, tfserving, gateway, nginx-<stack>, floor-<stack>
    out: Path
    profile: str = "closed"  # closed | open | ramp | sweep (ramp_users stepped until the stop rule; with rates: an open-loop rate sweep)
    users: int = 16
    spawn_rate: float = 16.0
    duration_s: int | None = 20  # None: stability mode (each run ends once stable, or at max_duration_s)
    warmup_s: int = 5
    repetitions: int = 3
    rate: float = 200.0  # open loop: total requests per second
    ramp_users: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    ramp_step_s: int = 10
    rates: list[float] = field(default_factory=list)  # sweep profile: offered req/s per step (open loop); empty: a concurrency sweep
    slo_p99_ms: float = 50.0
    instances: int = 1
    processes: int = 0  # >0: locust --processes N (a master and N workers)
    window_s: float = 5.0  # measurement window (loadtests/stability.py)
    stable_windows: int = 3  # stable when this many last windows agree...
    stable_tolerance: float = 0.10  # ...within this fraction of their mean, req/s and p99 each
    max_duration_s: int = 60  # stability mode: a run that has not settled by then ends, marked unstable

    @property
    def rule(self) -> Rule:
        return Rule(self.stable_windows, self.stable_tolerance, self.window_s)


@dataclass
class LocustRun:
    target: str
    model: str
    repetition: int
    users: int
    prefix: Path
    figures: stats.RunFigures
    locust_cpu_share: float  # CPU seconds per second of locust's busiest process over the counted window
    returncode: int
    server: dict = field(default_factory=dict)  # CPU and memory of "stack" and of the front (gateway, nginx or floor)
    failure_reasons: dict = field(default_factory=dict)
    bottleneck: dict = field(default_factory=dict)  # per component CPU as cores and machine share; the saturated one (loadtests/sweep.py)
    rate: float = 0.0  # open loop: the offered req/s of the whole run (0: closed loop)


@dataclass
class LocustProcess:
    """What one locust subprocess left behind, beside its files."""

    returncode: int
    cpu_share: float  # CPU seconds of the whole process tree per wall second of the whole subprocess
    stderr_tail: str
    tree: TreeMonitor  # per-process CPU samples, to read locust's own load over the counted window


def run_locust(cfg: BenchConfig, target: Target, model: str, users: int, seconds: int, prefix: Path, rate_per_user: float = 0.0) -> tuple[int, float, str]:
    """One headless locust subprocess, every request counted (the warm-up; the reliability drills,
    which account for every request sent); returns (exit code, locust CPU seconds per wall
    second, stderr tail)."""
    run = locust_process(cfg, target, model, users, seconds, prefix, rate_per_user)
    return run.returncode, run.cpu_share, run.stderr_tail


def locust_process(cfg: BenchConfig, target: Target, model: str, users: int, seconds: int | None, prefix: Path, rate_per_user: float = 0.0, count_from_spawned: bool = False, hdr: bool = False) -> LocustProcess:
    """One headless locust subprocess that loads `target` for `seconds` once every user has spawned
    (`seconds` None: until the stability rule holds, at most `cfg.max_duration_s`).

    The locustfile's own clock (`--seconds-after-spawn`) ends the run, because locust's `-t`
    fired seconds early: it is armed from a stale gevent loop time after the locustfile import
    (see loadtests/locustfile.py). `-t` stays only as a backstop, well past the clock.
    `count_from_spawned` also resets locust's statistics at that moment (`--reset-stats`), so a
    slow `--spawn-rate` ramp is not counted, as a warm-up is not. `hdr` has the locustfile write
    every request's µs latency, per window, with the stability verdict, to `<prefix>_hdr.json`.
    """
    prefix.parent.mkdir(parents=True, exist_ok=True)
    spawn_rate = users if cfg.profile in ("ramp", "sweep") else cfg.spawn_rate  # a ramp step starts its users at once
    spawning_s = math.ceil(users / spawn_rate) if spawn_rate > 0 else 0
    longest = seconds if seconds is not None else cfg.max_duration_s + cfg.window_s
    backstop = math.ceil(longest) + spawning_s + BACKSTOP_S
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), target.user_class,
        "--headless", "-u", str(users), "-r", str(spawn_rate),
        "-t", f"{backstop}s", "--host", cfg.urls[target.url_key],
        "--csv", str(prefix), "--json-file", str(prefix), "--only-summary", "--stop-timeout", "5",
        "--loglevel", "WARNING",
        "--window", str(cfg.window_s), "--stable-windows", str(cfg.stable_windows), "--stable-tolerance", str(cfg.stable_tolerance),
    ]
    cmd += ["--seconds-after-spawn", str(seconds)] if seconds is not None else ["--stable-max-seconds", str(cfg.max_duration_s)]
    if hdr:
        cmd += ["--hdr-file", f"{prefix}_hdr.json"]
    if count_from_spawned:
        cmd.append("--reset-stats")
    if cfg.processes > 0:
        cmd += ["--processes", str(cfg.processes)]
    env = {
        **{k: v for k, v in os.environ.items() if k != "LOCUST_SKIP_MONKEY_PATCH"},
        "TWINSERVE_LOAD_MODEL": model,
        "TWINSERVE_LOAD_INSTANCES": str(cfg.instances),
        "TWINSERVE_LOAD_RATE_PER_USER": str(rate_per_user),
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeMonitor(proc.pid) as tree:
        try:
            _, stderr = proc.communicate(timeout=backstop + 120)
        except subprocess.TimeoutExpired:  # say so instead of a traceback, and leave nothing running
            proc.kill()
            _, stderr = proc.communicate()
            raise RuntimeError(f"locust against {target.name}/{model} did not finish within {backstop + 120} s and was killed: {(stderr or '').strip()[-500:]}") from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return LocustProcess(proc.returncode, cpu / max(wall, 1e-9), (stderr or "")[-2000:], tree)


def measured_run(cfg: BenchConfig, target: Target, model: str, rep: int, users: int, seconds: int | None, tag: str, pgids: dict[str, int], rate_per_user: float = 0.0) -> LocustRun:
    """One counted locust run, with the CPU of the stack ("stack"; both stacks for the routed gateway
    target) and of the process in front of it (keyed by its name: "gateway", "nginx" or "floor")
    charged to the target's requests.

    Requests are counted from the moment every user has spawned, for `seconds`; the CPU figures
    (the servers', and locust's own) are read over that same window, not over the whole subprocess,
    whose start-up and shutdown carry no counted request.
    """
    prefix = cfg.out / "locust" / f"{model}_{target.name}_{tag}"
    monitors = {"stack": GroupMonitor([pgids[s] for s in target.stacks if s in pgids])}
    if target.front:
        monitors[target.front] = GroupMonitor([pgids[target.front]] if target.front in pgids else [])
    with contextlib.ExitStack() as watching:
        for monitor in monitors.values():
            watching.enter_context(monitor)
        run = locust_process(cfg, target, model, users, seconds, prefix, rate_per_user, count_from_spawned=True, hdr=True)
    path = Path(f"{prefix}.json")
    if not path.exists():
        raise RuntimeError(f"locust wrote no statistics for {target.name}/{model} (exit {run.returncode}): {run.stderr_tail.strip()[-500:]}")
    figures = stats.figures(path, Path(f"{prefix}_hdr.json"))
    window = (figures.window_start, figures.window_end) if figures.requests else None
    server: dict = {}
    for role, mon in monitors.items():
        usage = mon.usage(window)
        if usage is not None:
            server[role] = {
                "cpu_seconds": usage.cpu_seconds,
                "cpu_ms_per_request": round(1000 * usage.cpu_seconds / figures.requests, 4) if figures.requests else None,
                "peak_rss_mb": usage.peak_rss_mb,
            }
    share = (run.tree.busiest_share(window) if window else None) or run.cpu_share
    span = (window[1] - window[0]) if window else 0.0
    cpu = {role: v["cpu_seconds"] for role, v in server.items()}
    cpu["load generator"] = run.tree.total_cpu(window) if window else None
    components = sweep.shares(cpu, span, psutil.cpu_count() or 1)
    for role, c in components.items():
        if role in server:
            server[role].update(c)
    busy = in_window(run.tree.machine, window) if window else None
    machine = round(busy / span / (psutil.cpu_count() or 1), 3) if busy is not None and span > 0 else None
    neck = {"components": components, "locust_busiest_core": round(share, 3), "machine_busy": machine, **sweep.bottleneck(components, psutil.cpu_count() or 1, share, machine, target.stack, len(target.stacks))}
    return LocustRun(target.name, model, rep, users, prefix, figures, round(share, 3), run.returncode, server, stats.failure_reasons(path), neck, rate_per_user * users)


def order(targets: list[str], rep: int) -> list[str]:
    """Rotate the target order each repetition (and reverse every other one)."""
    k = rep % len(targets)
    rotated = targets[k:] + targets[:k]
    return rotated[::-1] if rep % 2 else rotated


def run(cfg: BenchConfig, pgids: dict[str, int], progress: Callable[[str], None] = lambda _: None) -> dict:
    """Run the whole comparison; returns the raw runs grouped for the report."""
    targets = [TARGETS[t] for t in cfg.targets]
    runs: list[LocustRun] = []
    ramp: list[LocustRun] = []
    swept: list[LocustRun] = []
    for model in cfg.models:
        for t in targets:  # warm-up: not counted
            if cfg.warmup_s > 0:
                progress(f"warm-up {model} → {t.name}")
                run_locust(cfg, t, model, cfg.users, cfg.warmup_s, cfg.out / "locust" / "warmup" / f"{model}_{t.name}")
        if cfg.profile == "ramp":
            for step, users in enumerate(cfg.ramp_users):
                for name in order(cfg.targets, step):
                    progress(f"ramp {model} → {name}: {users} users")
                    ramp.append(measured_run(cfg, TARGETS[name], model, 0, users, cfg.ramp_step_s, f"ramp{users:03d}", pgids))
            continue
        if cfg.profile == "sweep":
            swept += sweep_model(cfg, model, pgids, progress)
            continue
        rate_per_user = 0.0
        users = cfg.users
        if cfg.profile == "open":
            users = max(cfg.users, math.ceil(cfg.rate / 20))  # each user at most 20 req/s, so users mostly wait
            rate_per_user = cfg.rate / users
        for rep in range(cfg.repetitions):
            for name in order(cfg.targets, rep):
                progress(f"{model} → {name}: repetition {rep + 1}/{cfg.repetitions}")
                runs.append(measured_run(cfg, TARGETS[name], model, rep, users, cfg.duration_s, f"rep{rep + 1}", pgids, rate_per_user))
    return {"runs": runs, "ramp": ramp, "sweep": swept}


def open_users(cfg: BenchConfig, rate: float) -> int:
    """Users for an open-loop rate: each at most 20 req/s, so most of them wait for their next send time."""
    return max(cfg.users, math.ceil(rate / 20))


def sweep_point(r: LocustRun) -> dict:
    f = r.figures
    return {"users": r.users, "rate": r.rate, "rps": f.rps, "p50_ms": f.p50_ms, "p99_ms": f.p99_ms, "latency_us": f.latency_us, "failures": f.failures, "window_s": f.window_s, "locust_ms": f.locust_ms, "bottleneck": r.bottleneck}


def sweep_model(cfg: BenchConfig, model: str, pgids: dict[str, int], progress: Callable[[str], None]) -> list[LocustRun]:
    """One model's sweep: every target steps through the users (or rates) in rotated order, each
    until its stop rule (loadtests/sweep.py) says so."""
    steps: list[float] = list(cfg.rates) if cfg.rates else [float(u) for u in cfg.ramp_users]
    active = list(cfg.targets)
    done: list[LocustRun] = []
    for i, step in enumerate(steps):
        for name in order(active, i) if active else []:
            if cfg.rates:
                users = open_users(cfg, step)
                progress(f"sweep {model} → {name}: {step:g} req/s offered")
                r = measured_run(cfg, TARGETS[name], model, 0, users, cfg.ramp_step_s, f"rate{int(step):05d}", pgids, step / users)
            else:
                progress(f"sweep {model} → {name}: {int(step)} users")
                r = measured_run(cfg, TARGETS[name], model, 0, int(step), cfg.ramp_step_s, f"sweep{int(step):03d}", pgids)
            done.append(r)
        for name in list(active):
            points = [sweep_point(r) for r in done if r.target == name]
            if sweep.stop_reason(points, cfg.slo_p99_ms):
                active.remove(name)
    return done


def summarise_sweep(cfg: BenchConfig, raw: list[LocustRun]) -> list[dict]:
    """Per model and target: the sweep's points, why it stopped, and its knee."""
    out = []
    load_key = "rate" if cfg.rates else "users"
    for model in cfg.models:
        for name in cfg.targets:
            points = [sweep_point(r) for r in raw if r.model == model and r.target == name]
            if not points:
                continue
            stopped = None
            for k in range(1, len(points) + 1):
                stopped = sweep.stop_reason(points[:k], cfg.slo_p99_ms)
                if stopped:
                    break
            out.append(
                {
                    "model": model, "target": name, "kind": "rate (open loop)" if cfg.rates else "concurrency (closed loop)", "load_key": load_key,
                    "slo_p99_ms": cfg.slo_p99_ms, "points": points, "stopped": stopped or "last step reached",
                    "knee": sweep.knee(points, load_key, slo_p99_ms=cfg.slo_p99_ms), "via_gateway": TARGETS[name].via_gateway,
                }
            )
    return out


def bottleneck_warnings(rows: list[dict]) -> list[str]:
    """A named saturated component per sweep or result row; a via-gateway row whose gateway saturated measured the gateway."""
    out = []
    for r in rows:
        neck = r.get("bottleneck") or {}
        if neck.get("saturated") == "gateway" and r.get("via_gateway"):
            out.append(f"{r['model']} → {r['target']}: the gateway saturated first ({neck['why']}): this measured the gateway, not the stacks")
        elif neck.get("saturated") == "load generator":
            out.append(f"{r['model']} → {r['target']}: the load generator saturated ({neck['why']}): the figures are capped by locust, not the target")
    return out


def worst_bottleneck(runs: list[LocustRun]) -> dict:
    """Over a target's repetitions: the run whose bottleneck is named (the gateway first), else the busiest machine."""
    necks = [r.bottleneck for r in runs if r.bottleneck]
    if not necks:
        return {}
    for who in ("gateway", "load generator"):
        hit = [n for n in necks if n.get("saturated") == who]
        if hit:
            return hit[0]
    return max(necks, key=lambda n: (n.get("saturated") is not None, n.get("machine_share", 0)))


def summarise(cfg: BenchConfig, raw: dict) -> dict:
    """Medians across repetitions, their spread, server-side cost, ratios and warnings."""
    results = []
    warnings: list[str] = []
    for model in cfg.models:
        for name in cfg.targets:
            reps = [r for r in raw["runs"] if r.model == model and r.target == name]
            if not reps:
                continue
            fig = [r.figures for r in reps]
            figs = [f.as_dict() for f in fig]
            med = {k: round(statistics.median(f[k] for f in figs), 3) for k in ("rps", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p99.9_ms", "max_ms", "mean_ms")}
            lat = [f.latency_us for f in fig]
            if all(lat) and all(x["count"] for x in lat):
                med["latency_us"] = {k: round(statistics.median(x[k] for x in lat), 1) for k in lat[0]}
            spread = {k: [min(f[k] for f in figs), max(f[k] for f in figs)] for k in ("rps", "p50_ms", "p99_ms")}
            stable, notes = stability_of(reps)
            warnings += notes
            for r in reps:
                warnings += [f"{model} → {name} ({r.prefix.name}): HDR and locust disagree beyond locust's rounding: {p}" for p in r.figures.latency_check]
            server = {}
            for role in ("stack", *FRONTS):
                values = [r.server[role]["cpu_ms_per_request"] for r in reps if role in r.server and r.server[role]["cpu_ms_per_request"] is not None]
                if values:
                    server[role] = {
                        "cpu_ms_per_request": round(statistics.median(values), 4),
                        "peak_rss_mb": max(r.server[role]["peak_rss_mb"] for r in reps if role in r.server),
                    }
            window = window_summary(reps, cfg.duration_s)
            if cfg.duration_s is not None:
                warnings += window_warnings(reps, cfg.duration_s)
            locust_share = max(r.locust_cpu_share for r in reps)
            if locust_share > SATURATION:
                warnings.append(f"{model} → {name}: the load generator's busiest process used {locust_share:.0%} of a core while requests were counted; its figures may be capped by locust, not the target (use --processes N)")
            failures = sum(f.failures for f in fig)
            reasons: dict[str, int] = {}
            for r in reps:
                for k, v in r.failure_reasons.items():
                    reasons[k] = reasons.get(k, 0) + v
            if cfg.profile == "open" and med["rps"] < 0.95 * cfg.rate:
                warnings.append(f"{model} → {name}: achieved {med['rps']:.0f} req/s of the {cfg.rate:.0f} req/s arrival rate")
            target = TARGETS[name]
            results.append(
                {
                    "model": model,
                    "target": name,
                    "stack": target.stack,
                    "via_gateway": target.via_gateway,
                    "front": target.front,
                    "repetitions": [{**r.figures.as_dict(), "locust_cpu_share": r.locust_cpu_share, "server": r.server, "exit_code": r.returncode} for r in reps],
                    "requests": sum(f.requests for f in fig),
                    "failures": failures,
                    "failure_reasons": reasons,
                    "median": med,
                    "spread": spread,
                    "stable": stable,
                    "window_s": window,
                    "server": server,
                    "locust_cpu_share_max": locust_share,
                    "bottleneck": worst_bottleneck(reps),
                }
            )
    ramp = []
    for model in cfg.models:
        for name in cfg.targets:
            steps = [r for r in raw["ramp"] if r.model == model and r.target == name]
            if not steps:
                continue
            warnings += window_warnings(steps, cfg.ramp_step_s)
            points = [
                {"users": r.users, "rps": r.figures.rps, "p50_ms": r.figures.p50_ms, "p99_ms": r.figures.p99_ms, "latency_us": r.figures.latency_us, "failures": r.figures.failures, "window_s": r.figures.window_s, "stable": (r.figures.stability or {}).get("stable")}
                for r in steps
            ]
            ok = [p for p in points if p["p99_ms"] <= cfg.slo_p99_ms and p["failures"] == 0]
            best = max(ok, key=lambda p: p["rps"]) if ok else None
            ramp.append({"model": model, "target": name, "slo_p99_ms": cfg.slo_p99_ms, "points": points, "best": best})
    swept = summarise_sweep(cfg, raw.get("sweep", []))
    for s in swept:
        s["bottleneck"] = sweep.sweep_bottleneck(s["points"], (s["knee"] or {}).get("index"))
        steps = [r for r in raw.get("sweep", []) if r.model == s["model"] and r.target == s["target"]]
        warnings += window_warnings(steps, cfg.ramp_step_s)
        warnings += [f"{r.model} → {r.target} ({r.prefix.name}): HDR and locust disagree beyond locust's rounding: {p}" for r in steps for p in r.figures.latency_check]
    warnings += bottleneck_warnings(results) + bottleneck_warnings(swept)
    return {"results": results, "ramp": ramp, "sweep": swept, "ratios": ratios(results), "warnings": warnings}


def window_summary(runs: list[LocustRun], asked_s: int | None) -> dict:
    """The windows locust counted over (first to last request) beside the duration asked for
    (None: stability mode, where each run lasts until it is stable)."""
    windows = [r.figures.window_s for r in runs]
    return {"asked": asked_s, "min": min(windows), "median": round(statistics.median(windows), 3), "max": max(windows)}


def stability_of(runs: list[LocustRun]) -> tuple[bool | None, list[str]]:
    """A target's stability over its repetitions: False if any repetition ended unstable, True if
    every one was stable, None when some were not judged (a fixed run shorter than the windows the
    rule needs, or no µs recording); with a warning per unstable repetition."""
    verdicts = [r.figures.stability for r in runs]
    notes = []
    for r, v in zip(runs, verdicts):
        if v and v.get("stable") is False:
            how = f"did not settle within {v['rule']['max_s']:g} s" if v.get("ended") == "maximum time" else "was not stable"
            notes.append(f"{r.model} → {r.target} ({r.prefix.name}) {how}: {v.get('reason')}; marked unstable")
    if any(v and v.get("stable") is False for v in verdicts):
        return False, notes
    if verdicts and all(v and v.get("stable") is True for v in verdicts):
        return True, notes
    return None, notes


def window_warnings(runs: list[LocustRun], asked_s: int) -> list[str]:
    """A run whose counted window strays from the duration asked for: its req/s and percentiles
    describe a different load than the other runs' (a stalled target, a clock that never started)."""
    out = []
    for r in runs:
        w = r.figures.window_s
        if r.figures.requests and abs(w - asked_s) > WINDOW_TOLERANCE * asked_s:
            out.append(f"{r.model} → {r.target} ({r.prefix.name}): locust counted {w:.2f} s of requests, not the {asked_s} s asked for")
    return out


def ratios(results: list[dict]) -> list[dict]:
    """Ratios between stacks measured in the same run, direct and through the gateway: for each pair
    of `verdict.PAIRS` whose two stacks ran (TorchServe over the TF side, TorchServe over KServe +
    ONNX Runtime, the TF side over KServe + ONNX Runtime), `a`'s figure over `b`'s."""
    out = []
    index = {(r["model"], r["target"]): r for r in results}
    models = sorted({r["model"] for r in results}, key=[r["model"] for r in results].index)
    for model in models:
        for pair in PAIRS:
            for path, ta, tb in pair_paths(*pair):
                a, b = index.get((model, ta)), index.get((model, tb))
                if a and b and b["median"]["rps"] and b["median"]["p99_ms"]:
                    out.append(
                        {
                            "model": model,
                            "path": path,
                            "a": pair[0],
                            "b": pair[1],
                            "rps_ratio": round(a["median"]["rps"] / b["median"]["rps"], 3),
                            "p50_ratio": round(a["median"]["p50_ms"] / b["median"]["p50_ms"], 3) if b["median"]["p50_ms"] else None,
                            "p99_ratio": round(a["median"]["p99_ms"] / b["median"]["p99_ms"], 3),
                        }
                    )
    return out
