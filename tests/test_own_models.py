"""Your own model through the user's path: import (parity), up, predictions on both stacks in V1 rows,
V1 columns and V2, bad input named, a short bench whose report lists it; and an import that fails
parity leaves the manifest and the model store as they were."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import OWN_MODEL
from tests.ownmodel import MODEL_FILE, write_pair

BACKENDS = ("torchserve", "tfserving")


def expected(own_model: dict, features: np.ndarray, tokens: np.ndarray) -> dict[str, np.ndarray]:
    """PairNet's outputs computed here with numpy from the imported weights (the TF SavedModel's own math)."""
    import torch

    state = torch.load(Path(own_model["samples"]).parent / "pairnet.pt", weights_only=True)
    w = {k: v.numpy().astype(np.float64) for k, v in state.items()}
    hidden = np.tanh(features @ w["fc.weight"].T + w["fc.bias"] + w["embedding.weight"][tokens].mean(axis=1))
    logits = hidden @ w["head.weight"].T + w["head.bias"]
    scores = np.exp(logits - logits.max(-1, keepdims=True))
    return {"hidden": hidden, "scores": scores / scores.sum(-1, keepdims=True)}


@pytest.fixture(scope="module")
def rows(own_model: dict) -> tuple[np.ndarray, np.ndarray]:
    with np.load(own_model["samples"]) as data:
        return data["features"][:5], data["tokens"][:5]


def test_import_reads_the_signature_and_proves_parity(own_model: dict, build_dir: Path) -> None:
    out = own_model["output"]
    assert "features: float32 [4]" in out and "tokens: int64 [3]" in out
    assert "hidden: float32 [8]" in out and "scores: float32 [3]" in out
    assert "parity ✔" in out
    text = own_model["manifest"].read_text()
    assert f"[models.{OWN_MODEL}]" in text and 'format = "state_dict"' in text
    assert (build_dir / "model-store" / f"{OWN_MODEL}.mar").is_file()
    assert (build_dir / "tfserving" / OWN_MODEL / "1" / "saved_model.pb").is_file()


@pytest.mark.parametrize("backend", BACKENDS)
def test_v1_rows_columns_and_v2_on_both_stacks(urls: dict, own_model: dict, rows: tuple, backend: str) -> None:
    features, tokens = rows
    want = expected(own_model, features, tokens)
    g = urls["gateway"]
    r = httpx.post(f"{g}/v1/models/{OWN_MODEL}:predict", params={"backend": backend}, json={"instances": [{"features": f.tolist(), "tokens": t.tolist()} for f, t in zip(features, tokens)]}, timeout=30)
    assert r.status_code == 200 and r.headers["x-backend"] == backend, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 5 and set(preds[0]) == {"hidden", "scores"}
    for name in ("hidden", "scores"):
        np.testing.assert_allclose([p[name] for p in preds], want[name], atol=1e-5)

    r = httpx.post(f"{g}/v1/models/{OWN_MODEL}:predict", params={"backend": backend}, json={"inputs": {"features": features.tolist(), "tokens": tokens.tolist()}}, timeout=30)
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    for name in ("hidden", "scores"):
        np.testing.assert_allclose(outputs[name], want[name], atol=1e-5)

    body = {"inputs": [
        {"name": "features", "datatype": "FP32", "shape": [5, 4], "data": features.reshape(-1).tolist()},
        {"name": "tokens", "datatype": "INT64", "shape": [5, 3], "data": tokens.reshape(-1).tolist()},
    ]}
    r = httpx.post(f"{g}/v2/models/{OWN_MODEL}/infer", params={"backend": backend}, json=body, timeout=30)
    assert r.status_code == 200, r.text
    got = {o["name"]: o for o in r.json()["outputs"]}
    assert got["scores"]["shape"] == [5, 3] and got["hidden"]["datatype"] == "FP32"
    for name in ("hidden", "scores"):
        np.testing.assert_allclose(np.reshape(got[name]["data"], got[name]["shape"]), want[name], atol=1e-5)


def test_metadata_and_compare_describe_the_model(urls: dict, rows: tuple) -> None:
    g = urls["gateway"]
    meta = httpx.get(f"{g}/v2/models/{OWN_MODEL}", timeout=10).json()
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}, {"name": "tokens", "datatype": "INT64", "shape": [-1, 3]}]
    assert {o["name"] for o in meta["outputs"]} == {"hidden", "scores"}
    listed = {m["name"]: m for m in httpx.get(f"{g}/v1/models", timeout=10).json()["models"]}
    assert listed[OWN_MODEL]["inputs"][1] == {"name": "tokens", "dtype": "int64", "shape": [3]}
    assert listed[OWN_MODEL]["backends"] == {"torchserve": "READY", "tfserving": "READY", "kserve": "READY"}
    features, tokens = rows
    cmp = httpx.post(f"{g}/v1/models/{OWN_MODEL}:compare", json={"inputs": {"features": features.tolist(), "tokens": tokens.tolist()}}, timeout=30).json()
    assert set(cmp["results"]) == {"torchserve", "tfserving", "kserve"}  # your model's ONNX export, served by the third stack
    assert cmp["max_abs_diff"] <= 1e-4 and cmp["classes_agree"] is None
    r = httpx.post(f"{g}/v1/models/{OWN_MODEL}:explain", json={"inputs": {"features": features.tolist(), "tokens": tokens.tolist()}}, timeout=30)
    assert r.status_code == 501 and "no explanation" in r.json()["error"]


@pytest.mark.parametrize(
    "body, kind, fragment",
    [
        ({"instances": [{"features": [1.0, 2.0, 3.0, 4.0]}]}, "missing_input", "'tokens'"),
        ({"instances": [{"features": [1.0, 2.0, 3.0, 4.0], "tokens": [1, 2, 3], "mask": [1]}]}, "unknown_input", "'mask'"),
        ({"instances": [{"features": [1.0, 2.0, 3.0, 4.0], "tokens": [1.5, 2, 3]}]}, "invalid_dtype", "'tokens' takes int64"),
        ({"instances": [{"features": [1.0, 2.0, 3.0], "tokens": [1, 2, 3]}]}, "invalid_shape", "'features'"),
        ({"instances": [{"features": [[1.0, 2.0, 3.0, 4.0]], "tokens": [1, 2, 3]}]}, "invalid_shape", "'features'"),
        ({"inputs": {"features": [[1.0, 2.0, 3.0, 4.0]] * 2, "tokens": [[1, 2, 3]]}}, "invalid_shape", "same number of instances"),
    ],
)
def test_bad_input_is_a_400_naming_the_input(urls: dict, body: dict, kind: str, fragment: str) -> None:
    r = httpx.post(f"{urls['gateway']}/v1/models/{OWN_MODEL}:predict", json=body, timeout=10)
    assert r.status_code == 400, r.text
    error = r.json()
    assert error["type"] == kind and fragment in error["error"], error


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_stacks_refuse_bad_input_themselves(urls: dict, backend: str) -> None:
    """Straight to each stack, past the gateway: a wrong dtype and a missing input are clean 400s."""
    base = urls["torchserve"] + f"/predictions/{OWN_MODEL}" if backend == "torchserve" else urls["tfserving"] + f"/v1/models/{OWN_MODEL}:predict"
    for body in ({"instances": [{"features": [1.0, 2.0, 3.0, 4.0], "tokens": ["a", "b", "c"]}]}, {"instances": [{"features": [1.0, 2.0, 3.0, 4.0]}]}):
        r = httpx.post(base, json=body, timeout=10)
        assert r.status_code == 400, r.text
        assert "tokens" in r.json()["error"]


def test_a_short_bench_reports_the_model(stack, urls: dict, tmp_path: Path) -> None:
    from loadtests import bench, report
    from loadtests.targets import COMPARISON
    from twinserve.supervisor import Supervisor

    cfg = bench.BenchConfig(
        models=[OWN_MODEL], targets=list(COMPARISON), urls={k: urls[k] for k in ("torchserve", "tfserving", "kserve", "gateway")},
        out=tmp_path, users=2, spawn_rate=2, duration_s=2, warmup_s=1, repetitions=1,
    )
    pgids = {n: s.pgid for n, s in Supervisor(stack.run_dir).running().items()}
    summary = bench.summarise(cfg, bench.run(cfg, pgids))
    summary["environment"] = {"versions": {}, "machine": {"cpu_count": 2, "time": "t"}, "tfserving_implementation": "twinserve-tf-compat"}
    summary["stack"] = {}
    summary["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()}
    summary["locust_dir"] = str(tmp_path / "locust")
    written = report.write(summary, tmp_path)
    results = [r for r in summary["results"] if r["model"] == OWN_MODEL]
    assert {r["target"] for r in results} == set(COMPARISON)
    for r in results:
        assert sum(rep["requests"] for rep in r["repetitions"]) > 0
        assert sum(rep["failures"] for rep in r["repetitions"]) == 0, r
    assert any(OWN_MODEL in Path(p).read_text() for p in written.values() if str(p).endswith((".md", ".html")))


def tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_import_that_fails_parity_changes_nothing(own_model: dict, tmp_path: Path) -> None:
    """A TF model that is not the PyTorch one: exit 1 with each output's difference and the first
    disagreeing input; the manifest and the model store are byte for byte as before."""
    manifest = tmp_path / "twinserve.toml"
    shutil.copy(own_model["manifest"], manifest)
    build = tmp_path / "build"
    (build / "model-store").mkdir(parents=True)
    (build / "model-store" / "keep.mar").write_bytes(b"already here")
    before_manifest, before_store = manifest.read_bytes(), tree(build)
    weights, saved, samples = write_pair(tmp_path / "src", skew=0.5)
    cmd = [sys.executable, "-m", "twinserve.cli", "--manifest", str(manifest), "import", "--name", "skewed",
           "--pytorch", str(weights), "--savedmodel", str(saved), "--model-file", str(MODEL_FILE), "--class", "PairNet",
           "--samples", str(samples), "--out", str(build)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "300"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "scores: max |diff|" in out and "hidden: max |diff|" in out and "first disagreeing input #0" in out
    assert manifest.read_bytes() == before_manifest
    assert tree(build) == before_store
    assert not (tmp_path / "imports").exists()


def test_a_manifest_error_names_the_entry_and_the_field(tmp_path: Path) -> None:
    manifest = tmp_path / "twinserve.toml"
    manifest.write_text('[models.mine]\npytorch = { format = "torchscript", weights = "m.pt" }\ntensorflow = { savedmodel = "sm" }\n'
                        'inputs = [{ name = "x", dtype = "complex64", shape = [3] }]\noutputs = [{ name = "y", dtype = "float32", shape = [1] }]\n')
    proc = subprocess.run([sys.executable, "-m", "twinserve.cli", "--manifest", str(manifest), "export"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "model 'mine': inputs 'x' has dtype 'complex64'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("fmt", ["torchscript", "export", "mar"])
def test_every_pytorch_format_imports_with_parity(own_model: dict, build_dir: Path, tmp_path: Path, fmt: str) -> None:
    """The same PairNet as TorchScript, as a torch.export program and as the TorchServe archive the
    session's import packed: each is recognised, loaded by the handler's own loader and proven equal
    to the SavedModel."""
    import torch

    from models.importer import import_model

    weights, saved, samples = write_pair(tmp_path / "src")
    loader = __import__("importlib.util").util.spec_from_file_location("pairnet_for_formats", MODEL_FILE)
    module = __import__("importlib.util").util.module_from_spec(loader)
    loader.loader.exec_module(module)
    model = module.PairNet().eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    example = (torch.zeros(2, 4), torch.zeros(2, 3, dtype=torch.int64))
    if fmt == "torchscript":
        artifact = tmp_path / "pairnet_scripted.pt"
        torch.jit.save(torch.jit.trace(model, example, strict=False), str(artifact))
    elif fmt == "export":
        artifact = tmp_path / "pairnet.pt2"
        torch.export.save(torch.export.export(model, example, dynamic_shapes=({0: torch.export.Dim("n")}, {0: torch.export.Dim("n")})), str(artifact))
    else:
        artifact = build_dir / "model-store" / f"{OWN_MODEL}.mar"
    manifest = tmp_path / "twinserve.toml"
    result, inferred = import_model(f"pair_{fmt}", artifact, saved, manifest, tmp_path / "build", options={"samples": str(samples)})
    assert inferred.pytorch["format"] == {"mar": "state_dict"}.get(fmt, fmt)
    assert [t.name for t in inferred.inputs] == ["features", "tokens"]
    assert result["parity"]["ok"] and result["parity"]["max_abs_diff"] <= 1e-4
    assert f"[models.pair_{fmt}]" in manifest.read_text()


BASE_ENTRY = 'pytorch = { format = "torchscript", weights = "m.pt" }\ntensorflow = { savedmodel = "sm" }\ninputs = [{ name = "x", dtype = "float32", shape = [3] }]\noutputs = [{ name = "y", dtype = "float32", shape = [1] }]\n'


@pytest.mark.parametrize(
    "name, extra, fragment",
    [
        ("model-store", "", "not imports, model-store, onnx, tfserving"),
        ("tfserving", "", "not imports, model-store, onnx, tfserving"),
        ("9lives", "", "starting with a letter"),
        ("mine", "explainable = \"false\"\n", "'explainable' must be true or false"),
        ("mine", "max_batch = 65\n", "'max_batch' is at most 64"),
        ("mine", "value_range = 16\n", "'value_range' must be [low, high]"),
        ("mine", 'tensorflow = { savedmodel = "sm", signature = "predict" }\n', "must be 'serving_default'"),
    ],
)
def test_manifest_mistakes_are_named(name: str, extra: str, fragment: str) -> None:
    import tomllib

    from models.spec import ManifestError, parse_manifest

    entry = BASE_ENTRY.replace('tensorflow = { savedmodel = "sm" }\n', "") if "tensorflow =" in extra else BASE_ENTRY
    data = tomllib.loads(f'[models."{name}"]\n{entry}{extra}')
    with pytest.raises(ManifestError, match=None) as caught:
        parse_manifest(data, Path("."))
    assert fragment in str(caught.value) and repr(name) in str(caught.value)


def test_bytes_outputs_and_shaped_bytes_are_refused_by_the_manifest() -> None:
    import tomllib

    from models.spec import ManifestError, parse_manifest

    for tensors in ('inputs = [{ name = "x", dtype = "bytes", shape = [2] }]\noutputs = [{ name = "y", dtype = "float32", shape = [1] }]\n',
                    'inputs = [{ name = "x", dtype = "float32", shape = [3] }]\noutputs = [{ name = "y", dtype = "bytes", shape = [] }]\n'):
        data = tomllib.loads('[models.m]\npytorch = { format = "export", weights = "m.pt2" }\ntensorflow = { savedmodel = "sm" }\n' + tensors)
        with pytest.raises(ManifestError, match="bytes"):
            parse_manifest(data, Path("."))


def test_an_import_name_is_checked_before_it_touches_a_path(tmp_path: Path) -> None:
    from models.importer import import_model
    from models.spec import ManifestError

    (tmp_path / "keep.txt").write_text("mine")
    manifest = tmp_path / "twinserve.toml"
    for name in ("..", "", "a/b"):
        with pytest.raises(ManifestError):
            import_model(name, tmp_path / "x.mar", tmp_path / "sm", manifest, tmp_path / "build")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_bytes_values_are_read_as_tf_serving_reads_them() -> None:
    """Wrapped and unpadded base64 are accepted (abseil's decoder, TF Serving's); a lone surrogate,
    which Python's JSON parser lets through, is a 400, not a 500."""
    import base64

    from gateway.errors import GatewayError
    from gateway.validation import v1_inputs, parse_json
    from models.spec import SPECS

    spec = SPECS["mobilenet"]
    from models.samples import jpeg_photos

    photo = jpeg_photos(1, count=2)[0]
    wrapped = "\n".join(base64.b64encode(photo).decode()[i : i + 76] for i in range(0, len(base64.b64encode(photo)), 76))
    tensors, _ = v1_inputs({"instances": [{"b64": wrapped}, {"b64": base64.b64encode(photo).decode().rstrip("=")}]}, spec)
    assert tensors["image_bytes"] == [photo, photo]
    with pytest.raises(GatewayError) as caught:
        v1_inputs(parse_json(b'{"instances": ["\\ud800"]}'), spec)
    assert caught.value.status == 400
