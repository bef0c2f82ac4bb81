"""The Kubernetes manifests (deploy/k8s) render, are valid, and say what docker-compose.yml says.

Every kustomization (the base and each overlay) is rendered with `kubectl kustomize` (kubectl v1.32 with
kustomize v5.5 is on the machine image and CI's; no cluster is needed) and every object is validated
with kubernetes-validate against Kubernetes KUBERNETES_VERSION's schemas, strictly (an unknown field
fails). KServe's InferenceService has no schema there: it gets a structural check of its own
(apiVersion, kind, metadata, RawDeployment mode, spec.predictor.<runtime>.storageUri), and the
Kubernetes fields it embeds (the predictor's pod fields, the runtime's container fields) are validated
against the Pod schema.

Then the consistency with docker-compose.yml, read with yaml: images, container ports, the TF Serving
command and configs, probes against compose's health checks, the gateway's TWINSERVE_GATEWAY_*
environment, the stacks' equal CPU and memory limits (compose's STACK_CPUS and STACK_MEMORY defaults),
the uid, and locust's arguments. Change one of those in compose and a test here fails.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"
KUBERNETES_VERSION = "1.32"  # the kubectl on the machine image; kubernetes-validate bundles its schemas
NAMESPACE = "twinserve"
KUSTOMIZATIONS = {"base": K8S / "base", **{p.parent.name: p.parent for p in sorted((K8S / "overlays").glob("*/kustomization.yaml"))}}
STACKS = ("torchserve", "tfserving", "kserve")  # kserve: KServe's Python model server running ONNX Runtime
KSERVE_HTTP_PORT = 8080  # KServe's runtimes serve HTTP on 8080; a raw predictor Service maps port 80 to it
KSERVE_RUNTIMES = {"pytorch", "tensorflow", "sklearn", "xgboost", "onnx", "triton", "huggingface", "pmml", "lightgbm", "paddle", "model"}
KSERVE_COMPONENT_FIELDS = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType", "autoScaling", "containerConcurrency",
                           "timeout", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations", "deploymentStrategy", "workerSpec"}
KSERVE_MODEL_FIELDS = {"storageUri", "runtimeVersion", "protocolVersion", "storage", "modelFormat", "runtime"}


# ---------------------------------------------------------------- rendering and reading


@functools.cache
def render(name: str) -> tuple[dict, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not on PATH: these tests render deploy/k8s with `kubectl kustomize` "
                    "(kubectl v1.32 with kustomize v5.5 is on the project's machine image and CI's)")
    proc = subprocess.run([kubectl, "kustomize", str(KUSTOMIZATIONS[name])], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {KUSTOMIZATIONS[name].relative_to(ROOT)} failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def objects(name: str, kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in render(name) if o["kind"] == kind}


def one(name: str, kind: str, obj_name: str) -> dict:
    found = objects(name, kind)
    assert obj_name in found, f"{name}: no {kind} {obj_name} (has {sorted(found)})"
    return found[obj_name]


@functools.cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service(name: str) -> dict:
    return compose()["services"][name]


VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def default(value: object) -> str:
    """A compose value with every ${VAR:-default} replaced by its default (${VAR} by nothing)."""
    return VARIABLE.sub(lambda m: m.group(2) or "", str(value))


def compose_env(name: str) -> dict[str, str]:
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: default(v) for k, v in env.items()}


def compose_args(name: str) -> list[str]:
    command = service(name).get("command") or []
    return [default(a) for a in (shlex.split(command) if isinstance(command, str) else command)]


def compose_exposed(name: str) -> set[int]:
    return {int(str(p).split("/")[0]) for p in service(name).get("expose", [])}


def compose_published(name: str) -> set[int]:
    """The container side of each `ports:` entry."""
    return {int(default(p).rsplit(":", 1)[-1].split("/")[0]) for p in service(name).get("ports", [])}


def compose_uid() -> int:
    uids = {int(str(s["user"]).split(":")[0]) for s in compose()["services"].values() if "user" in s}
    assert len(uids) == 1, f"compose runs its services as several uids: {uids}"
    return uids.pop()


def seconds(duration: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration):
        total += float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def docker_bytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", str(size).lower()).groups()
    return int(float(number) * 1024 ** "bkmg".index(unit or "b"))


def quantity(value: object) -> float:
    number, suffix = re.fullmatch(r"(\d+(?:\.\d+)?)([a-zA-Z]*)", str(value)).groups()
    scale = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[suffix]
    return float(number) * scale


def pod_spec(obj: dict) -> dict:
    """The pod spec of a workload, or of an InferenceService's predictor (its runtime as the one container,
    or a custom predictor's own `containers`)."""
    if obj["kind"] == "InferenceService":
        predictor = obj["spec"]["predictor"]
        if "containers" in predictor:
            return {k: v for k, v in predictor.items() if k not in KSERVE_COMPONENT_FIELDS}
        runtime = next(k for k in predictor if k in KSERVE_RUNTIMES)
        container = {k: v for k, v in predictor[runtime].items() if k not in KSERVE_MODEL_FIELDS}
        pod = {k: v for k, v in predictor.items() if k not in KSERVE_COMPONENT_FIELDS and k not in KSERVE_RUNTIMES}
        return {**pod, "containers": [{"name": "kserve-container", **container}]}
    return obj["spec"]["template"]["spec"]


def pod_labels(obj: dict) -> dict:
    if obj["kind"] == "InferenceService":
        return obj["spec"]["predictor"].get("labels", {})
    return obj["spec"]["template"]["metadata"].get("labels", {})


def container(obj: dict, name: str | None = None, init: bool = False) -> dict:
    spec = pod_spec(obj)
    found = spec.get("initContainers" if init else "containers", [])
    if name is None:
        assert len(found) == 1, f"{obj['kind']}/{obj['metadata']['name']}: {len(found)} containers"
        return found[0]
    match = [c for c in found if c["name"] == name]
    assert match, f"{obj['kind']}/{obj['metadata']['name']}: no {'init ' if init else ''}container {name}"
    return match[0]


def workloads(name: str) -> list[dict]:
    return [o for o in render(name) if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "InferenceService")]


def selects(selector: dict | None, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) \
                or (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def container_ports(c: dict) -> set[int]:
    return {p["containerPort"] for p in c.get("ports", [])}


def stack_workload(name: str, stack: str) -> dict:
    """The object that runs a stack: a Deployment in the base, an InferenceService in the kserve overlay."""
    found = objects(name, "Deployment").get(stack) or objects(name, "InferenceService").get(stack)
    assert found is not None, f"{name}: nothing runs {stack}"
    return found


def main_container(obj: dict) -> dict:
    if obj["kind"] == "InferenceService":
        return container(obj, "kserve-container" if "containers" in obj["spec"]["predictor"] else None)
    return container(obj, obj["metadata"]["name"])


def storage_uri(obj: dict) -> str:
    """An InferenceService's model location: its runtime's storageUri, or a custom predictor's STORAGE_URI."""
    predictor = obj["spec"]["predictor"]
    if "containers" in predictor:
        return next((e.get("value", "") for e in main_container(obj).get("env", []) if e["name"] == "STORAGE_URI"), "")
    return predictor[next(k for k in predictor if k in KSERVE_RUNTIMES)].get("storageUri", "")


# ---------------------------------------------------------------- rendering and schemas


def test_every_kustomization_is_found() -> None:
    assert set(KUSTOMIZATIONS) >= {"base", "loadtest", "kserve"}, sorted(KUSTOMIZATIONS)


@functools.cache
def _validator():
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is not installed: pip install the project's test extra (kubernetes-validate==1.37.0)")
    return kubernetes_validate


@functools.cache
def _validate(text: str) -> str:
    """'' when the object (as JSON) is valid for KUBERNETES_VERSION, else the reason. Cached: the base's
    objects come back in every overlay."""
    kv = _validator()
    obj = json.loads(text)
    try:
        kv.validate(obj, KUBERNETES_VERSION, strict=True)
    except kv.ValidationError as exc:
        return f"{exc.message} at {'/'.join(map(str, exc.absolute_path)) or '/'}"
    except kv.SchemaNotFoundError as exc:
        return exc.message
    return ""


def check_inference_service(obj: dict) -> list[str]:
    """KServe's InferenceService, for which kubernetes-validate has no schema: its shape, the mode, one
    runtime with a pvc:// storageUri, and its embedded pod and container fields against the Pod schema."""
    problems = []
    meta = obj.get("metadata", {})
    if obj.get("apiVersion") != "serving.kserve.io/v1beta1" or obj.get("kind") != "InferenceService":
        problems.append(f"apiVersion/kind {obj.get('apiVersion')}/{obj.get('kind')}")
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,43}[a-z0-9])?", meta.get("name", "")):
        problems.append(f"name {meta.get('name')!r} is no DNS-1035 label of at most 45 characters")
    if meta.get("annotations", {}).get("serving.kserve.io/deploymentMode") != "RawDeployment":
        problems.append("not annotated serving.kserve.io/deploymentMode: RawDeployment")
    spec = obj.get("spec", {})
    if set(spec) - {"predictor", "transformer", "explainer"}:
        problems.append(f"unknown spec fields {sorted(set(spec) - {'predictor', 'transformer', 'explainer'})}")
    predictor = spec.get("predictor", {})
    runtimes = [k for k in predictor if k in KSERVE_RUNTIMES]
    if "containers" in predictor:
        # a custom predictor: its own containers, the server in `kserve-container` (KServe mounts the
        # storage at /mnt/models from that container's STORAGE_URI)
        if runtimes:
            problems.append(f"a custom predictor with a runtime too: {runtimes}")
        if [c.get("name") for c in predictor["containers"]][:1] != ["kserve-container"]:
            problems.append("a custom predictor's first container must be named kserve-container")
        uri, where = storage_uri(obj), "kserve-container's STORAGE_URI"
    else:
        if len(runtimes) != 1:
            return [*problems, f"predictor needs exactly one runtime, has {runtimes}"]
        model = predictor[runtimes[0]]
        uri, where = str(model.get("storageUri", "")), f"spec.predictor.{runtimes[0]}.storageUri"
        if model.get("protocolVersion", "v1") not in ("v1", "v2", "grpc-v1", "grpc-v2"):
            problems.append(f"protocolVersion {model.get('protocolVersion')!r}")
    if not re.fullmatch(r"pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/[^\s]+", uri):
        problems.append(f"{where} {uri!r} is not pvc://<claim>/<path>")
    for key in ("minReplicas", "maxReplicas"):
        if key in predictor and not isinstance(predictor[key], int):
            problems.append(f"{key} is not an integer")
    if not isinstance(predictor.get("labels", {}), dict):
        problems.append("predictor.labels is not a map")
    spec = pod_spec(obj)
    spec["containers"][0].setdefault("image", "kserve-runtime-image")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": meta.get("name", "x"), "namespace": NAMESPACE}, "spec": spec}
    reason = _validate(json.dumps(pod, sort_keys=True))
    if reason:
        problems.append(f"embedded pod/container fields: {reason}")
    return problems


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_object_is_valid(name: str) -> None:
    problems = []
    for obj in render(name):
        ident = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if str(obj.get("apiVersion", "")).startswith("serving.kserve.io/"):
            problems += [f"{ident}: {p}" for p in check_inference_service(obj)]
            continue
        reason = _validate(json.dumps(obj, sort_keys=True))
        if reason:
            problems.append(f"{ident}: {reason}")
    assert not problems, f"{name} is not valid Kubernetes {KUBERNETES_VERSION}:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_everything_lives_in_one_namespace_and_selectors_select(name: str) -> None:
    for obj in render(name):
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']} is outside namespace {NAMESPACE}"
    assert one(name, "Namespace", NAMESPACE)
    pods = [pod_labels(w) for w in workloads(name)]
    for obj in objects(name, "Deployment").values():
        assert selects(obj["spec"]["selector"], pod_labels(obj)), f"Deployment/{obj['metadata']['name']} selects not its own pods"
    for svc in objects(name, "Service").values():
        assert any(selects({"matchLabels": svc["spec"]["selector"]}, labels) for labels in pods), f"Service/{svc['metadata']['name']} selects no pod"


# ---------------------------------------------------------------- TF Serving's configs


def _sync_script():
    spec = importlib.util.spec_from_file_location("sync_tfserving_config", K8S / "sync_tfserving_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tfserving_config_copies_are_the_services_files() -> None:
    stale = _sync_script().stale()
    assert not stale, f"{[str(p.relative_to(ROOT)) for p in stale]} differ from services/tfserving/: run python deploy/k8s/sync_tfserving_config.py"


def _config_map(name: str, obj: dict) -> dict:
    """The ConfigMap mounted at /config in a TF Serving pod."""
    spec = pod_spec(obj)
    mount = next(m for m in main_container(obj)["volumeMounts"] if m["mountPath"] == "/config")
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    return one(name, "ConfigMap", volume["configMap"]["name"])


def test_tfserving_configs_are_what_compose_mounts() -> None:
    mounts = {}
    for volume in service("tfserving")["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = (ROOT / source).read_text()
    assert mounts, "compose mounts no TF Serving config"
    data = _config_map("base", one("base", "Deployment", "tfserving"))["data"]
    assert {f"/config/{key}" for key in data} == set(mounts), "the base's ConfigMap at /config holds other files than compose mounts there"
    for target, text in mounts.items():
        assert data[Path(target).name] == text, f"the base's {Path(target).name} differs from what compose mounts at {target}"
    # KServe: the same, with the model base paths under KServe's /mnt/models
    kserve = _config_map("kserve", one("kserve", "InferenceService", "tfserving"))["data"]
    for target, text in mounts.items():
        key = Path(target).name
        expected = _sync_script().kserve_models_config(text) if key == "models.config" else text
        assert kserve[key] == expected, f"the kserve overlay's {key} is not compose's (paths under /mnt/models)"
    names = re.findall(r'name:\s*"([^"]+)"', mounts["/config/models.config"])
    assert re.findall(r'base_path:\s*"([^"]+)"', kserve["models.config"]) == [f"/mnt/models/{n}" for n in names]


# ---------------------------------------------------------------- images, commands, ports


def test_images_are_composes() -> None:
    pairs = [
        (container(one("base", "Deployment", "torchserve"), "torchserve"), "torchserve"),
        (container(one("base", "Deployment", "torchserve"), "export", init=True), "export"),
        (container(one("base", "Deployment", "tfserving"), "tfserving"), "tfserving"),
        (container(one("base", "Deployment", "tfserving"), "export", init=True), "export"),
        (container(one("base", "Deployment", "gateway"), "gateway"), "gateway"),
        (container(one("loadtest", "Job", "locust-master")), "locust-master"),
        (container(one("loadtest", "Job", "locust-worker")), "locust-worker"),
        (container(one("kserve", "Job", "models-export")), "export"),
        (main_container(one("kserve", "InferenceService", "torchserve")), "torchserve"),
        (container(one("base", "Deployment", "kserve"), "kserve"), "kserve"),
        (container(one("base", "Deployment", "kserve"), "export", init=True), "export"),
        (main_container(one("kserve", "InferenceService", "kserve")), "kserve"),
    ]
    for c, name in pairs:
        assert c["image"] == default(service(name)["image"]), f"{c['name']} runs {c['image']}, compose's {name} {default(service(name)['image'])}"
        assert c.get("imagePullPolicy") == "IfNotPresent", f"{c['name']}: the :local images are never pulled"
    # KServe's TF Serving runtime picks the official image by runtimeVersion: compose's tag
    tf = one("kserve", "InferenceService", "tfserving")["spec"]["predictor"]["tensorflow"]
    image, _, tag = default(service("tfserving")["image"]).rpartition(":")
    assert image == "tensorflow/serving" and tf["runtimeVersion"] == tag


def test_commands_are_composes() -> None:
    tf = container(one("base", "Deployment", "tfserving"), "tfserving")
    entrypoint = service("tfserving").get("entrypoint")
    assert tf.get("command") == ([entrypoint] if isinstance(entrypoint, str) else entrypoint)
    assert tf.get("args") == compose_args("tfserving"), "TF Serving's flags differ from compose's"
    # KServe's runtime owns the ports and appends these: every other flag of compose's
    kserve_tf = main_container(one("kserve", "InferenceService", "tfserving"))
    assert kserve_tf["args"] == [a for a in compose_args("tfserving") if not a.startswith(("--port=", "--rest_api_port="))]
    # TorchServe and the export run their images' own commands, as compose does
    for name in STACKS:
        obj = one("base", "Deployment", name)
        export = container(obj, "export", init=True)
        assert "command" not in export and "args" not in export and "command" not in service("export")
        if name == "torchserve":
            assert "command" not in container(obj, name) and "args" not in container(obj, name) and "command" not in service(name)
    # KServe: the image's entrypoint, compose's command as its args (in the overlay, on KServe's mount)
    ks = container(one("base", "Deployment", "kserve"), "kserve")
    assert "command" not in ks and "entrypoint" not in service("kserve") and ks.get("args") == compose_args("kserve")
    args = compose_args("kserve")
    at = args.index("--model_dir") + 1
    mounted = [*args[:at], "/mnt/models", *args[at + 1:]]
    assert main_container(one("kserve", "InferenceService", "kserve")).get("args") == mounted, "the kserve predictor's args are not compose's on /mnt/models"


def test_artifacts_are_mounted_where_compose_mounts_them() -> None:
    def compose_mount(name: str) -> tuple[str, bool]:
        volume = next(v for v in service(name)["volumes"] if v.split(":")[0] == "artifacts")
        parts = volume.split(":")
        return parts[1], parts[2:] == ["ro"]

    for stack in STACKS:
        obj = one("base", "Deployment", stack)
        for c, name in ((container(obj, stack), stack), (container(obj, "export", init=True), "export")):
            path, read_only = compose_mount(name)
            mount = next((m for m in c["volumeMounts"] if m["mountPath"] == path), None)
            assert mount is not None, f"{stack}/{c['name']} does not mount the artifacts at {path}"
            assert bool(mount.get("readOnly")) == read_only, f"{stack}/{c['name']}: artifacts read-only {mount.get('readOnly')}, compose {read_only}"
        shared = {m["name"] for m in container(obj, stack)["volumeMounts"] if m["mountPath"] == compose_mount(stack)[0]}
        assert shared == {m["name"] for m in container(obj, "export", init=True)["volumeMounts"] if m["mountPath"] == compose_mount("export")[0]}
        volume = next(v for v in obj["spec"]["template"]["spec"]["volumes"] if v["name"] in shared)
        assert "emptyDir" in volume, "the base's artifacts are an emptyDir filled by the init container"


def test_ports_are_composes() -> None:
    for stack in STACKS:
        c = container(one("base", "Deployment", stack), stack)
        assert container_ports(c) == compose_exposed(stack), f"{stack} listens on {container_ports(c)}, compose exposes {compose_exposed(stack)}"
        for svc_name in (stack, f"{stack}-headless"):
            svc = one("base", "Service", svc_name)
            assert {p["port"] for p in svc["spec"]["ports"]} == compose_exposed(stack), f"Service {svc_name}"
            named = {p["name"]: p["containerPort"] for p in c["ports"]}
            for p in svc["spec"]["ports"]:
                assert named.get(p["targetPort"], p["targetPort"]) == p["port"], f"Service {svc_name} port {p['port']} reaches another container port"
        assert one("base", "Service", f"{stack}-headless")["spec"]["clusterIP"] == "None"
    gateway = container(one("base", "Deployment", "gateway"), "gateway")
    assert container_ports(gateway) == compose_published("gateway")
    assert {p["port"] for p in one("base", "Service", "gateway")["spec"]["ports"]} == compose_published("gateway")
    # KServe: TorchServe's three ports, 8080 first (the predictor Service's port 80)
    ts = main_container(one("kserve", "InferenceService", "torchserve"))
    assert container_ports(ts) == compose_exposed("torchserve") and ts["ports"][0]["containerPort"] == KSERVE_HTTP_PORT
    # compose's kserve command names the ports it exposes
    args = compose_args("kserve")
    assert {int(args[args.index(f) + 1]) for f in ("--http_port", "--grpc_port")} == compose_exposed("kserve")
    # ... and KServe's own server: compose's REST and gRPC ports, REST first (the predictor Service's port 80)
    ks = main_container(one("kserve", "InferenceService", "kserve"))
    assert container_ports(ks) == compose_exposed("kserve") and ks["ports"][0]["containerPort"] == KSERVE_HTTP_PORT


# ---------------------------------------------------------------- probes


def _healthcheck(name: str) -> dict:
    check = service(name)["healthcheck"]
    assert check["test"][0] == "CMD", f"compose's {name} health check is not an exec form"
    return check


def _probe_timing(probe: dict, check: dict, what: str) -> None:
    assert probe.get("periodSeconds") == seconds(check["interval"]), f"{what}: period {probe.get('periodSeconds')}, compose's interval {check['interval']}"
    assert probe.get("timeoutSeconds") == seconds(check["timeout"]), f"{what}: timeout {probe.get('timeoutSeconds')}, compose's {check['timeout']}"


def test_torchserve_probes_are_composes_health_check() -> None:
    check = _healthcheck("torchserve")
    inference = urlsplit(compose_env("gateway")["TWINSERVE_GATEWAY_TORCHSERVE_URL"].split(",")[0]).port
    for obj in (one("base", "Deployment", "torchserve"), one("kserve", "InferenceService", "torchserve")):
        c = main_container(obj)
        what = f"{obj['kind']}/torchserve"
        assert c["readinessProbe"]["exec"]["command"] == check["test"][1:], f"{what}: readiness is not compose's health check"
        _probe_timing(c["readinessProbe"], check, what)
        for kind in ("livenessProbe", "startupProbe"):
            assert c[kind]["httpGet"] == {"path": "/ping", "port": inference}, f"{what}: {kind} is not /ping on the inference port {inference}"
        assert inference in container_ports(c)


def test_tfserving_probes_are_composes_health_check() -> None:
    check = _healthcheck("tfserving")
    port = int(re.search(r"/dev/tcp/[^/\s]+/(\d+)", " ".join(check["test"])).group(1))
    rest = next(int(a.split("=", 1)[1]) for a in compose_args("tfserving") if a.startswith("--rest_api_port="))
    assert port == rest, "compose's TF Serving health check is not on its REST port"
    models = re.findall(r'name:\s*"([^"]+)"', (ROOT / "services/tfserving/models.config").read_text())
    for obj, expected in ((one("base", "Deployment", "tfserving"), port), (one("kserve", "InferenceService", "tfserving"), KSERVE_HTTP_PORT)):
        c = main_container(obj)
        what = f"{obj['kind']}/tfserving"
        ready = c["readinessProbe"]["httpGet"]
        assert ready["port"] == expected and re.fullmatch(r"/v1/models/([^/:]+)", ready["path"]).group(1) in models, f"{what}: readiness {ready}"
        _probe_timing(c["readinessProbe"], check, what)
        for kind in ("livenessProbe", "startupProbe"):
            assert c[kind]["tcpSocket"]["port"] == expected, f"{what}: {kind} is not a connect to the REST port {expected}"


def test_kserve_probes_are_composes_health_check() -> None:
    check = _healthcheck("kserve")
    rest = urlsplit(compose_env("gateway")["TWINSERVE_GATEWAY_KSERVE_URL"].split(",")[0]).port
    assert f"http://127.0.0.1:{rest}/v1/models/" in " ".join(check["test"]), "compose's KServe health check is not V1 readiness on the gateway's port"
    models = re.findall(r'name:\s*"([^"]+)"', (ROOT / "services/tfserving/models.config").read_text())
    assert re.search(r"for m in \(([^)]*)\)", " ".join(check["test"])).group(1).replace("'", "").replace(" ", "").split(",") == models, \
        "compose's KServe health check does not ask every model the stacks serve"
    for obj in (one("base", "Deployment", "kserve"), one("kserve", "InferenceService", "kserve")):
        c = main_container(obj)
        what = f"{obj['kind']}/kserve"
        assert c["readinessProbe"]["exec"]["command"] == check["test"][1:], f"{what}: readiness is not compose's health check"
        _probe_timing(c["readinessProbe"], check, what)
        for kind in ("livenessProbe", "startupProbe"):
            assert c[kind]["httpGet"] == {"path": "/", "port": rest}, f"{what}: {kind} is not KServe's liveness (GET /) on {rest}"
        assert rest in container_ports(c)


def test_gateway_probes_are_composes_health_check() -> None:
    check = _healthcheck("gateway")
    port, path = re.search(r"http://[^/:'\"]+:(\d+)(/[\w/]+)", " ".join(check["test"])).groups()
    c = container(one("base", "Deployment", "gateway"), "gateway")
    assert c["readinessProbe"]["httpGet"] == {"path": path, "port": int(port)}
    _probe_timing(c["readinessProbe"], check, "gateway")
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": int(port)}


# ---------------------------------------------------------------- the gateway's environment


URL_SETTINGS = ("TWINSERVE_GATEWAY_TORCHSERVE_URL", "TWINSERVE_GATEWAY_TORCHSERVE_MANAGEMENT_URL", "TWINSERVE_GATEWAY_TFSERVING_URL", "TWINSERVE_GATEWAY_KSERVE_URL")


def _gateway_env(name: str) -> dict[str, dict]:
    c = container(one(name, "Deployment", "gateway"), "gateway")
    return {e["name"]: e for e in c.get("env", [])}


def _urls(value: str) -> list:
    return [urlsplit(u.strip()) for u in value.split(",") if u.strip()]


def _check_base_url(setting: str, compose_url, k8s_url) -> None:
    """compose http://torchserve:8080 -> http://<headless Service of the torchserve pods>:8080."""
    assert (k8s_url.scheme, k8s_url.port, k8s_url.path) == (compose_url.scheme, compose_url.port, compose_url.path), f"{setting}: {k8s_url.geturl()} vs compose's {compose_url.geturl()}"
    svc = one("base", "Service", k8s_url.hostname)
    assert svc["spec"].get("clusterIP") == "None", f"{setting}: {k8s_url.hostname} is not a headless Service (the gateway must see every pod)"
    assert compose_url.port in {p["port"] for p in svc["spec"]["ports"]}, f"{setting}: Service {k8s_url.hostname} has no port {compose_url.port}"
    assert selects({"matchLabels": svc["spec"]["selector"]}, pod_labels(one("base", "Deployment", compose_url.hostname))), \
        f"{setting}: Service {k8s_url.hostname} does not select the {compose_url.hostname} pods"


def _check_kserve_url(setting: str, compose_url, k8s_url) -> None:
    """compose http://torchserve:8081 -> http://torchserve-predictor:8081; compose's 8080/8501 -> port 80 (KServe's 8080)."""
    isvc = one("kserve", "InferenceService", compose_url.hostname)
    assert k8s_url.hostname == f"{isvc['metadata']['name']}-predictor", f"{setting}: {k8s_url.hostname} is not the {compose_url.hostname} predictor's Service"
    assert (k8s_url.scheme, k8s_url.path) == (compose_url.scheme, compose_url.path)
    c = main_container(isvc)
    ports = [p["containerPort"] for p in c.get("ports", [])] or [KSERVE_HTTP_PORT]
    target = ports[0] if k8s_url.port in (None, 80) else k8s_url.port
    assert target in ports, f"{setting}: the {compose_url.hostname} predictor's Service has no port {k8s_url.port}"
    # the same server behind it: compose's port where KServe keeps it, else the runtime's HTTP port
    assert target == (compose_url.port if compose_url.port in ports else KSERVE_HTTP_PORT), f"{setting}: reaches container port {target}"


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_gateway_environment_is_composes(name: str) -> None:
    env = _gateway_env(name)
    wanted = {k: v for k, v in compose_env("gateway").items() if k.startswith("TWINSERVE_GATEWAY_")}
    assert wanted, "compose sets no TWINSERVE_GATEWAY_* for the gateway"
    for key, value in wanted.items():
        assert key in env, f"{name}: the gateway lacks {key} (compose sets it)"
        if key in URL_SETTINGS:
            ours, theirs = _urls(env[key].get("value", "")), _urls(value)
            assert len(ours) == len(theirs), f"{name}: {key}={env[key].get('value')}, compose {value}"
            for compose_url, k8s_url in zip(theirs, ours):
                (_check_kserve_url if name == "kserve" else _check_base_url)(key, compose_url, k8s_url)
        elif key == "TWINSERVE_GATEWAY_API_KEYS" and "valueFrom" in env[key]:
            ref = env[key]["valueFrom"]["secretKeyRef"]
            assert value == "" and ref.get("optional") is True, f"{name}: API keys from a Secret must be optional while compose's default is {value!r}"
        else:
            assert env[key].get("value") == value, f"{name}: {key}={env[key].get('value')!r}, compose's default {value!r}"
    assert env["TWINSERVE_GATEWAY_HOST"].get("value") == "0.0.0.0"
    interval = env.get("TWINSERVE_GATEWAY_RESOLVE_INTERVAL_S", {}).get("value")
    assert interval is not None and float(interval) > 0, f"{name}: TWINSERVE_GATEWAY_RESOLVE_INTERVAL_S, how often the stacks' pods are looked up again"


# ---------------------------------------------------------------- resources, users, file systems


@pytest.mark.parametrize("name", ["base", "kserve"])
def test_every_stack_gets_composes_limits(name: str) -> None:
    limits = {stack: (float(default(service(stack)["cpus"])), docker_bytes(default(service(stack)["mem_limit"]))) for stack in STACKS}
    assert len(set(limits.values())) == 1, f"compose gives the stacks different limits: {limits}"
    cpus, memory = limits["torchserve"]
    for stack in STACKS:
        obj = stack_workload(name, stack)
        containers = [main_container(obj)] + [c for c in pod_spec(obj).get("initContainers", []) if c["name"] == "export"]
        for c in containers:
            res = c["resources"]
            what = f"{name}: {stack}/{c['name']}"
            assert res["requests"] == res["limits"], f"{what}: requests differ from limits"
            assert quantity(res["limits"]["cpu"]) == cpus, f"{what}: cpu {res['limits']['cpu']}, compose's STACK_CPUS default {cpus}"
            assert quantity(res["limits"]["memory"]) == memory, f"{what}: memory {res['limits']['memory']}, compose's STACK_MEMORY default {memory} bytes"


def test_stacks_start_with_composes_replicas() -> None:
    for stack in STACKS:
        replicas = int(default(service(stack).get("deploy", {}).get("replicas", 1)))
        assert one("base", "Deployment", stack)["spec"]["replicas"] == replicas, f"base: {stack} replicas, compose's default {replicas}"
        predictor = one("kserve", "InferenceService", stack)["spec"]["predictor"]
        assert predictor["minReplicas"] == predictor["maxReplicas"] == replicas, f"kserve: {stack} replicas, compose's default {replicas}"


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_container_runs_as_composes_uid_without_privileges(name: str) -> None:
    uid = compose_uid()
    for obj in workloads(name):
        spec = pod_spec(obj)
        pod = spec.get("securityContext", {})
        where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
        assert spec.get("automountServiceAccountToken") is False, f"{where}: mounts a service account token"
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: no RuntimeDefault seccomp profile"
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = {**pod, **c.get("securityContext", {})}
            what = f"{where}/{c['name']}"
            assert sc.get("runAsUser") == uid and sc.get("runAsNonRoot") is True, f"{what}: not uid {uid} (compose's) and non-root"
            assert sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities", {}).get("drop") == ["ALL"], f"{what}: keeps privileges"
            assert sc.get("readOnlyRootFilesystem") is True, f"{what}: writable root file system"
            if c["name"] != "wait-for-models":
                assert "/tmp" in {m["mountPath"] for m in c.get("volumeMounts", [])}, f"{what}: no writable /tmp"


def test_torchserve_writable_paths_are_the_images() -> None:
    """The image's TEMP, LOG_LOCATION and working directory are writable emptyDirs."""
    dockerfile = (ROOT / "services/torchserve/Dockerfile").read_text().split("FROM runtime AS export")[0]
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(line for line in dockerfile.splitlines() if line.startswith("ENV "))))
    workdir = re.findall(r"^WORKDIR\s+(\S+)", dockerfile, re.M)[-1]
    needed = {env["TEMP"], env["LOG_LOCATION"], env["METRICS_LOCATION"], workdir}
    for obj in (one("base", "Deployment", "torchserve"), one("kserve", "InferenceService", "torchserve")):
        spec, c = pod_spec(obj), main_container(obj)
        empty = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        writable = {m["mountPath"] for m in c["volumeMounts"] if m["name"] in empty and not m.get("readOnly")}
        for path in needed:
            assert any(path == w or path.startswith(w.rstrip("/") + "/") for w in writable), f"{obj['kind']}/torchserve: {path} is not writable"


# ---------------------------------------------------------------- gateway scaling, network policies


def test_gateway_scales_on_cpu_and_keeps_a_replica_through_disruptions() -> None:
    deployment = one("base", "Deployment", "gateway")
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the gateway's replicas"
    hpa = one("base", "HorizontalPodAutoscaler", "gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert [(m["type"], m["resource"]["name"]) for m in hpa["spec"]["metrics"]] == [("Resource", "cpu")]
    assert "cpu" in container(deployment, "gateway")["resources"]["requests"], "CPU utilisation needs a CPU request"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    pdb = one("base", "PodDisruptionBudget", "gateway")
    assert selects(pdb["spec"]["selector"], pod_labels(deployment))
    assert 1 <= pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def _ingress(name: str, labels: dict) -> list[tuple[list | None, set[int]]]:
    """(from, ports) of every ingress rule that applies to pods with these labels."""
    rules = []
    for policy in objects(name, "NetworkPolicy").values():
        spec = policy["spec"]
        if "Ingress" in spec.get("policyTypes", ["Ingress"]) and selects(spec["podSelector"], labels):
            for rule in spec.get("ingress", []):
                rules.append((rule.get("from"), {p["port"] for p in rule.get("ports", [])}))
    return rules


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_network_policies_let_only_the_gateway_reach_the_stacks(name: str) -> None:
    policies = objects(name, "NetworkPolicy").values()
    assert any(p["spec"]["podSelector"] == {} and p["spec"].get("policyTypes") == ["Ingress"] and not p["spec"].get("ingress") for p in policies), \
        f"{name}: no default deny of ingress"
    gateway = pod_labels(one(name, "Deployment", "gateway"))
    env = _gateway_env(name)
    for stack in STACKS:
        labels = pod_labels(stack_workload(name, stack))
        used = set()
        for key in URL_SETTINGS:
            for url in _urls(env[key]["value"]):
                if url.hostname.startswith(stack):
                    port = url.port or 80
                    used.add(main_container(stack_workload(name, stack))["ports"][0]["containerPort"] if port == 80 else port)
        rules = _ingress(name, labels)
        allowed = set()
        for sources, ports in rules:
            assert sources, f"{name}: {stack} takes connections from anywhere"
            for source in sources:
                assert set(source) == {"podSelector"} and selects(source["podSelector"], gateway), f"{name}: {stack} takes connections from {source}"
            assert ports, f"{name}: {stack} is open on every port to {sources}"
            allowed |= ports
        assert allowed == used, f"{name}: the gateway may reach {stack} on {sorted(allowed)}, and uses {sorted(used)}"
    open_rules = [ports for sources, ports in _ingress(name, gateway) if not sources]
    assert open_rules and set().union(*open_rules) == compose_published("gateway"), f"{name}: the gateway is not open on {compose_published('gateway')}"
    # nothing else is reachable, but the locust master from its workers
    for obj in workloads(name):
        labels = pod_labels(obj)
        if obj["metadata"]["name"] in (*STACKS, "gateway"):
            continue
        for sources, ports in _ingress(name, labels):
            assert obj["metadata"]["name"] == "locust-master", f"{name}: {obj['kind']}/{obj['metadata']['name']} takes connections"
            worker = pod_labels(one(name, "Job", "locust-worker"))
            assert sources and all(selects(s.get("podSelector"), worker) for s in sources) and ports == {5557}


def test_the_stacks_send_nothing_but_dns() -> None:
    for name in ("base", "kserve"):
        for stack in STACKS:
            labels = pod_labels(stack_workload(name, stack))
            egress = [p["spec"] for p in objects(name, "NetworkPolicy").values() if "Egress" in p["spec"].get("policyTypes", []) and selects(p["spec"]["podSelector"], labels)]
            assert egress, f"{name}: {stack}'s egress is not restricted"
            ports = {(port["port"], port.get("protocol", "TCP")) for spec in egress for rule in spec.get("egress", []) for port in rule.get("ports", [])}
            assert ports == {(53, "UDP"), (53, "TCP")}, f"{name}: {stack} may send to {ports}"


# ---------------------------------------------------------------- load test


def test_locust_runs_composes_load() -> None:
    master, worker = one("loadtest", "Job", "locust-master"), one("loadtest", "Job", "locust-worker")
    for job, name in ((master, "locust-master"), (worker, "locust-worker")):
        c = container(job)
        assert c["args"] == compose_args(name), f"{name}'s arguments differ from compose's command"
        assert {e["name"]: e["value"] for e in c.get("env", [])} == compose_env(name), f"{name}'s environment differs from compose's"
    args = dict(a.lstrip("-").split("=", 1) for a in compose_args("locust-master") if "=" in a)
    assert worker["spec"]["parallelism"] == worker["spec"]["completions"] == int(args["expect-workers"])
    host = urlsplit(args["host"])
    assert host.port in {p["port"] for p in one("loadtest", "Service", host.hostname)["spec"]["ports"]}, "--host is not the gateway's Service"
    master_host = next(a.split("=", 1)[1] for a in compose_args("locust-worker") if a.startswith("--master-host="))
    svc = one("loadtest", "Service", master_host)
    assert selects({"matchLabels": svc["spec"]["selector"]}, pod_labels(master)) and 5557 in {p["port"] for p in svc["spec"]["ports"]}
    assert 5557 in container_ports(container(master))
    # the base stays lean: no load generator in it
    assert not [o for o in render("base") if "locust" in o["metadata"]["name"]]


# ---------------------------------------------------------------- KServe


def test_kserve_overlay_replaces_the_stacks_with_inference_services() -> None:
    names = {(o["kind"], o["metadata"]["name"]) for o in render("kserve")}
    for stack in STACKS:
        for kind, obj_name in (("Deployment", stack), ("Service", stack), ("Service", f"{stack}-headless")):
            assert (kind, obj_name) not in names, f"kserve still has the base's {kind} {obj_name}"
    isvcs = objects("kserve", "InferenceService")
    assert set(isvcs) == set(STACKS)
    runtimes = {n: next((k for k in o["spec"]["predictor"] if k in KSERVE_RUNTIMES), "containers") for n, o in isvcs.items()}
    assert runtimes == {"torchserve": "pytorch", "tfserving": "tensorflow", "kserve": "containers"}
    claim = one("kserve", "PersistentVolumeClaim", "twinserve-models")["metadata"]["name"]
    for stack, runtime in runtimes.items():
        if runtime != "containers":
            model = isvcs[stack]["spec"]["predictor"][runtime]
            assert model["storageUri"] == f"pvc://{claim}/{stack}" and model["protocolVersion"] == "v1"
    # KServe's own server: a custom predictor (twinserve's image) on the export's ONNX folder, which
    # KServe mounts at /mnt/models; the server's --model_dir is that mount
    assert storage_uri(isvcs["kserve"]) == f"pvc://{claim}/onnx"
    args = main_container(isvcs["kserve"]).get("args", [])
    assert args[args.index("--model_dir") + 1] == "/mnt/models"
    # the Job fills the claim where the storageUris point, in the layout KServe's TorchServe runtime reads
    job = one("kserve", "Job", "models-export")
    spec = pod_spec(job)
    mount = next(m for m in container(job)["volumeMounts"] if any(v["name"] == m["name"] and v.get("persistentVolumeClaim", {}).get("claimName") == claim for v in spec["volumes"]))
    script = " ".join(container(job)["args"])
    models = ",".join(re.findall(r'name:\s*"([^"]+)"', (ROOT / "services/tfserving/models.config").read_text()))
    export_cmd = f"twinserve export --models {models} --out {mount['mountPath']}"
    assert export_cmd in script, f"the Job does not run `{export_cmd}`"
    assert f"{mount['mountPath']}/torchserve/model-store/" in script and f"{mount['mountPath']}/torchserve/config/config.properties" in script
    # ... and the torchserve and kserve predictors wait for the file the Job writes last (after the export)
    for stack in ("torchserve", "kserve"):
        wait = container(isvcs[stack], "wait-for-models", init=True)
        assert "/models/torchserve/config/config.properties" in " ".join(wait["command"]), stack
    # the tfserving predictor's ConfigMap is the generated one (kustomizeconfig.yaml renames it)
    assert _config_map("kserve", isvcs["tfserving"])["metadata"]["name"].startswith("tfserving-config-")
