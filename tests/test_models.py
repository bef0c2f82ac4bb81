"""The two exports are one model: artifacts, parity, accuracy, repeatability."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import parity
from models.export import Artifacts, build_savedmodel, export_model, load_savedmodel, load_torch_from_mar, measure_parity, zoo_module
from models.mapping import to_tf_weights
from models.spec import SPECS
from conftest import ROW_MODELS


@pytest.mark.parametrize("name", ROW_MODELS)
def test_export_writes_both_artifacts_and_parity(build_dir: Path, name: str) -> None:
    art = Artifacts(build_dir, name)
    assert art.mar.is_file() and art.mar.stat().st_size > 0
    assert (art.savedmodel / "saved_model.pb").is_file()
    assert (art.savedmodel / "variables").is_dir()
    report = json.loads(art.parity.read_text())
    assert report["inputs"] >= 512
    assert report["max_abs_diff"] <= parity.ABS_TOLERANCE
    assert report["decisive_disagreements"] == 0
    assert report["ok"] is True


def test_trained_models_meet_accuracy_floor(build_dir: Path) -> None:
    digits = json.loads(Artifacts(build_dir, "digits").parity.read_text())["accuracy"]
    assert digits["held_out_fraction"] >= 0.2
    assert digits["torchserve_export"] >= 0.95 and digits["tensorflow_export"] >= 0.95
    tabular = json.loads(Artifacts(build_dir, "tabular").parity.read_text())["accuracy"]
    assert tabular["torchserve_export"] >= 0.9


@pytest.mark.parametrize("name", ROW_MODELS)
def test_loaded_artifacts_agree_on_fresh_inputs(build_dir: Path, tmp_path: Path, name: str) -> None:
    """Independent of parity.json: load both artifacts back and compare on new random inputs."""
    spec = SPECS[name]
    art = Artifacts(build_dir, name)
    low, high = spec.value_range or (-3.0, 3.0)
    x = np.random.default_rng(7).uniform(low, high, (64, *spec.shape)).astype(np.float32)
    torch_probs = load_torch_from_mar(art.mar, tmp_path)(x)
    tf_probs = load_savedmodel(art.savedmodel, spec)(x)
    assert torch_probs.shape == (64, spec.num_classes)
    np.testing.assert_allclose(torch_probs.sum(-1), 1.0, atol=1e-5)
    assert parity.compare(torch_probs, tf_probs).ok


def test_signature_names_follow_the_spec(build_dir: Path) -> None:
    import tensorflow as tf

    for name, spec in SPECS.items():
        sig = tf.saved_model.load(str(Artifacts(build_dir, name).savedmodel)).signatures["serving_default"]
        inputs = sig.structured_input_signature[1]
        assert list(inputs) == [spec.input_name]
        assert tuple(inputs[spec.input_name].shape[1:]) == spec.shape
        assert list(sig.structured_outputs) == [spec.output_name]


def test_wrong_weight_mapping_is_caught(build_dir: Path, tmp_path: Path) -> None:
    """A missing transpose on a square Linear keeps every shape valid; only parity can catch it."""
    spec = SPECS["tabular"]
    real = Artifacts(build_dir, "tabular")
    wrong = Artifacts(tmp_path, "tabular")
    wrong.mar.parent.mkdir(parents=True)
    shutil.copy(real.mar, wrong.mar)
    state = torch.load(real.weights, weights_only=True)
    weights = to_tf_weights(state)
    assert weights["fc2.weight"].shape[0] == weights["fc2.weight"].shape[1]
    weights["fc2.weight"] = weights["fc2.weight"].T.copy()
    build_savedmodel(spec, zoo_module("tabular").tf_logits, weights, wrong.savedmodel)
    result, _ = measure_parity(spec, wrong, seed=1)
    assert not result.ok
    with pytest.raises(parity.ParityError, match="disagree"):
        parity.check(result, "tabular")


def test_export_is_repeatable_and_cached(build_dir: Path, tmp_path: Path) -> None:
    first = export_model("tabular", tmp_path)
    assert first["cached"] is False
    again = export_model("tabular", tmp_path)
    assert again["cached"] is True
    # the same seed gives the same weights as the default build's
    a = torch.load(Artifacts(tmp_path, "tabular").weights, weights_only=True)
    b = torch.load(Artifacts(build_dir, "tabular").weights, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_rejects_unknown_model() -> None:
    proc = subprocess.run([sys.executable, "-m", "twinserve.cli", "export", "--models", "nope"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "unknown model" in proc.stderr
