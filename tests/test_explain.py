"""Explanations from both stacks: they agree, each is complete, bad requests are 400s."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import torch

from models import explain as ig
from models.export import Artifacts, load_torch_model_from_mar
from models.spec import SPECS

# Gauss-Legendre with 64 nodes on a piecewise-linear (ReLU) logit: the sum of attributions matches the
# logit difference to well under 1% here (measured: at most 0.31% on these rows)
COMPLETENESS_REL = 0.01
AGREEMENT_REL = 1e-5  # the two stacks, relative to the largest attribution


def explain(urls: dict, model: str, body: dict, **params: str) -> httpx.Response:
    return httpx.post(f"{urls['gateway']}/v1/models/{model}:explain", params=params, content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), timeout=120)


@pytest.mark.parametrize("name", ["digits", "tabular"])
def test_both_stacks_attributions_agree(urls: dict, samples: dict, name: str) -> None:
    x, _ = samples[name]
    r = explain(urls, name, {"instances": x[:4]}, compare="true")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["method"], body["integration"], body["steps"], body["baseline"]) == (ig.METHOD, ig.INTEGRATION, ig.STEPS, ig.BASELINE)
    a = np.asarray(body["results"]["torchserve"]["attributions"])
    b = np.asarray(body["results"]["tfserving"]["attributions"])
    assert a.shape == b.shape == (4, *SPECS[name].shape)
    assert body["targets_agree"] is True
    assert body["max_abs_diff"] == pytest.approx(float(np.abs(a - b).max()), rel=1e-2, abs=1e-6)  # JSON rounds float32
    assert body["max_abs_diff"] <= AGREEMENT_REL * max(1.0, float(np.abs(a).max()))
    assert min(body["correlation"]) > 0.99999


@pytest.mark.parametrize("name", ["digits", "tabular"])
@pytest.mark.parametrize("backend", ["torchserve", "tfserving"])
def test_each_stack_satisfies_completeness(urls: dict, samples: dict, build_dir: Path, tmp_path: Path, name: str, backend: str) -> None:
    """Attributions sum to logit(x)[t] - logit(baseline)[t], within what 64 steps allow."""
    x, _ = samples[name]
    r = explain(urls, name, {"instances": x[:4]}, backend=backend)
    assert r.status_code == 200 and r.headers["x-backend"] == backend
    explanations = r.json()["explanations"]
    targets = np.asarray([e["target"] for e in explanations])
    attributions = np.asarray([e["attributions"] for e in explanations])
    model = load_torch_model_from_mar(Artifacts(build_dir, name).mar, tmp_path)
    with torch.no_grad():
        logits = model.logits(torch.from_numpy(x[:4])).numpy()
        base = model.logits(torch.zeros_like(torch.from_numpy(x[:4]))).numpy()
        predicted = model(torch.from_numpy(x[:4])).argmax(-1).numpy()
    assert (targets == predicted).all()  # no target given: the predicted class
    rows = np.arange(4)
    expected = logits[rows, targets] - base[rows, targets]
    sums = attributions.reshape(4, -1).sum(1)
    assert np.all(np.abs(sums - expected) <= COMPLETENESS_REL * np.abs(expected) + 1e-3), (sums, expected)


def test_named_target_is_explained(urls: dict, samples: dict) -> None:
    x, _ = samples["digits"]
    for backend in ("torchserve", "tfserving"):
        r = explain(urls, "digits", {"instances": x[:2], "target": [3, 7]}, backend=backend)
        assert r.status_code == 200
        assert [e["target"] for e in r.json()["explanations"]] == [3, 7]


@pytest.mark.parametrize(
    "body, kind",
    [
        ({"instances": [[1.0] * 30], "target": 2}, "invalid_target"),
        ({"instances": [[1.0] * 30], "target": [0, 1]}, "invalid_target"),
        ({"instances": [[1.0] * 30], "target": "benign"}, "invalid_target"),
        ({"instances": [[1.0] * 29]}, "invalid_shape"),
    ],
)
def test_bad_explain_requests_are_400(urls: dict, body: dict, kind: str) -> None:
    r = explain(urls, "tabular", body)
    assert r.status_code == 400 and r.json()["type"] == kind


def test_torchserve_explanations_api_rejects_a_bad_target(urls: dict) -> None:
    r = httpx.post(f"{urls['torchserve']}/explanations/tabular", content=orjson.dumps({"instances": [[1.0] * 30], "target": 9}), headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 400 and "out of range" in r.json()["error"]


def test_tf_serving_api_serves_the_explain_signature(urls: dict, samples: dict) -> None:
    x, _ = samples["tabular"]
    body = {"signature_name": "explain", "inputs": {"features": x[:2], "target": [-1, -1]}}
    r = httpx.post(f"{urls['tfserving']}/v1/models/tabular:predict", content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), timeout=60)
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    assert np.asarray(outputs["attributions"]).shape == (2, 30) and len(outputs["target"]) == 2


def test_heat_map_command_writes_a_png(urls: dict, tmp_path: Path) -> None:
    out = tmp_path / "heat.png"
    proc = subprocess.run([sys.executable, "-m", "twinserve.cli", "explain", "--gateway", urls["gateway"], "--index", "5", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "attributions agree" in proc.stdout
