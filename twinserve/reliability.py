"""Reliability drills on a private native stack: faults under load, overload, soak.

Each drill starts its own stack on free loopback ports (so a running `twinserve up` is
untouched), drives locust through the gateway, injects what it says, accounts for every
request from locust's JSON, and stops everything it started.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx

from loadtests import bench, stats
from loadtests.resources import group_processes
from loadtests.targets import STACKS, TARGETS
from twinserve import stack
from twinserve.supervisor import Supervisor, free_port
from twinserve.settings import StackSettings


def private_settings(run_dir: Path, models: str = "tabular") -> StackSettings:
    ports = {k: free_port() for k in ("torchserve_inference_port", "torchserve_management_port", "torchserve_metrics_port", "torchserve_grpc_inference_port", "torchserve_grpc_management_port", "tfserving_grpc_port", "tfserving_rest_port", "kserve_http_port", "kserve_grpc_port", "gateway_port", "gateway_grpc_port")}
    return StackSettings(run_dir=run_dir, models=models, **ports)


@dataclass
class Drill:
    """One locust run through the gateway while `events` happen at their times."""

    settings: StackSettings
    out: Path
    users: int = 8
    seconds: int = 30
    model: str = "tabular"
    events: list[tuple[float, str, Callable[[], None]]] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)

    def run(self) -> dict:
        urls = {"gateway": f"http://{self.settings.host}:{self.settings.gateway_port}"}
        cfg = bench.BenchConfig(models=[self.model], targets=["gateway"], urls=urls, out=self.out, users=self.users, spawn_rate=self.users, duration_s=self.seconds, warmup_s=0, repetitions=1)
        started = time.monotonic()
        runner = threading.Thread(target=lambda: self.log.append({"locust": bench.run_locust(cfg, TARGETS["gateway"], self.model, self.users, self.seconds, self.out / "drill")}))
        runner.start()
        for at, name, action in sorted(self.events, key=lambda e: e[0]):
            delay = at - (time.monotonic() - started)
            if delay > 0:
                time.sleep(delay)
            action()
            self.log.append({"t": round(time.monotonic() - started, 2), "event": name})
        runner.join()
        return account(self.out / "drill")


CLEAR_5XX = re.compile(rf"^HTTP 5\d\d \S+ \(backend ({'|'.join(STACKS)})\)$")


def account(prefix: Path) -> dict:
    """Every request, from locust's complete JSON: served, a clear 5xx naming a backend, shed with
    429, a wrong answer, or lost (no answer at all)."""
    path = Path(f"{prefix}.json")
    total = stats.figures(path)
    out = {"requests": total.requests, "served": total.requests - total.failures, "clear_5xx_by_cause": {}, "shed_429": 0, "wrong": 0, "lost": 0, "other_errors": {}}
    for reason, count in stats.failure_reasons(path).items():
        if reason == stats.NO_ANSWER:
            out["lost"] += count
        elif reason.startswith("HTTP 429"):
            out["shed_429"] += count
        elif CLEAR_5XX.match(reason):
            out["clear_5xx_by_cause"][reason] = count
        elif reason.startswith("wrong answer"):
            out["wrong"] += count
        else:
            out["other_errors"][reason] = count
    out["lost_or_wrong"] = out["lost"] + out["wrong"] + sum(out["other_errors"].values())
    return out


def gateway_metric(settings: StackSettings, name: str, **labels: str) -> float:
    text = httpx.get(f"http://{settings.host}:{settings.gateway_port}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def torchserve_worker_pids(pgid: int) -> list[int]:
    return [p.pid for p in group_processes(pgid) if "model_service_worker" in " ".join(p.cmdline())]


def faults(out: Path, seconds: int = 36) -> dict:
    """Kill a TorchServe worker; kill the TF backend and bring it back; kill the KServe stack (SIGKILL:
    it dies mid-request) and bring it back; hang the TF backend; all under load split over the
    stacks that run."""
    settings = private_settings(out / "run")
    stacks = [s for s in STACKS if s in settings.stack_list]
    weights = ",".join(f"{s}=1" for s in stacks)
    gateway = {"routing": "weighted", "weights": weights, "failover": "true", "timeout_s": "2", "breaker_failures": "3", "breaker_cooldown_s": "2"}
    started = stack.up(settings, gateway=gateway)
    sup = Supervisor(settings.run_dir)
    try:
        ts_pgid = started["torchserve"].pgid
        killed: list[int] = []

        def kill_worker() -> None:
            pids = torchserve_worker_pids(ts_pgid)
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

        def stop(name: str) -> Callable[[], None]:
            return lambda: sup.stop([name])

        def kill(name: str) -> Callable[[], None]:
            def run() -> None:
                os.killpg(sup.load()[name].pgid, signal.SIGKILL)
                sup.stop([name])  # forgets it (and reaps what is left)
            return run

        def restart(name: str) -> Callable[[], None]:
            return lambda: sup.start([stack.launcher(name).launch(settings, settings.run_dir)], timeout=120, log_dir=sup.log_dir())

        def signal_group(name: str, sig: signal.Signals) -> Callable[[], None]:
            return lambda: os.killpg(sup.load()[name].pgid, sig)

        scale = seconds / 36
        # each event waits for the one before it (a restart returns once the stack is ready: under this
        # load on 2 cores the TF backend took 17-23 s, KServe about 6 s), so the quicker one goes first
        events = [(3 * scale, "kill a TorchServe worker (SIGKILL)", kill_worker)]
        if "kserve" in stacks:
            events += [
                (6 * scale, "kill the KServe stack (SIGKILL)", kill("kserve")),
                (9 * scale, "restart the KServe stack", restart("kserve")),
            ]
        events += [
            (13 * scale, "kill the TF backend", stop("tfserving")),
            (16 * scale, "restart the TF backend", restart("tfserving")),
            (27 * scale, "hang the TF backend (SIGSTOP: accepts, never answers)", signal_group("tfserving", signal.SIGSTOP)),
            (31 * scale, "resume the TF backend (SIGCONT)", signal_group("tfserving", signal.SIGCONT)),
        ]
        drill = Drill(settings, out, seconds=seconds, events=events)
        result = drill.run()
        result["events"] = [e for e in drill.log if "event" in e]
        result["stacks"] = stacks
        result["failovers"] = {f"{a}->{b}": gateway_metric(settings, "twinserve_gateway_failovers_total", from_backend=a, to_backend=b) for a in stacks for b in stacks if a != b}
        result["circuit_opened"] = {b: gateway_metric(settings, "twinserve_gateway_circuit_transitions_total", backend=b, state="open") for b in stacks}
        result["circuit_closed_again"] = {b: gateway_metric(settings, "twinserve_gateway_circuit_transitions_total", backend=b, state="closed") for b in stacks}
        workers = torchserve_worker_pids(ts_pgid)
        result["torchserve_worker_restarted"] = bool(workers) and not set(workers) & set(killed)
        return result
    finally:
        for svc in sup.load().values():  # a stopped process cannot be terminated
            try:
                os.killpg(svc.pgid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        stack.down(settings)


def overload(out: Path, seconds: int = 20, users: int = 64, max_in_flight: int = 4) -> dict:
    """Far more users than the gateway admits: it sheds with 429, stays healthy, and recovers."""
    settings = private_settings(out / "run")
    stack.up(settings, gateway={"max_in_flight": str(max_in_flight), "failover": "false", "primary": "tfserving"})
    health: list[tuple[int, float]] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.wait(0.5):
                t0 = time.perf_counter()
                try:
                    code = client.get(f"http://{settings.host}:{settings.gateway_port}/healthz").status_code
                except httpx.HTTPError:
                    code = 0
                health.append((code, time.perf_counter() - t0))

    try:
        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        result = Drill(settings, out, users=users, seconds=seconds).run()
        stop.set()
        prober.join()
        admitted = [e for e in json.loads(Path(f"{out}/drill.json").read_text()) if "[" not in e["name"]]
        admitted_file = out / "admitted.json"
        admitted_file.write_text(json.dumps(admitted))
        figures = stats.figures(admitted_file)
        after = httpx.post(f"http://{settings.host}:{settings.gateway_port}/v1/models/tabular:predict", content=b'{"instances": [[' + b",".join([b"1.0"] * 30) + b"]]}", timeout=10)
        result.update(
            {
                "users": users,
                "max_in_flight": max_in_flight,
                "admitted_p50_ms": figures.p50_ms,
                "admitted_p99_ms": figures.p99_ms,
                "admitted_rps": figures.rps,
                "health_probes": len(health),
                "health_ok": sum(1 for c, _ in health if c == 200),
                "health_max_ms": round(1000 * max((t for _, t in health), default=0.0), 1),
                "recovered": after.status_code == 200,
            }
        )
        return result
    finally:
        stop.set()
        stack.down(settings)


def soak(out: Path, seconds: int = 600, rate: float = 300.0) -> dict:
    """A fixed arrival rate for a long time: no errors, and the gateway's memory stays flat."""
    settings = private_settings(out / "run")
    started = stack.up(settings)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    gw_pgid = started["gateway"].pgid

    def sample() -> None:
        t0 = time.monotonic()
        while not stop.wait(2.0):
            rss = sum(p.memory_info().rss for p in group_processes(gw_pgid) if p.is_running())
            samples.append((round(time.monotonic() - t0, 1), round(rss / 2**20, 1)))

    try:
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        users = max(4, int(rate / 20))
        urls = {"gateway": f"http://{settings.host}:{settings.gateway_port}"}
        cfg = bench.BenchConfig(models=["tabular"], targets=["gateway"], urls=urls, out=out, users=users, spawn_rate=users, duration_s=seconds, warmup_s=0, repetitions=1, profile="open", rate=rate)
        bench.run_locust(cfg, TARGETS["gateway"], "tabular", users, seconds, out / "drill", rate / users)
        stop.set()
        sampler.join()
        result = account(out / "drill")
        rss = [m for _, m in samples]
        settle = rss[len(rss) // 5] if len(rss) >= 5 else (rss[0] if rss else 0.0)
        result.update({"seconds": seconds, "rate": rate, "gateway_rss_mb_first": rss[0] if rss else None, "gateway_rss_mb_after_warmup": settle, "gateway_rss_mb_last": rss[-1] if rss else None, "gateway_rss_mb_max": max(rss) if rss else None, "rss_samples": samples})
        return result
    finally:
        stop.set()
        stack.down(settings)

