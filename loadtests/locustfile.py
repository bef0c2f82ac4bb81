"""Locust users, one per target, all sending the same payloads and checking every answer.

Headless (what `twinserve bench` runs) or by hand with the web UI:

    TWINSERVE_LOAD_MODEL=tabular locust -f loadtests/locustfile.py --host http://127.0.0.1:8080 TorchServeDirect

Environment: TWINSERVE_LOAD_MODEL (a model of the manifest), TWINSERVE_LOAD_INSTANCES (rows per
request, default 1), TWINSERVE_LOAD_RATE_PER_USER (requests/s per user: a fixed arrival rate;
0 = closed loop, each user sends as soon as its previous answer arrives).

Open loop without coordinated omission: with a rate, each user keeps its own schedule of intended
send times, 1/rate apart (the first at a random offset within one interval, so users do not send
in step). It sleeps until the next intended time, or sends at once when it is behind, and the
response time it reports (to locust's statistics and to the µs HDR histograms alike) is
completion - intended send time, not completion - actual send: a slow answer that delays the
next sends is charged to every request it delayed. locust's own `constant_throughput` does not do
this (it times each request from its actual send, and a user that falls behind silently sends
less), which is why it is not used.

Option `--seconds-after-spawn S` (what `twinserve bench --duration S` passes): quit S seconds after
every user has spawned. A run-control option, so it sits on locust's command line beside `-t`;
without it, locust's own `-t` or a Ctrl-C ends the run.

Latency at µs precision and stability windows (loadtests/latency.py, loadtests/stability.py): every
process records each request's exact response time into an HDR histogram per window of `--window`
seconds, counted from the moment every user had spawned; workers send theirs to the master with
each stats report (`report_to_master` / `worker_report`). `--hdr-file PATH` makes the master (or
the single process) write the merged histograms, the windows and the stability verdict there as
JSON when it quits. `--stable-max-seconds M` ends the run as soon as the last `--stable-windows`
windows agree within `--stable-tolerance` (req/s and p99), or after M seconds: the stability mode
of `twinserve bench` (its default, when no `--duration` is given).

Why the bench does not rely on `-t`: locust creates gevent's hub while importing itself, then
imports this file (scikit-learn's data, numpy: about 2 s) without letting the event loop run, then
arms the `-t` timer with `gevent.spawn_later`. libev computes a timer's deadline from the loop's
cached "now", last refreshed before that import, so the timer fired as much earlier as the import
took: `-t 4s` counted 1.7-1.9 s of requests here, `-t 8s` 5.3-6.1 s. The clock below is armed
from inside the running loop once the users have spawned, after refreshing the loop's time.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent  # noqa: E402
from locust import FastHttpUser, constant, events, task  # noqa: E402
from locust.argument_parser import LocustArgumentParser  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust import runners as locust_runners  # noqa: E402
from locust.runners import MasterRunner, WorkerRunner  # noqa: E402

from loadtests.latency import Recorder  # noqa: E402
from loadtests.payloads import bodies, check_answer, check_explanation, describe_error  # noqa: E402
from loadtests.stability import Rule, judge  # noqa: E402
from loadtests.targets import TARGETS  # noqa: E402
from models.spec import get_spec  # noqa: E402

MODEL = os.environ.get("TWINSERVE_LOAD_MODEL", "tabular")
INSTANCES = int(os.environ.get("TWINSERVE_LOAD_INSTANCES", "1"))
RATE = float(os.environ.get("TWINSERVE_LOAD_RATE_PER_USER", "0"))
SPEC = get_spec(MODEL)
SHAPE = SPEC.shape
BODIES = bodies(MODEL, INSTANCES)
HEADERS = {"Content-Type": "application/json"}


@events.init_command_line_parser.add_listener
def _add_options(parser: LocustArgumentParser) -> None:
    parser.add_argument(
        "--seconds-after-spawn", type=float, default=0.0, include_in_web_ui=False,
        help="quit this many seconds after every user has spawned (0: off; see the module docstring for why not -t)",
    )
    parser.add_argument("--hdr-file", default="", include_in_web_ui=False, help="write µs latency (HDR histograms), windows and stability here as JSON")
    parser.add_argument("--window", type=float, default=5.0, include_in_web_ui=False, help="measurement window, seconds")
    parser.add_argument("--stable-windows", type=int, default=3, include_in_web_ui=False, help="stable when this many last windows agree")
    parser.add_argument("--stable-tolerance", type=float, default=0.10, include_in_web_ui=False, help="... within this fraction of their mean (req/s and p99)")
    parser.add_argument(
        "--stable-max-seconds", type=float, default=0.0, include_in_web_ui=False,
        help="stability mode: quit once stable, or this many seconds after every user has spawned (0: off)",
    )


@events.init.add_listener
def _arm_the_clock(environment: Environment, **_: object) -> None:
    """Quit --seconds-after-spawn seconds after every user has spawned (the master's view when
    distributed; workers only follow). With `--reset-stats` locust resets its statistics at that
    same moment, so the counted window is those seconds of load at the full user count."""
    seconds = getattr(environment.parsed_options, "seconds_after_spawn", 0.0) or 0.0
    if seconds <= 0 or isinstance(environment.runner, WorkerRunner):
        return
    armed: list[gevent.Greenlet] = []

    def start(user_count: int, **_: object) -> None:
        if armed:  # spawning_complete fires again if the user count is changed by hand
            return
        gevent.get_hub().loop.update_now()  # the deadline is taken from the loop's cached time
        armed.append(gevent.spawn_later(seconds, environment.runner.quit))

    environment.events.spawning_complete.add_listener(start)


class _Latency:
    """This process's µs latency recording and, on the master (or the single process), the
    stability watch and the JSON written at the end."""

    def __init__(self, environment: Environment) -> None:
        opts = environment.parsed_options
        self.env = environment
        self.runner = environment.runner
        self.rule = Rule(getattr(opts, "stable_windows", 3), getattr(opts, "stable_tolerance", 0.10), getattr(opts, "window", 5.0))
        self.path = getattr(opts, "hdr_file", "") or ""
        self.max_s = getattr(opts, "stable_max_seconds", 0.0) or 0.0
        self.fixed_s = getattr(opts, "seconds_after_spawn", 0.0) or 0.0
        self.recorder = Recorder(self.rule.window_s)
        self.t_stop: float | None = None
        self.decided: int | None = None  # windows judged when the stability watch stopped the run
        self.ended = "stability" if self.max_s > 0 else "fixed" if self.fixed_s > 0 else "by hand"
        events = environment.events
        if isinstance(self.runner, WorkerRunner):
            self.runner.register_message("twinserve_windows", self._start_from_master)
            self.runner.register_message("twinserve_flush", self._flush)
            events.report_to_master.add_listener(self._report)
            events.test_stopping.add_listener(self._worker_stopping)
        else:
            events.spawning_complete.add_listener(self._spawned)
            events.test_stopping.add_listener(self._stopping)
            events.quit.add_listener(self._write)
            if isinstance(self.runner, MasterRunner):
                events.worker_report.add_listener(self._worker_report)
                self.runner.register_message("twinserve_hdr", self._flushed)
        if not isinstance(self.runner, MasterRunner):
            events.request.add_listener(self._record)

    def _record(self, response_time: float, **_: object) -> None:
        self.recorder.record(response_time, time.time())

    def _start_from_master(self, environment: Environment, msg: object, **_: object) -> None:
        data = msg.data  # type: ignore[attr-defined]
        self.recorder.start(data["t0"], data["window_s"])

    def _report(self, client_id: str, data: dict) -> None:
        data["twinserve_hdr"] = self.recorder.take(time.time())

    def _worker_report(self, client_id: str, data: dict) -> None:
        self.recorder.merge(data.get("twinserve_hdr"), client_id)

    def _flush(self, environment: Environment, msg: object, **_: object) -> None:
        """The master closes a window: send what this worker has at once, not at its next stats report."""
        self.runner.send_message("twinserve_hdr", self.recorder.take(time.time()))

    def _flushed(self, environment: Environment, msg: object, **_: object) -> None:
        self.recorder.merge(msg.data, msg.node_id)  # type: ignore[attr-defined]

    def _spawned(self, user_count: int, **_: object) -> None:
        if self.recorder.t0 is not None:  # spawning_complete fires again if the user count is changed by hand
            return
        t0 = time.time()
        self.recorder.start(t0)
        if isinstance(self.runner, MasterRunner):
            self.runner.send_message("twinserve_windows", {"t0": t0, "window_s": self.rule.window_s})
        if self.max_s > 0:
            gevent.spawn(self._watch)

    def _stopping(self, **_: object) -> None:
        if self.t_stop is None:
            self.t_stop = time.time()
        self.recorder.stop(self.t_stop)

    def _worker_stopping(self, **_: object) -> None:
        self.recorder.stop(time.time())  # told by the master: what completes while stopping is not measured

    def _covered(self, until: float) -> bool:
        """Whether every request completed before `until` has reached this recorder: at once in one
        process; from workers, once each one's reports cover that time."""
        if not isinstance(self.runner, MasterRunner):
            return True
        workers = [c.id for c in self.runner.clients.all]
        return all(self.recorder.upto.get(w, 0.0) >= until for w in workers)

    def _watch(self) -> None:
        """Stability mode: judge each window as it completes; quit once stable, or at the maximum."""
        rec, rule = self.recorder, self.rule
        last = max(rule.windows, int(self.max_s / rule.window_s + 1e-9))
        grace = 2 * locust_runners.WORKER_REPORT_INTERVAL + 2  # a worker that stopped reporting holds the watch no longer
        for k in range(1, last + 1):
            end = rec.t0 + k * rule.window_s
            while time.time() < end:
                gevent.sleep(max(0.01, min(0.2, end - time.time())))
            if isinstance(self.runner, MasterRunner):  # ask the workers for their windows now (their stats reports come every 3 s)
                self.runner.send_message("twinserve_flush", {"until": end})
            while not self._covered(end) and time.time() < end + grace:
                gevent.sleep(0.01)
            verdict = judge([rec.window_figures(i) for i in range(k)], rule)
            if verdict["stable"] or k == last:
                self.decided = k
                self.t_stop = time.time()
                self.recorder.stop(self.t_stop)
                self.ended = "stable" if verdict["stable"] else "maximum time"
                self.runner.quit()
                return

    def result(self) -> dict:
        rec, rule = self.recorder, self.rule
        out: dict = {"mode": "stability" if self.max_s > 0 else "fixed", "rule": {**rule.as_dict(), "max_s": self.max_s or None}, "t0": rec.t0, "t_stop": self.t_stop, "ended": self.ended, "after_stop": rec.after_stop}
        total = rec.total()
        out["latency_us"] = total.latency_us()
        out["hdr"] = total.encode()
        if rec.t0 is None:
            return {**out, "windows": [], "stability": {"stable": False, "reason": "no user ever spawned"}}
        n = rec.complete(self.t_stop or time.time())
        if self.decided is not None:
            n = min(n, self.decided)
        windows = [rec.window_figures(k) for k in range(n)]
        verdict = judge(windows, rule)
        if out["mode"] == "fixed" and len(windows) < rule.windows:
            verdict = {**verdict, "stable": None, "reason": f"not judged: a fixed run of {len(windows)} complete window(s), {rule.windows} needed"}
        out["windows"] = windows
        out["stability"] = verdict
        return out

    def _write(self, **_: object) -> None:
        if self.path:
            with open(self.path, "w") as fh:
                json.dump(self.result(), fh, indent=1)


@events.init.add_listener
def _record_latency(environment: Environment, **_: object) -> None:
    if environment.parsed_options is not None and environment.runner is not None:
        environment.twinserve_latency = _Latency(environment)  # type: ignore[attr-defined]


class _PredictUser(FastHttpUser):
    abstract = True
    wait_time = constant(0)  # open loop paces itself in predict(): intended send times
    target = ""
    network_timeout = 30.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        start = random.randrange(len(BODIES))
        self.bodies = itertools.islice(itertools.cycle(BODIES), start, None)
        self.path = TARGETS[self.target].path(MODEL)
        self.next_send = time.perf_counter() + random.uniform(0, 1 / RATE) if RATE > 0 else 0.0

    def check(self, content: bytes) -> str | None:
        return check_answer(content, INSTANCES, SPEC)

    @task
    def predict(self) -> None:
        intended = None
        if RATE > 0:
            intended = self.next_send
            self.next_send += 1 / RATE
            ahead = intended - time.perf_counter()
            if ahead > 0:
                gevent.sleep(ahead)
        with self.client.post(self.path, data=next(self.bodies), headers=HEADERS, name=f"{MODEL}", catch_response=True) as resp:
            if intended is not None:  # latency from the intended send time (see the module docstring)
                resp.request_meta["response_time"] = (time.perf_counter() - intended) * 1000
            # each kind of failure gets its own entry, so locust's complete JSON counts them apart
            if resp.status_code != 200:
                reason = describe_error(resp.status_code, resp.content)
                resp.request_meta["name"] = f"{MODEL} [{reason}]"
                resp.failure(reason)
                return
            problem = self.check(resp.content)
            if problem:
                resp.request_meta["name"] = f"{MODEL} [wrong answer: {problem}]"
                resp.failure(problem)


class TorchServeDirect(_PredictUser):
    target = "torchserve"


class TFServingDirect(_PredictUser):
    target = "tfserving"


class KServeDirect(_PredictUser):
    """KServe's model server running ONNX Runtime, on its V1 predict path."""

    target = "kserve"


class GatewayTorchServe(_PredictUser):
    target = "gateway-torchserve"


class GatewayTFServing(_PredictUser):
    target = "gateway-tfserving"


class GatewayKServe(_PredictUser):
    target = "gateway-kserve"


class GatewayRouted(_PredictUser):
    """Through the gateway with its own routing policy (split, mirror, failover)."""

    target = "gateway"


class GatewayExplainTorchServe(_PredictUser):
    """Explanation traffic: Integrated Gradients from TorchServe (Captum), through the gateway."""

    target = "explain-torchserve"

    def check(self, content: bytes) -> str | None:
        return check_explanation(content, INSTANCES, SHAPE)


class GatewayExplainTFServing(GatewayExplainTorchServe):
    """Explanation traffic: the SavedModel's explain signature on the TF backend, through the gateway."""

    target = "explain-tfserving"


class NginxTorchServe(_PredictUser):
    """The direct TorchServe path through nginx: the reference proxy the gateway's cost is read against."""

    target = "nginx-torchserve"


class NginxTFServing(_PredictUser):
    target = "nginx-tfserving"


class FloorTorchServe(_PredictUser):
    """The direct TorchServe path through the bare-Python proxy (loadtests/floorproxy.py): the Python floor."""

    target = "floor-torchserve"


class FloorTFServing(_PredictUser):
    target = "floor-tfserving"


class NginxKServe(_PredictUser):
    target = "nginx-kserve"


class FloorKServe(_PredictUser):
    target = "floor-kserve"
