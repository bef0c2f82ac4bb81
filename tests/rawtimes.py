"""Test helper, loaded by locust beside the project's locustfile (`-f loadtests/locustfile.py,tests/rawtimes.py`):
every request's raw response time that the µs recorder of the same process counted, written per
process as JSON to the folder in TWINSERVE_TEST_RAW_TIMES, so a test can compute exact
percentiles from every request and hold the HDR figures against them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from locust import events
from locust.env import Environment

_times: list[float] = []


@events.init.add_listener
def _listen(environment: Environment, **_: object) -> None:
    latency = getattr(environment, "twinserve_latency", None)  # set by loadtests/locustfile.py, imported first
    if latency is None:
        return
    recorder = latency.recorder

    def on_request(response_time: float, **_: object) -> None:
        # the recorder's own rule: counted from t0, the moment every user had spawned, until the stop
        now = time.time()
        if recorder.t0 is not None and now >= recorder.t0 and (recorder.t_stop is None or now <= recorder.t_stop):
            _times.append(response_time)

    environment.events.request.add_listener(on_request)


@events.quitting.add_listener
def _write(environment: Environment, **_: object) -> None:
    folder = Path(os.environ["TWINSERVE_TEST_RAW_TIMES"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{os.getpid()}.json").write_text(json.dumps(_times))
