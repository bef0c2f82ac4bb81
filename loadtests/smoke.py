"""The compose smoke's client (services/docker/smoke.sh).

Predictions for every model through a gateway, to each of the three stacks (TorchServe, TF Serving,
KServe's model server running ONNX Runtime), checked for agreement with TorchServe's; with
`--grpc host:port`, the same inputs through the gateway's gRPC port (V2 ModelInfer) must give the
same answers as REST:

    python -m loadtests.smoke http://127.0.0.1:8000 --grpc 127.0.0.1:8001

Several replicas per stack (after `docker-compose up --scale torchserve=2 --scale tfserving=2 --scale kserve=2`;
DOCKER_HOST and COMPOSE_PROJECT_NAME as the smoke sets them):

    python -m loadtests.smoke ready URL --replicas 2     # every container healthy; /readyz lists each READY and in rotation
    python -m loadtests.smoke split URL --requests 300   # requests to each stack; every replica must serve some
    python -m loadtests.smoke drill URL --service torchserve
        # locust (host venv) through the gateway at that stack; one replica `docker kill`ed mid-load,
        # then `docker start`ed: no request may fail, and the restarted replica must serve again

Replica figures come from the gateway's own metrics (twinserve_gateway_replica_requests_total per
replica, _replica_ejected, _requests_total, _failovers_total), its /readyz, and locust's complete
JSON. Exit status 1 when a check fails; each failed check is printed as `FAIL ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from loadtests import payloads
from loadtests.payloads import bodies, check_answer
from models.spec import ModelSpec, get_spec

# the compose stacks, in the gateway's failover order (compose's service names = the gateway's backend names)
STACKS = ("torchserve", "tfserving", "kserve")


def check(gateway: str, grpc_target: str | None = None) -> list[str]:
    problems = []
    with httpx.Client(base_url=gateway, timeout=30) as client:
        ready = client.get("/readyz").json()
        print(f"gateway ready: {ready['ready']}; TF backend: {ready['implementations'].get('tfserving')}; KServe backend: {ready['implementations'].get('kserve')}")
        for model in ready.get("models", {}):  # the models this gateway serves
            spec = get_spec(model)
            body = bodies(model, 2, count=1)[0]
            answers = {}
            for backend in STACKS:
                r = client.post(f"/v1/models/{model}:predict", params={"backend": backend}, content=body)
                if r.status_code != 200 or r.headers.get("x-backend") != backend:
                    problems.append(f"{model} via {backend}: HTTP {r.status_code} {r.text[:200]}")
                    continue
                problem = check_answer(r.content, 2, spec)
                if problem:
                    problems.append(f"{model} via {backend}: {problem}")
                    continue
                preds = r.json()["predictions"]
                answers[backend] = np.concatenate([np.ravel(row[t.name] if len(spec.outputs) > 1 else row).astype(np.float64) for row in preds for t in spec.outputs])
            if "torchserve" in answers:
                for other in (b for b in STACKS if b != "torchserve" and b in answers):
                    diff = float(np.abs(answers["torchserve"] - answers[other]).max())
                    print(f"{model:8s} torchserve and {other} agree: max |diff| {diff:.2e}")
                    if diff > spec.tolerance:
                        problems.append(f"{model}: torchserve and {other} disagree by {diff}")
            if grpc_target:
                problems += grpc_check(grpc_target, spec, answers)
    return problems


LITTLE_ENDIAN = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "INT64": "<i8", "INT32": "<i4", "INT8": "i1", "UINT8": "u1", "BOOL": "?"}


def grpc_check(target: str, spec: ModelSpec, rest: dict[str, np.ndarray]) -> list[str]:
    """The first two instances through the gateway's gRPC port (KServe V2 ModelInfer, raw tensors),
    from each stack: the same outputs as the REST answers `rest` (flattened, in the spec's order)."""
    import grpc

    from gateway.grpcapi.schema import message

    if any(t.is_bytes for t in spec.inputs):
        print(f"{spec.name:8s} gRPC: skipped (a bytes input; the compose stack serves row models)")
        return []
    request_type, response_type = message("inference.ModelInferRequest"), message("inference.ModelInferResponse")
    data = {k: v[:2] for k, v in payloads.inputs(spec, 2).items()}
    problems = []
    with grpc.insecure_channel(target) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=request_type.SerializeToString, response_deserializer=response_type.FromString)
        for backend, expected in rest.items():
            request = request_type(model_name=spec.name)
            for t in spec.inputs:
                value = data[t.name]
                request.inputs.add(name=t.name, datatype=t.v2_datatype, shape=[len(value), *np.shape(value)[1:]])
                # the binary form written here, not with the gateway's codec: numbers little-endian, row-major
                request.raw_input_contents.append(np.ascontiguousarray(value, dtype=np.dtype(t.numpy_dtype).newbyteorder("<")).tobytes())
            try:
                response, call = infer.with_call(request, metadata=[("x-backend", backend)], timeout=30)
            except grpc.RpcError as exc:
                problems.append(f"{spec.name} via gRPC to {backend}: {exc.code()} {exc.details()}")
                continue
            outputs = {o.name: np.frombuffer(raw, dtype=LITTLE_ENDIAN[o.datatype]).reshape(list(o.shape)) for o, raw in zip(response.outputs, response.raw_output_contents)}
            got = np.concatenate([np.asarray(outputs[t.name], np.float64).reshape(len(data[spec.input_name]), -1) for t in spec.outputs], axis=1).ravel()
            diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
            served_by = dict(call.initial_metadata()).get("x-backend")
            print(f"{spec.name:8s} gRPC via {backend}: served by {served_by}, max |diff| to REST {diff:.2e}")
            if served_by != backend or diff > spec.tolerance:
                problems.append(f"{spec.name} via gRPC to {backend}: served by {served_by}, differs from REST by {diff}")
    return problems


# several replicas per stack ---------------------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
PORTS = {"torchserve": 8080, "tfserving": 8501, "kserve": 8080}  # the port of each stack's URL in the gateway's environment


# docker ---------------------------------------------------------------------------------------
def sh(*cmd: str) -> str:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def containers(service: str) -> list[str]:
    """The service's container ids (running or not), in compose's replica order."""
    ids = sh("docker-compose", "ps", "-q", service).split()
    return sorted(ids, key=lambda c: name_of(c))


def container_info(cid: str) -> dict:
    return json.loads(sh("docker", "inspect", cid))[0]


def name_of(cid: str) -> str:
    return container_info(cid)["Name"].lstrip("/")


def ip_of(info: dict) -> str:
    return next((n["IPAddress"] for n in info["NetworkSettings"]["Networks"].values() if n.get("IPAddress")), "")


def health(info: dict) -> str:
    state = info["State"]
    return state.get("Health", {}).get("Status", "none") if state["Running"] else state["Status"]


def replica_names(service: str) -> dict[str, str]:
    """gateway replica label (ip:port) -> container name, for the running containers."""
    out = {}
    for cid in containers(service):
        info = container_info(cid)
        if info["State"]["Running"]:
            out[f"{ip_of(info)}:{PORTS[service]}"] = info["Name"].lstrip("/")
    return out


# gateway --------------------------------------------------------------------------------------
def scrape(gateway: str) -> dict[str, dict[tuple, float]]:
    """metric sample name -> (sorted label items) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{gateway}/metrics", timeout=10).text
    out: dict[str, dict[tuple, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def per_replica(m: dict, backend: str) -> dict[str, dict[str, float]]:
    """replica -> outcome -> attempts, for one backend."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"ok": 0.0, "rejected": 0.0, "failed": 0.0})
    for labels, value in m.get("twinserve_gateway_replica_requests_total", {}).items():
        d = dict(labels)
        if d["backend"] == backend:
            out[d["replica"]][d["outcome"]] = value
    return out


def gauge(m: dict, name: str, backend: str, replica: str) -> float:
    return m.get(name, {}).get((("backend", backend), ("replica", replica)), 0.0)


def total(m: dict, name: str, **want: str) -> float:
    """Sum of a metric's samples whose labels match `want` (a value starting with ! excludes)."""
    s = 0.0
    for labels, value in m.get(name, {}).items():
        d = dict(labels)
        if all((d.get(k) != v[1:]) if v.startswith("!") else (d.get(k) == v) for k, v in want.items()):
            s += value
    return s


def delta(after: dict, before: dict, replica: str, outcome: str) -> int:
    return int(after.get(replica, {}).get(outcome, 0) - before.get(replica, {}).get(outcome, 0))


def table(rows: list[list[object]], head: list[str]) -> str:
    cells = [head] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) if i < 2 or not c[:1].isdigit() else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


# ready ----------------------------------------------------------------------------------------
def ready(gateway: str, replicas: int, timeout: float) -> list[str]:
    """Every stack has `replicas` healthy containers, and the gateway's /readyz lists exactly their
    addresses, READY, for every model."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    while True:
        states = {s: [(cid, health(container_info(cid))) for cid in containers(s)] for s in STACKS}
        healthy = all(len(c) == replicas and all(h == "healthy" for _, h in c) for c in states.values())
        if healthy:
            break
        if time.monotonic() > deadline:
            return [f"containers not healthy after {timeout:.0f} s: " + "; ".join(f"{s}: {[h for _, h in c]}" for s, c in states.items())]
        time.sleep(2)
    print(f"every container healthy after {time.monotonic() - started:.0f} s: " + ", ".join(f"{s} x{len(c)}" for s, c in states.items()))
    expected = {s: set(replica_names(s)) for s in STACKS}
    body: dict = {}
    while True:
        try:
            body = httpx.get(f"{gateway}/readyz", timeout=10).json()
        except httpx.HTTPError:
            body = {}
        listed, load = body.get("replicas", {}), body.get("load", {})
        good = bool(listed) and all(
            set(listed[m].get(s, {})) == expected[s] and all(v == "READY" for v in listed[m][s].values())
            for m in listed for s in STACKS
        ) and all(  # and in the gateway's rotation: not warming up (found after start-up), not ejected
            set(load.get(s, {})) == expected[s] and not any(r.get("warming") or r.get("ejected") for r in load[s].values())
            for s in STACKS
        )
        if good:
            break
        if time.monotonic() > deadline:
            return [f"/readyz did not list {expected} READY for every model and in rotation within {timeout:.0f} s: {json.dumps(listed)} {json.dumps(load)}"]
        time.sleep(1)
    names = {label: name for s in STACKS for label, name in replica_names(s).items()}
    print(f"gateway /readyz after {time.monotonic() - started:.0f} s: ready={body['ready']}, {replicas} READY replicas per stack for every model, all in rotation")
    rows = [[m, s, label, names.get(label, "?"), state] for m, by in body["replicas"].items() for s in STACKS for label, state in sorted(by[s].items())]
    print(table(rows, ["model", "stack", "replica", "container", "state"]))
    return []


# split ----------------------------------------------------------------------------------------
def split(gateway: str, requests: int, users: int) -> list[str]:
    """`requests` predictions to each stack (every model in turn, `users` at a time); every replica
    must have served some, none may have failed."""
    models = list(httpx.get(f"{gateway}/readyz", timeout=10).json()["models"])
    payload = {m: bodies(m, 1, count=16) for m in models}
    before = scrape(gateway)
    problems: list[str] = []
    statuses: dict[str, dict[int, int]] = {s: defaultdict(int) for s in STACKS}
    lock = threading.Lock()
    with httpx.Client(base_url=gateway, timeout=30, limits=httpx.Limits(max_connections=users)) as client:
        def one(args: tuple[str, int]) -> None:
            stack, i = args
            model = models[i % len(models)]
            r = client.post(f"/v1/models/{model}:predict", params={"backend": stack}, content=payload[model][i % 16], headers={"Content-Type": "application/json"})
            served_by = r.headers.get("x-backend")
            with lock:
                statuses[stack][r.status_code if served_by == stack else -1] += 1

        with ThreadPoolExecutor(users) as pool:
            list(pool.map(one, [(s, i) for s in STACKS for i in range(requests)]))
    after = scrape(gateway)
    rows = []
    for stack in STACKS:
        b, a = per_replica(before, stack), per_replica(after, stack)
        names = replica_names(stack)
        ok_by = {r: delta(a, b, r, "ok") for r in names}
        all_ok = sum(ok_by.values()) or 1
        for label, name in sorted(names.items(), key=lambda kv: kv[1]):
            ok, rej, failed = ok_by[label], delta(a, b, label, "rejected"), delta(a, b, label, "failed")
            rows.append([stack, label, name, ok, rej, failed, f"{100 * ok / all_ok:.1f}%"])
            if ok <= 0:
                problems.append(f"{stack} replica {label} ({name}) served nothing")
            if rej or failed:
                problems.append(f"{stack} replica {label} ({name}): {rej} rejected, {failed} failed")
        if dict(statuses[stack]) != {200: requests}:
            problems.append(f"{stack}: answers {dict(statuses[stack])} (status -> count; -1: served by another stack), expected {requests} x 200")
        extra = set(a) - set(b) - set(names)
        if extra:
            problems.append(f"{stack}: attempts counted at {sorted(extra)}, which is no running container")
    print(f"{requests} requests to each stack through the gateway (?backend=, {len(models)} models in turn, {users} at a time); per replica, from twinserve_gateway_replica_requests_total:")
    print(table(rows, ["stack", "replica", "container", "ok", "rejected", "failed", "share"]))
    return problems


# drill ----------------------------------------------------------------------------------------
class ReadyzWatch(threading.Thread):
    """Polls /readyz's `load` (the gateway's own list of a backend's replicas; /readyz asks every
    replica, up to 2 s for one that does not answer) and records when `label` leaves it, when
    `back_label` is listed again, and when it is in rotation (no longer warming up)."""

    def __init__(self, gateway: str, backend: str, label: str) -> None:
        super().__init__(daemon=True)
        self.gateway, self.backend, self.label = gateway, backend, label
        self.back_label = ""  # set once the container has been started again
        self.gone_at: float | None = None
        self.listed_at: float | None = None
        self.rotation_at: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                try:
                    load = client.get(f"{self.gateway}/readyz").json().get("load", {}).get(self.backend, {})
                    now = time.monotonic()
                    if self.gone_at is None and self.label not in load:
                        self.gone_at = now
                    elif self.gone_at is not None and self.back_label in load:
                        self.listed_at = self.listed_at or now
                        if not load[self.back_label].get("warming") and not load[self.back_label].get("ejected"):
                            self.rotation_at = now
                            return
                except httpx.HTTPError:
                    pass
                self.stop.wait(0.25 if self.gone_at is None else 0.5)


def locust_figures(path: Path, hdr: Path, t_wall: float) -> dict:
    """Totals from locust's complete JSON; latency per 5 s window (from the intended send time) from
    the locustfile's HDR output, each window placed on the drill's clock (`t_wall`: locust started)."""
    stats = json.loads(path.read_text())
    latency = json.loads(hdr.read_text())
    windows = [(w["start"] - t_wall, w["end"] - t_wall, w["rps"], w["p50_us"], w["p99_us"]) for w in latency.get("windows", [])]
    n = sum(s["num_requests"] for s in stats)
    failures = sum(s["num_failures"] for s in stats)
    hist: dict[int, int] = defaultdict(int)
    for s in stats:
        for ms, count in s["response_times"].items():
            hist[int(float(ms))] += count
    slow = sum(c for ms, c in hist.items() if ms >= 900)
    failed_names = {s["name"]: s["num_failures"] for s in stats if s["num_failures"]}
    return {"requests": n, "failures": failures, "max_ms": max((s["max_response_time"] or 0) for s in stats) if stats else 0, "slow_900ms": slow,
            "failed_names": failed_names, "windows": windows, "latency_us": latency.get("latency_us", {})}


def stop_locust(locust: subprocess.Popen) -> None:
    """SIGTERM: locust stops its users and writes its JSON (and the locustfile its HDR file)."""
    if locust.poll() is None:
        locust.send_signal(signal.SIGTERM)
        try:
            locust.wait(30)
        except subprocess.TimeoutExpired:
            locust.kill()
            locust.wait()


def drill(gateway: str, service: str, users: int, rate: float, model: str, heal_timeout: float) -> list[str]:
    problems: list[str] = []
    ids = containers(service)
    if len(ids) < 2:
        return [f"{service} has {len(ids)} container(s); the drill needs 2 or more"]
    victim = ids[0]
    info = container_info(victim)
    vname, vlabel = info["Name"].lstrip("/"), f"{ip_of(info)}:{PORTS[service]}"
    restarts0 = info["RestartCount"]
    names_before = replica_names(service)
    print(f"victim: {vname} at {vlabel} (restart policy {info['HostConfig']['RestartPolicy']['Name']})")

    out = Path(tempfile.mkdtemp(prefix="twinserve-drill-"))
    env = {**os.environ, "TWINSERVE_LOAD_MODEL": model, "TWINSERVE_LOAD_RATE_PER_USER": str(rate)}
    user_class = {"torchserve": "GatewayTorchServe", "tfserving": "GatewayTFServing", "kserve": "GatewayKServe"}[service]
    cmd = [str(ROOT / ".venv/bin/locust"), "-f", "loadtests/locustfile.py", "--headless", "-u", str(users), "-r", str(users),
           "--host", gateway, "--json-file", str(out / "drill"), "--hdr-file", str(out / "hdr.json"), "--window", "5",
           "--only-summary", "--loglevel", "WARNING", user_class]
    watch = ReadyzWatch(gateway, service, vlabel)
    m0 = scrape(gateway)
    t_run, t_wall = time.monotonic(), time.time()
    with open(out / "locust.log", "w") as log:  # the child keeps its own copy of the descriptor
        locust = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    events: list[tuple[float, str]] = []

    def mark(what: str, t: float) -> None:
        events.append((t - t_run, what))

    try:
        # steady load on every replica first
        deadline = time.monotonic() + 60
        while True:
            c = per_replica(scrape(gateway), service)
            grown = [delta(c, per_replica(m0, service), r, "ok") for r in names_before]
            if min(grown) >= 200 or time.monotonic() > deadline:
                break
            if locust.poll() is not None:
                raise RuntimeError(f"locust exited early ({locust.returncode}): {(out / 'locust.log').read_text()[-2000:]}")
            time.sleep(0.5)
        if min(grown) < 200:
            problems.append(f"load did not reach every {service} replica within 60 s: {dict(zip(names_before, grown))}")
        before = scrape(gateway)
        mark(f"load steady ({users} users x {rate:g} req/s); every replica serving", time.monotonic())

        watch.start()
        sh("docker", "kill", victim)
        t_kill = time.monotonic()
        mark(f"docker kill {vname}", t_kill)

        # ejection by failures and removal by discovery; the restart policy must leave it stopped
        t_eject = None
        restarted_itself = False
        while time.monotonic() < t_kill + 12 or (watch.gone_at is None and time.monotonic() < t_kill + 30):
            m = scrape(gateway)
            if t_eject is None and gauge(m, "twinserve_gateway_replica_ejected", service, vlabel) >= 1:
                t_eject = time.monotonic()
                mark(f"{vlabel} ejected (twinserve_gateway_replica_ejected=1)", t_eject)
            st = container_info(victim)["State"]
            if st["Running"] or st.get("Restarting"):
                restarted_itself = True
            time.sleep(0.2)
        if watch.gone_at is not None:
            mark(f"{vlabel} gone from the gateway's replicas (/readyz load; DNS re-resolved)", watch.gone_at)
        killed = container_info(victim)
        policy_note = f"{killed['State']['Status']} (exit {killed['State']['ExitCode']}), RestartCount {restarts0} -> {killed['RestartCount']}"
        mark(f"{vname} 12 s after the kill: {policy_note}", time.monotonic())
        if restarted_itself or killed["State"]["Running"] or killed["RestartCount"] != restarts0:
            problems.append(f"the restart policy restarted {vname} after docker kill: {policy_note}")
        if watch.gone_at is None:
            problems.append(f"the gateway still lists {vlabel} 30 s after the kill")
        after_kill = scrape(gateway)

        # back: docker start, healthy, serving again (its address may have changed)
        sh("docker", "start", victim)
        t_start = time.monotonic()
        new_label = f"{ip_of(container_info(victim))}:{PORTS[service]}"
        watch.back_label = new_label
        mark(f"docker start {vname}: at {new_label}" + (" (the same address)" if new_label == vlabel else f" (was {vlabel})"), t_start)
        start_counts = per_replica(scrape(gateway), service)
        t_healthy = t_served = None
        deadline = t_start + heal_timeout
        polls = 0
        while time.monotonic() < deadline and (t_healthy is None or t_served is None):
            if t_healthy is None and polls % 4 == 0 and health(container_info(victim)) == "healthy":
                t_healthy = time.monotonic()
                mark(f"{vname} healthy (Docker's healthcheck, every 5 s)", t_healthy)
            if t_served is None and delta(per_replica(scrape(gateway), service), start_counts, new_label, "ok") > 0:
                t_served = time.monotonic()
                mark(f"{new_label} serving again (its ok count grows)", t_served)
            if locust.poll() is not None:
                raise RuntimeError(f"locust exited early ({locust.returncode}): {(out / 'locust.log').read_text()[-2000:]}")
            polls += 1
            time.sleep(0.25)
        if t_served is None:
            problems.append(f"{vname} did not serve again within {heal_timeout:.0f} s of docker start (healthy: {t_healthy is not None})")
        if t_healthy is None:
            problems.append(f"{vname} not healthy within {heal_timeout:.0f} s of docker start")
        time.sleep(5)  # a few seconds of both replicas serving under the load
        if watch.listed_at is not None:
            mark(f"{new_label} listed by the gateway again (DNS re-resolved; warming up)", watch.listed_at)
        if watch.rotation_at is not None:
            mark(f"{new_label} in the gateway's rotation (serves every model)", watch.rotation_at)
        stop_locust(locust)
        mark("load stopped", time.monotonic())
        end = scrape(gateway)  # after locust has quit: every request it counted is in
    finally:
        watch.stop.set()
        stop_locust(locust)

    if locust.returncode != 0:
        problems.append(f"locust exited with {locust.returncode}: {(out / 'locust.log').read_text()[-1500:]}")
    lf = locust_figures(out / "drill.json", out / "hdr.json", t_wall)
    names_now = replica_names(service)
    labels = sorted(set(names_before) | set(names_now))  # the victim's old address and its new one when it changed
    b_all, k_all, e_all = per_replica(before, service), per_replica(after_kill, service), per_replica(end, service)
    s_all = per_replica(m0, service)
    rows = []
    for r in labels:
        who = names_now.get(r) or names_before.get(r, "?")
        rows.append([r, who, delta(b_all, s_all, r, "ok"), delta(k_all, b_all, r, "ok"), delta(e_all, k_all, r, "ok"),
                     delta(e_all, s_all, r, "ok"), delta(e_all, s_all, r, "failed"), delta(e_all, s_all, r, "rejected"), int(e_all.get(r, {}).get("ok", 0))])
    failed_on_victim = delta(e_all, s_all, vlabel, "failed")
    failed_elsewhere = sum(delta(e_all, s_all, r, "failed") for r in labels if r != vlabel)
    ok_attempts = sum(delta(e_all, s_all, r, "ok") for r in labels)
    served_200 = int(total(end, "twinserve_gateway_requests_total", backend=service, status="200") - total(m0, "twinserve_gateway_requests_total", backend=service, status="200"))
    not_200 = int(total(end, "twinserve_gateway_requests_total", status="!200") - total(m0, "twinserve_gateway_requests_total", status="!200"))
    failovers = int(total(end, "twinserve_gateway_failovers_total") - total(m0, "twinserve_gateway_failovers_total"))
    circuit = int(total(end, "twinserve_gateway_circuit_transitions_total", backend=service) - total(m0, "twinserve_gateway_circuit_transitions_total", backend=service))

    print("timeline:")
    print("\n".join(f"  t={t:6.2f} s  {what}" for t, what in sorted(events)))
    print(f"per-replica attempts at {service} during the drill (twinserve_gateway_replica_requests_total; ok per phase, then the drill's totals and the counter's value at the end):")
    print(table(rows, ["replica", "container", "ok load->kill", "ok kill->start", "ok start->end", "ok", "failed", "rejected", "ok counter at end"]))
    print("drill figures:")
    print(f"  requests during the drill (locust, complete JSON): {lf['requests']}")
    print(f"  failures (locust): {lf['failures']}" + (f" {lf['failed_names']}" if lf["failures"] else ""))
    print(f"  gateway: {served_200} answered 200 by {service}, {not_200} answered other than 200, {failovers} failed over to the other stack, {circuit} circuit transitions of {service}")
    print(f"  attempts that failed on the killed replica {vlabel} and were retried on another: {failed_on_victim} (failed elsewhere: {failed_elsewhere}; upstream attempts ok {ok_attempts} = 200 answers {served_200})")
    lat = lf["latency_us"]
    ms = lambda us: f"{us / 1000:.1f} ms" if us is not None else "-"
    print(f"  latency from the intended send time: p50 {ms(lat.get('p50'))}, p99 {ms(lat.get('p99'))}, max {ms(lat.get('max'))}; answers taking >= 900 ms: {lf['slow_900ms']}")
    print("  per 5 s window (t on the timeline's clock): " + "; ".join(f"{a:.0f}-{b:.0f} s {rps:.0f}/s p50 {ms(p50)} p99 {ms(p99)}" for a, b, rps, p50, p99 in lf["windows"]))
    fmt = lambda t, t0: f"{t - t0:.2f} s" if t is not None else "never"
    print(f"  time to eject (kill -> twinserve_gateway_replica_ejected=1): {fmt(t_eject, t_kill)}")
    print(f"  time to leave the gateway's replicas (kill -> gone from /readyz, DNS re-resolved): {fmt(watch.gone_at, t_kill)}")
    print(f"  restart policy ({info['HostConfig']['RestartPolicy']['Name']}) after docker kill: {policy_note}" + (" — restarted by Docker" if restarted_itself else " — left stopped by Docker"))
    print(f"  docker start -> listed by the gateway again: {fmt(watch.listed_at, t_start)}; -> in its rotation: {fmt(watch.rotation_at, t_start)}; -> serving again: {fmt(t_served, t_start)}; -> healthy in Docker: {fmt(t_healthy, t_start)}")

    if lf["requests"] <= 0:
        problems.append("locust sent nothing")
    if lf["failures"]:
        problems.append(f"{lf['failures']} locust failures: {lf['failed_names']}")
    if not_200 or failovers:
        problems.append(f"the gateway answered {not_200} requests other than 200 and failed {failovers} over during the drill")
    if served_200 < lf["requests"]:
        problems.append(f"the gateway answered {served_200} from {service}, fewer than locust's {lf['requests']}")
    if ok_attempts != served_200:
        problems.append(f"{ok_attempts} ok upstream attempts against {served_200} answers")
    for r, who, _, _, _, d_ok, *_ in rows:
        if r in names_now and d_ok <= 0:
            problems.append(f"{r} ({who}) served nothing during the drill")
    if problems:
        print(f"locust's output and JSON: {out}")
    else:
        shutil.rmtree(out, ignore_errors=True)
    return problems


def replicas_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.smoke", description="Several replicas per stack on the compose deployment, proven through the gateway.")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("ready")
    a.add_argument("gateway")
    a.add_argument("--replicas", type=int, default=2)
    a.add_argument("--timeout", type=float, default=300)
    a = sub.add_parser("split")
    a.add_argument("gateway")
    a.add_argument("--requests", type=int, default=300)
    a.add_argument("--users", type=int, default=8)
    a = sub.add_parser("drill")
    a.add_argument("gateway")
    a.add_argument("--service", choices=STACKS, default="torchserve")
    a.add_argument("--users", type=int, default=8)
    a.add_argument("--rate", type=float, default=10.0, help="requests/s per locust user (open loop)")
    a.add_argument("--model", default="tabular")
    a.add_argument("--heal-timeout", type=float, default=240)
    args = p.parse_args(argv)
    if args.cmd == "ready":
        problems = ready(args.gateway, args.replicas, args.timeout)
    elif args.cmd == "split":
        problems = split(args.gateway, args.requests, args.users)
    else:
        problems = drill(args.gateway, args.service, args.users, args.rate, args.model, args.heal_timeout)
    for problem in problems:
        print(f"FAIL {problem}")
    return 1 if problems else 0


def served(gateway: str) -> int:
    """Requests the gateway has answered with 200, from its Prometheus metrics."""
    text = httpx.get(f"{gateway}/metrics", timeout=10).text
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("twinserve_gateway_requests_total{") and 'status="200"' in line))


def main() -> int:
    if sys.argv[1:2] == ["--served"]:
        print(served(sys.argv[2]))
        return 0
    if sys.argv[1:2] and sys.argv[1] in ("ready", "split", "drill"):
        return replicas_main(sys.argv[1:])
    args = sys.argv[1:]
    grpc_target = None
    if "--grpc" in args:
        at = args.index("--grpc")
        grpc_target = args[at + 1]
        del args[at:at + 2]
    problems = check(args[0] if args else "http://127.0.0.1:8000", grpc_target)
    for p in problems:
        print(f"FAIL {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
