"""One TensorFlow release end to end (issue #20): everything follows services/tfserving/release.py.

A SavedModel written by a newer TensorFlow than the server's runtime is not guaranteed to load, and
the compose path with the official image cannot be tried here, so the versions must agree by
construction: the compose default image's tag, the installed tensorflow and tensorflow-serving-api
(the TensorFlow that writes the SavedModels and runs the compatible server) and every pin of them
in the project's files. No server and no TensorFlow import: this runs in well under a second.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from services.tfserving.release import TF_SERVING_RELEASE, major_minor

ROOT = Path(__file__).resolve().parent.parent
DISTS = ("tensorflow", "tensorflow-serving-api")
PIN = re.compile(r"(?<![\w.-])(tensorflow(?:-cpu|-serving-api)?)==([\w.+-]+)")
IMAGE_TAG = re.compile(r"tensorflow/serving:([\w.-]+)")
PINNED_FILES = ("pyproject.toml", "services/tfserving/requirements.txt", "services/torchserve/Dockerfile")


def test_the_release_is_a_tf_serving_release_number() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", TF_SERVING_RELEASE), TF_SERVING_RELEASE


def test_compose_defaults_to_the_release_image() -> None:
    image = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["tfserving"]["image"]
    m = re.fullmatch(r"\$\{TFSERVING_IMAGE:-tensorflow/serving:([\w.-]+)\}", image)
    assert m, f"docker-compose.yml: tfserving.image {image!r} is not ${{TFSERVING_IMAGE:-tensorflow/serving:<tag>}}"
    assert m.group(1) == TF_SERVING_RELEASE, (
        f"docker-compose.yml defaults to tensorflow/serving:{m.group(1)}, the project targets {TF_SERVING_RELEASE} "
        "(services/tfserving/release.py)"
    )


@pytest.mark.parametrize("dist", DISTS)
def test_installed_packages_are_of_the_release(dist: str) -> None:
    installed = metadata.version(dist)
    assert major_minor(installed) == major_minor(TF_SERVING_RELEASE), (
        f"installed {dist} {installed}, the project targets TF Serving {TF_SERVING_RELEASE} "
        "(services/tfserving/release.py): reinstall (`make setup`) or move every pin together"
    )


def test_pyproject_pins_the_release() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(m.groups() for d in deps if (m := PIN.fullmatch(d.strip())))
    assert pins == {dist: TF_SERVING_RELEASE for dist in DISTS}, f"pyproject.toml pins {pins}, expected {TF_SERVING_RELEASE}"


@pytest.mark.parametrize("rel", PINNED_FILES)
def test_each_file_pins_both_packages_at_the_release(rel: str) -> None:
    pins = PIN.findall((ROOT / rel).read_text())
    assert {name for name, _ in pins} == set(DISTS), f"{rel}: expected pins of {DISTS}, found {pins}"
    wrong = [f"{name}=={v}" for name, v in pins if v != TF_SERVING_RELEASE]
    assert not wrong, f"{rel} pins {wrong}; the project targets {TF_SERVING_RELEASE} (services/tfserving/release.py)"


def _tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return [p for f in out.split("\0") if f and (p := ROOT / f).is_file() and p.stat().st_size < 2_000_000]


def test_no_other_tensorflow_version_anywhere() -> None:
    """Any other file that pins tensorflow or names a tensorflow/serving image (the README's compose
    table, a new Dockerfile, the CI script) names the release too."""
    wrong = []
    for path in _tracked_files():
        text = path.read_bytes().decode(errors="replace")
        rel = path.relative_to(ROOT).as_posix()
        wrong += [f"{rel}: {name}=={v}" for name, v in PIN.findall(text) if v != TF_SERVING_RELEASE]
        wrong += [f"{rel}: tensorflow/serving:{tag}" for tag in IMAGE_TAG.findall(text) if tag != TF_SERVING_RELEASE]
    assert not wrong, f"the project targets TF Serving {TF_SERVING_RELEASE} (services/tfserving/release.py); these differ: {wrong}"
