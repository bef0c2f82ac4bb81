"""Locust users, one per target, all sending the same payloads and checking every answer.

Headless (what `twinserve bench` runs) or by hand with the web UI:

    TWINSERVE_LOAD_MODEL=tabular locust -f loadtests/locustfile.py --host http://127.0.0.1:8080 TorchServeDirect

Environment: TWINSERVE_LOAD_MODEL (a model of the manifest), TWINSERVE_LOAD_INSTANCES (rows per
request, default 1), TWINSERVE_LOAD_RATE_PER_USER (requests/s per user: a fixed arrival rate;
0 = closed loop, each user sends as soon as its previous answer arrives).

Option `--seconds-after-spawn S` (what `twinserve bench` passes): quit S seconds after every user
has spawned. A run-control option, so it sits on locust's command line beside `-t`; without it,
locust's own `-t` or a Ctrl-C ends the run.

Why the bench does not rely on `-t`: locust creates gevent's hub while importing itself, then
imports this file (scikit-learn's data, numpy: about 2 s) without letting the event loop run, then
arms the `-t` timer with `gevent.spawn_later`. libev computes a timer's deadline from the loop's
cached "now", last refreshed before that import, so the timer fired as much earlier as the import
took: `-t 4s` counted 1.7-1.9 s of requests here, `-t 8s` 5.3-6.1 s. The clock below is armed
from inside the running loop once the users have spawned, after refreshing the loop's time.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent  # noqa: E402
from locust import FastHttpUser, constant, constant_throughput, events, task  # noqa: E402
from locust.argument_parser import LocustArgumentParser  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.runners import WorkerRunner  # noqa: E402

from loadtests.payloads import bodies, check_answer, check_explanation, describe_error  # noqa: E402
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


class _PredictUser(FastHttpUser):
    abstract = True
    wait_time = constant_throughput(RATE) if RATE > 0 else constant(0)
    target = ""
    network_timeout = 30.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        start = random.randrange(len(BODIES))
        self.bodies = itertools.islice(itertools.cycle(BODIES), start, None)
        self.path = TARGETS[self.target].path(MODEL)

    def check(self, content: bytes) -> str | None:
        return check_answer(content, INSTANCES, SPEC)

    @task
    def predict(self) -> None:
        with self.client.post(self.path, data=next(self.bodies), headers=HEADERS, name=f"{MODEL}", catch_response=True) as resp:
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


class GatewayTorchServe(_PredictUser):
    target = "gateway-torchserve"


class GatewayTFServing(_PredictUser):
    target = "gateway-tfserving"


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
