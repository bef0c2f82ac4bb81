"""The third stack's artifact: each model exported to ONNX, run by ONNX Runtime, is the TorchServe archive's model.

Real artifacts only: the session's build (every zoo model exported), models imported the
user's way into a temporary build, and ONNX Runtime sessions on the files as written.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from conftest import ROW_MODELS
from models import onnx as onnx_export
from models import parity
from models.export import DEFAULT_SEED, Artifacts, export_model, load_torch_from_mar, load_torch_model_from_mar, measure_parity, zoo_module
from models.spec import SPECS, ModelSpec, TensorSpec
from tests.ownmodel import MODEL_FILE, write_pair

ZOO = (*ROW_MODELS, "mobilenet")
ONNX_DTYPE = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64, "uint8": onnx.TensorProto.UINT8}


def tensors(values) -> list[tuple[str, int, list]]:  # type: ignore[no-untyped-def]
    """(name, element type, dims: an int, or the symbol's name when dynamic) of graph inputs or outputs."""
    return [(v.name, v.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]


@pytest.mark.parametrize("name", ZOO)
def test_each_zoo_model_has_an_onnx_file_with_the_spec_interface(build_dir: Path, name: str) -> None:
    spec, art = SPECS[name], Artifacts(build_dir, name)
    assert art.onnx_model.is_file() and art.onnx_model.stat().st_size > 0
    assert (art.onnx / "spec.json").read_bytes() == art.spec_json.read_bytes()
    proto = onnx.load(str(art.onnx_model))
    onnx.checker.check_model(proto)
    manifest = json.loads(art.manifest.read_text())["onnx"]
    assert manifest["exported"] is True and "dynamo=True" in manifest["exporter"]
    assert manifest["opset"] == onnx_export.OPSET == next(o.version for o in proto.opset_import if o.domain == "")
    assert manifest["path"] == f"onnx/{name}/model.onnx" and manifest["bytes"] == art.onnx_model.stat().st_size
    sess = onnx_export.session(art.onnx_model)
    if name == "mobilenet":
        assert manifest["input"] == "pixels uint8 [1,H,W,3]"
        assert tensors(proto.graph.input) == [("pixels", onnx.TensorProto.UINT8, [1, "height", "width", 3])]
        assert tensors(proto.graph.output) == [("probabilities", onnx.TensorProto.FLOAT, [1, 1000])]
        assert [(i.name, i.type) for i in sess.get_inputs()] == [("pixels", "tensor(uint8)")]
        return
    assert tensors(proto.graph.input) == [(t.name, ONNX_DTYPE[t.dtype], ["batch", *t.shape]) for t in spec.inputs]
    assert tensors(proto.graph.output) == [(t.name, ONNX_DTYPE[t.dtype], ["batch", *t.shape]) for t in spec.outputs]
    assert [i.name for i in sess.get_inputs()] == [t.name for t in spec.inputs]
    assert [o.name for o in sess.get_outputs()] == [t.name for t in spec.outputs]


@pytest.mark.parametrize("name", ZOO)
def test_recorded_onnx_parity_holds_within_tolerance(build_dir: Path, name: str) -> None:
    spec, art = SPECS[name], Artifacts(build_dir, name)
    report = json.loads(art.parity.read_text())
    ox = report["onnx"]
    assert ox["exported"] is True and ox["ok"] is True
    assert ox["max_abs_diff"] <= spec.tolerance and ox["decisive_disagreements"] == 0 and ox["argmax_agreement"] == 1.0
    assert ox["inputs"] == report["inputs"]  # the same inputs as the TorchServe/TensorFlow parity
    assert ox["opset"] == onnx_export.OPSET and ox["onnxruntime"] == metadata.version("onnxruntime")
    assert ox["bytes"] == art.onnx_model.stat().st_size
    assert json.loads(art.manifest.read_text())["parity"]["onnx"] == ox


@pytest.mark.parametrize("name", ROW_MODELS)
def test_onnx_runtime_agrees_with_the_archive_on_fresh_rows(build_dir: Path, tmp_path: Path, name: str) -> None:
    """Independent of parity.json: new random rows, batches of 1, 7 and 64 (the batch is dynamic)."""
    spec, art = SPECS[name], Artifacts(build_dir, name)
    low, high = spec.value_range or (-3.0, 3.0)
    torch_fn = load_torch_from_mar(art.mar, tmp_path)
    ort_fn = onnx_export.load_onnx(art.onnx_model, spec)
    for rows in (1, 7, 64):
        x = np.random.default_rng(rows).uniform(low, high, (rows, *spec.shape)).astype(np.float32)
        want, got = torch_fn(x), ort_fn(x)
        assert got.shape == want.shape == (rows, spec.num_classes) and got.dtype == np.float32
        result = parity.compare(want, got, spec.tolerance)
        assert result.ok, result


def test_tabular_held_out_accuracy_of_the_onnx_export(build_dir: Path, tmp_path: Path) -> None:
    spec, art = SPECS["tabular"], Artifacts(build_dir, "tabular")
    _, x_test, _, y_test = zoo_module("tabular").dataset(DEFAULT_SEED)
    ort_correct = int((onnx_export.load_onnx(art.onnx_model, spec)(x_test).argmax(-1) == y_test).sum())
    torch_correct = int((load_torch_from_mar(art.mar, tmp_path)(x_test).argmax(-1) == y_test).sum())
    assert abs(ort_correct - torch_correct) <= 1
    accuracy = json.loads(art.parity.read_text())["accuracy"]
    assert accuracy["onnx_export"] == pytest.approx(ort_correct / len(y_test))
    assert abs(accuracy["onnx_export"] - accuracy["torchserve_export"]) * len(y_test) <= 1


def test_mobilenet_graph_takes_decoded_pixels_of_any_size(build_dir: Path, tmp_path: Path) -> None:
    """scikit-learn's real photos: as shipped (JPEG, decoded by the zoo's decoder) and as their pixel
    arrays resized to odd sizes (sent to the torch model as lossless PNG): ONNX Runtime on the pixels
    gives the archive's probabilities and class."""
    from models.samples import photos
    from models.zoo.mobilenet import _decode

    spec, art = SPECS["mobilenet"], Artifacts(build_dir, "mobilenet")
    model = load_torch_model_from_mar(art.mar, tmp_path)
    sess = onnx_export.session(art.onnx_model)
    cases: list[tuple[np.ndarray, bytes]] = []
    for image, raw in photos():
        cases.append((_decode(raw, 0).numpy(), raw))
        for size in ((97, 61), (224, 224), (701, 333)):
            small = image.resize(size)
            png = io.BytesIO()
            small.save(png, format="PNG")
            cases.append((np.asarray(small, dtype=np.uint8), png.getvalue()))
    for pixels, encoded in cases:
        with torch.inference_mode():
            want = model([encoded]).numpy()
        got = sess.run(None, {"pixels": pixels[None]})[0]
        assert got.shape == (1, 1000) and got.dtype == np.float32
        assert got.argmax() == want.argmax()
        assert np.abs(got - want).max() <= spec.tolerance


def import_pair(build: Path, fmt: str, name: str) -> dict:
    """PairNet imported the user's way (`import_model`) in the given PyTorch format into `build`."""
    from models.importer import import_model

    src = build.parent / f"src-{fmt}"
    weights, saved, samples = write_pair(src)
    if fmt == "state_dict":
        result, _ = import_model(name, weights, saved, build.parent / "twinserve.toml", build, model_file=MODEL_FILE, class_name="PairNet", options={"samples": str(samples)})
        return result
    loader = importlib.util.spec_from_file_location(f"pairnet_{fmt}", MODEL_FILE)
    module = importlib.util.module_from_spec(loader)  # type: ignore[arg-type]
    loader.loader.exec_module(module)  # type: ignore[union-attr]
    model = module.PairNet().eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    example = (torch.zeros(2, 4), torch.zeros(2, 3, dtype=torch.int64))
    if fmt == "torchscript":
        artifact = src / "pairnet_scripted.pt"
        torch.jit.save(torch.jit.trace(model, example, strict=False), str(artifact))
    else:
        artifact = src / "pairnet.pt2"
        torch.export.save(torch.export.export(model, example, dynamic_shapes=({0: torch.export.Dim("n")}, {0: torch.export.Dim("n")})), str(artifact))
    result, _ = import_model(name, artifact, saved, build.parent / "twinserve.toml", build, options={"samples": str(samples)})
    return result


@pytest.mark.parametrize("fmt", ["state_dict", "export"])
def test_a_two_input_own_model_exports_in_the_spec_order(build_dir: Path, tmp_path: Path, fmt: str) -> None:
    """PairNet (float32 [4] and int64 [3] in, a dict of two outputs): graph inputs in the spec's
    order, outputs named as the spec's, parity with the archive on its samples."""
    build = tmp_path / "build"
    result = import_pair(build, fmt, "pair")
    assert result["onnx"]["exported"] is True, result["onnx"]
    art = Artifacts(build, "pair")
    spec = json.loads((art.onnx / "spec.json").read_text())
    assert [t["name"] for t in spec["inputs"]] == ["features", "tokens"]
    proto = onnx.load(str(art.onnx_model))
    assert tensors(proto.graph.input) == [("features", onnx.TensorProto.FLOAT, ["batch", 4]), ("tokens", onnx.TensorProto.INT64, ["batch", 3])]
    assert [v.name for v in proto.graph.output] == [t["name"] for t in spec["outputs"]] and {v.name for v in proto.graph.output} == {"hidden", "scores"}
    ox = json.loads(art.parity.read_text())["onnx"]
    assert ox["ok"] is True and ox["max_abs_diff"] <= 1e-4 and set(ox["outputs"]) == {"hidden", "scores"}
    rng = np.random.default_rng(3)
    x = {"features": rng.normal(size=(5, 4)).astype(np.float32), "tokens": rng.integers(0, 10, (5, 3)).astype(np.int64)}
    got = onnx_export.load_onnx(art.onnx_model, ModelSpec.from_dict(spec))(x)
    want = load_torch_from_mar(art.mar, tmp_path / "unpacked")(x)
    for name in ("hidden", "scores"):
        np.testing.assert_allclose(got[name], want[name], atol=1e-5)


def test_a_torchscript_model_is_recorded_as_not_exported_and_the_rest_installs(build_dir: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    shutil.copytree(build_dir / "onnx" / "tabular", build / "onnx" / "pair")  # a stale ONNX folder under the same name: must go
    result = import_pair(build, "torchscript", "pair")
    art = Artifacts(build, "pair")
    for record in (result["onnx"], json.loads(art.manifest.read_text())["onnx"], json.loads(art.parity.read_text())["onnx"]):
        assert record["exported"] is False
        assert "TorchScript" in record["reason"] and record["reason"].startswith("model 'pair' is not exported to ONNX: ")
    assert not art.onnx.exists()
    assert result["parity"]["ok"] is True and art.mar.is_file() and (art.savedmodel / "saved_model.pb").is_file()
    assert art.complete()


def test_an_exporter_failure_is_a_reason_not_an_error(tmp_path: Path) -> None:
    """A model torch.export cannot trace (control flow on a value) is recorded with the exporter's
    own message; no model.onnx is left behind."""

    class Branchy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if float(x.sum()) > 0 else x

    spec = ModelSpec("branchy", (TensorSpec("x", "float32", (3,)),), (TensorSpec("y", "float32", (3,)),), pytorch={"format": "state_dict"})
    info = onnx_export.export(spec, Branchy().eval(), tmp_path / "onnx")
    assert info["exported"] is False
    assert info["reason"].startswith("model 'branchy' is not exported to ONNX: torch.onnx's dynamo exporter failed (")
    assert "\n" not in info["reason"] and "\x1b" not in info["reason"] and len(info["reason"]) < 450
    assert not (tmp_path / "onnx" / "model.onnx").exists()


def test_a_bytes_input_of_your_own_is_not_exported() -> None:
    spec = ModelSpec("texts", (TensorSpec("text", "bytes", ()),), (TensorSpec("y", "float32", (2,)),), pytorch={"format": "state_dict"})
    info = onnx_export.export(spec, torch.nn.Identity(), Path("/nonexistent/never-written"))
    assert info["exported"] is False and "'text' takes bytes" in info["reason"]


def test_old_builds_without_model_onnx_are_rebuilt_and_a_bad_onnx_fails_parity(build_dir: Path, tmp_path: Path) -> None:
    first = export_model("tabular", tmp_path)
    art = Artifacts(tmp_path, "tabular")
    assert first["cached"] is False and art.complete()
    art.onnx_model.unlink()
    assert not art.complete()
    again = export_model("tabular", tmp_path)
    assert again["cached"] is False and art.onnx_model.is_file()
    manifest = json.loads(art.manifest.read_text())
    del manifest["onnx"]  # as written before the ONNX export existed
    art.manifest.write_text(json.dumps(manifest))
    assert not art.complete()

    # an ONNX file of a different model (the last layer's bias skewed) fails the ONNX gate
    spec = SPECS["tabular"]
    model = load_torch_model_from_mar(art.mar, tmp_path / "unpacked")
    with torch.no_grad():
        model.fc3.bias.add_(torch.tensor([0.0, 0.5]))
    assert onnx_export.export(spec, model, art.onnx)["exported"] is True
    result, report = measure_parity(spec, art, DEFAULT_SEED)
    assert result.ok and report["onnx"]["ok"] is False and report["onnx"]["max_abs_diff"] > spec.tolerance
    with pytest.raises(parity.ParityError, match="ONNX export"):
        onnx_export.check(report["onnx"], "tabular")
