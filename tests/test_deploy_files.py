"""The Docker files say what the native stack says: same TorchServe config, same pins, valid compose."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from services.tfserving.compat import textproto
from services.tfserving.compat.batching import BatchingParameters
from twinserve.launchers.tfserving_config import batching_config
from twinserve.launchers import torchserve_config as config
from twinserve.settings import StackSettings

ROOT = Path(__file__).resolve().parent.parent


def test_docker_torchserve_config_is_the_rendered_one() -> None:
    expected = config.render(StackSettings(host="0.0.0.0"), Path("/artifacts/model-store"))
    assert (ROOT / "services/torchserve/config.properties").read_text() == expected


def test_docker_batching_config_matches_the_native_one() -> None:
    docker = BatchingParameters.from_textproto(textproto.parse((ROOT / "services/tfserving/batching.config").read_text()))
    native = BatchingParameters.from_textproto(textproto.parse(batching_config(StackSettings())))
    assert docker == native
    assert docker.max_execution_batch_size == StackSettings().batch_size


def test_image_requirements_use_the_project_pins() -> None:
    pins = {}
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        name, _, version = dep.partition("==")
        pins[re.sub(r"\[.*\]", "", name).lower()] = version
    for req in ("services/torchserve/requirements.txt", "services/tfserving/requirements.txt", "gateway/requirements.txt", "loadtests/requirements.txt"):
        for line in (ROOT / req).read_text().splitlines():
            line = line.split("#")[0].strip()
            if not line:
                continue
            name, _, version = line.partition("==")
            name = re.sub(r"\[.*\]", "", name).lower()
            assert name in pins, f"{req}: {name} is not a project dependency"
            assert version == pins[name], f"{req}: {name}=={version}, pyproject pins {pins[name]}"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed (make compose-smoke installs it)")
def test_compose_file_is_accepted() -> None:
    proc = subprocess.run(["docker-compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    services = subprocess.run(["docker-compose", "--profile", "loadtest", "--profile", "monitoring", "config", "--services"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert set(services) == {"export", "torchserve", "tfserving", "kserve", "gateway", "locust-master", "locust-worker", "prometheus"}


def test_compose_stacks_can_be_scaled() -> None:
    """`docker compose up --scale torchserve=N --scale tfserving=N --scale kserve=N` needs stacks without a
    fixed container name or a published port, and a gateway that reaches each stack by its service name
    (resolved to every replica's address); TORCHSERVE_REPLICAS / TFSERVING_REPLICAS / KSERVE_REPLICAS set
    deploy.replicas."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for stack, port in (("torchserve", 8080), ("tfserving", 8501), ("kserve", 8080)):
        service = services[stack]
        assert "container_name" not in service and "ports" not in service and "hostname" not in service, stack
        assert service["deploy"]["replicas"] == f"${{{stack.upper()}_REPLICAS:-1}}"
        assert services["gateway"]["environment"][f"TWINSERVE_GATEWAY_{stack.upper()}_URL"] == f"http://{stack}:{port}"
    assert services["gateway"]["environment"]["TWINSERVE_GATEWAY_TORCHSERVE_MANAGEMENT_URL"] == "http://torchserve:8081"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed (make compose-smoke installs it)")
def test_compose_replica_knobs_render() -> None:
    env = {**os.environ, "TORCHSERVE_REPLICAS": "2", "TFSERVING_REPLICAS": "3", "KSERVE_REPLICAS": "4"}
    proc = subprocess.run(["docker-compose", "config"], cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    assert services["torchserve"]["deploy"]["replicas"] == 2
    assert services["tfserving"]["deploy"]["replicas"] == 3
    assert services["kserve"]["deploy"]["replicas"] == 4


def test_compose_stacks_get_equal_limits_and_the_gateway_waits_for_each() -> None:
    """The same CPU and memory for the three stacks (x-stack-limits), the artifacts read-only, and the
    gateway started only once each stack is healthy; an empty GATEWAY_WEIGHTS default (an equal split)."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    limits = {s: (services[s]["cpus"], services[s]["mem_limit"]) for s in ("torchserve", "tfserving", "kserve")}
    assert len(set(limits.values())) == 1, limits
    assert "artifacts:/artifacts:ro" in services["kserve"]["volumes"]
    assert services["kserve"]["depends_on"]["export"]["condition"] == "service_completed_successfully"
    assert {s: d["condition"] for s, d in services["gateway"]["depends_on"].items()} == dict.fromkeys(("torchserve", "tfserving", "kserve"), "service_healthy")
    assert services["gateway"]["environment"]["TWINSERVE_GATEWAY_WEIGHTS"] == "${GATEWAY_WEIGHTS:-}"


def test_kserve_image_requirements_share_the_project_pins() -> None:
    """The kserve image has its own requirements (kserve 0.21 pins psutil<6 and protobuf 6, which the
    project's pins contradict); what it shares with the project (ONNX Runtime, numpy, ...) is pinned alike."""
    pins = {}
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        name, _, version = dep.partition("==")
        pins[re.sub(r"\[.*\]", "", name).lower()] = version
    seen = set()
    for line in (ROOT / "services/kserve/requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        name = re.sub(r"\[.*\]", "", name).lower()
        seen.add(name)
        assert version, f"services/kserve/requirements.txt: {name} is not pinned"
        if name in pins:
            assert version == pins[name], f"services/kserve/requirements.txt: {name}=={version}, pyproject pins {pins[name]}"
    assert {"kserve", "onnxruntime"} <= seen


def test_package_version_is_one_number() -> None:
    import twinserve

    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == twinserve.__version__
