"""Train or seed each zoo model, write the TorchServe archive, the SavedModel and the ONNX file, prove parity.

Parity is measured on the artifacts as written (the .mar unpacked and loaded by
the handler's own loader, the SavedModel loaded by TensorFlow, model.onnx run by
ONNX Runtime), never on the in-memory models, so a fault in packaging is caught as surely as one in the
weight mapping. A second run with nothing changed is a cache hit: the manifest's
fingerprint covers every source file and version that shapes an artifact.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from models import onnx as onnx_export
from models import samples
from models.spec import ModelSpec, get_spec

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUILD = ROOT / "models" / "build"
HANDLER = ROOT / "services" / "torchserve" / "handler.py"
DEFAULT_SEED = samples.DEFAULT_SEED
PARITY_ROWS = 512
ACCURACY_FLOOR = {"digits": 0.95, "tabular": 0.90}
SOURCES = ["models/spec.py", "models/samples.py", "models/explain.py", "models/training.py", "models/tfops.py", "models/mapping.py", "models/export.py", "models/onnx.py", "services/torchserve/handler.py"]


class ExportError(RuntimeError):
    pass


@dataclass(frozen=True)
class Artifacts:
    """Where one model's artifacts live under a build folder."""

    build: Path
    name: str
    version: int = 1

    @property
    def work(self) -> Path:
        return self.build / self.name

    @property
    def mar(self) -> Path:
        return self.build / "model-store" / f"{self.name}.mar"

    @property
    def tf_base(self) -> Path:
        return self.build / "tfserving" / self.name

    @property
    def savedmodel(self) -> Path:
        return self.tf_base / str(self.version)

    @property
    def onnx(self) -> Path:
        """The ONNX Runtime stack's folder: model.onnx and a copy of spec.json."""
        return self.build / "onnx" / self.name

    @property
    def onnx_model(self) -> Path:
        return self.onnx / onnx_export.FILE

    @property
    def weights(self) -> Path:
        return self.work / "weights.pt"

    @property
    def spec_json(self) -> Path:
        return self.work / "spec.json"

    @property
    def parity(self) -> Path:
        return self.work / "parity.json"

    @property
    def manifest(self) -> Path:
        return self.work / "manifest.json"

    def complete(self) -> bool:
        """Every artifact present, model.onnx included when the manifest says the model has one; a
        manifest from before the ONNX export (no "onnx" entry) is incomplete, so it is rebuilt."""
        if not all(p.exists() for p in (self.mar, self.savedmodel / "saved_model.pb", self.parity, self.manifest)):
            return False
        try:
            onnx = json.loads(self.manifest.read_text()).get("onnx")
        except (OSError, ValueError, AttributeError):
            return False
        if not isinstance(onnx, dict):
            return False
        return not onnx.get("exported") or (self.onnx_model.is_file() and (self.onnx / "spec.json").is_file())


def zoo_module(name: str) -> Any:
    return importlib.import_module(f"models.zoo.{name}")


def fingerprint(spec: ModelSpec, seed: int) -> str:
    """Everything that shapes the artifacts: the project's sources, the zoo file or your model's
    files, the spec, the frameworks' versions and the seed."""
    digest = hashlib.sha256()
    rels = [*SOURCES, f"models/zoo/{spec.name}.py"] if spec.zoo else SOURCES
    for rel in rels:
        digest.update(rel.encode())
        digest.update((ROOT / rel).read_bytes())
    for path in source_files(spec):
        try:
            stat = path.stat()
        except OSError:
            raise ExportError(f"model {spec.name!r}: {path}, named by the manifest, cannot be read (moved or deleted?)") from None
        digest.update(str(path).encode())
        digest.update(f"{stat.st_mtime_ns}:{stat.st_size}".encode())
    digest.update(json.dumps({k: v for k, v in spec.to_dict().items() if k != "base"}, sort_keys=True).encode())
    for dist in ("torch", "tensorflow", "torch-model-archiver", "numpy", "scikit-learn", "pillow", "onnx", "onnxscript", "onnxruntime"):
        digest.update(f"{dist}={metadata.version(dist)}".encode())
    digest.update(str(seed).encode())
    return digest.hexdigest()


def source_files(spec: ModelSpec) -> list[Path]:
    """Your model's files named by the manifest (every file of the SavedModel directory included)."""
    if spec.zoo:
        return []
    files = [spec.path(spec.pytorch[k]) for k in ("model_file", "weights") if spec.pytorch.get(k)]
    saved = spec.path(spec.tensorflow["savedmodel"])
    files += sorted(p for p in saved.rglob("*") if p.is_file()) if saved.is_dir() else [saved]
    if spec.samples:
        files.append(spec.path(spec.samples))
    return files


def parity_inputs(spec: ModelSpec, seed: int) -> tuple[Any, np.ndarray | None, Any, np.ndarray | None]:
    """(all inputs, all labels, held-out inputs, held-out labels): real rows where the zoo model has a
    dataset, seeded rows for resnet, and models/samples.py's inputs for the rest (the image model's
    photos, your manifest's samples .npz, or inputs generated from the spec). A single-input zoo model's inputs are one array; every other
    model's are a dict of arrays by input name."""
    if spec.zoo and not spec.inputs[0].is_bytes:
        split = zoo_module(spec.name).dataset(seed)
        if split is None:
            rng = np.random.default_rng(seed)
            return rng.random((PARITY_ROWS, *spec.shape), dtype=np.float32), None, None, None
        x_train, x_test, y_train, y_test = split
        return np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test]), x_test, y_test
    return samples.inputs(spec, seed), None, None, None


def build_savedmodel(spec: ModelSpec, logits_fn: Callable, weights: dict[str, np.ndarray], path: Path, preprocess: Callable | None = None) -> None:
    """A zoo model's SavedModel: `serving_default` from the spec's input (through the zoo's own
    `tf_preprocess` when it has one, e.g. JPEG bytes decoded and resized inside the graph), and
    `explain` (Integrated Gradients) for the explainable ones."""
    import tensorflow as tf

    from models import explain as ig
    from models import tfops

    inp = spec.inputs[0]
    signature = tf.TensorSpec([None, *(None if d < 0 else d for d in inp.shape)], getattr(tf, inp.tf_dtype), name=inp.name)

    class Exported(tf.Module):
        def __init__(self) -> None:
            super().__init__(name=spec.name)
            self.w = {k: tf.Variable(v, trainable=False, name=k.replace(".", "_")) for k, v in weights.items()}

        def probabilities(self, x: tf.Tensor) -> tf.Tensor:
            return tf.nn.softmax(logits_fn(self.w, x), axis=-1)

        @tf.function(input_signature=[signature])
        def serve(self, x: tf.Tensor) -> dict:
            return {spec.output_name: self.probabilities(preprocess(x) if preprocess else x)}

    class Explainable(Exported):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, *spec.shape], tf.float32, name=spec.input_name),
                tf.TensorSpec([None], tf.int32, name=ig.TARGET_INPUT),
            ]
        )
        def explain(self, x: tf.Tensor, target: tf.Tensor) -> dict:
            predicted = tf.argmax(self.probabilities(x), axis=-1, output_type=tf.int32)
            target = tf.where(target < 0, predicted, target)
            return {ig.ATTRIBUTIONS: tfops.integrated_gradients(lambda z: logits_fn(self.w, z), x, target), ig.TARGET_INPUT: target}

    # saving traces every tf.function of the module: the explain one exists only where it applies
    module = Explainable() if spec.explainable else Exported()
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    signatures = {"serving_default": module.serve}
    if spec.explainable:
        signatures[ig.SIGNATURE] = module.explain
    tf.saved_model.save(module, str(path), signatures=signatures)


def savedmodel_writer(path: Path) -> dict:
    """The TensorFlow that wrote a SavedModel, as its saved_model.pb records it (the meta graph tagged
    "serve", the one TF Serving loads): its version and GraphDef producer version."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((path / "saved_model.pb").read_bytes())
    if not sm.meta_graphs:
        raise ExportError(f"{path / 'saved_model.pb'} holds no meta graph")
    mg = next((m for m in sm.meta_graphs if "serve" in m.meta_info_def.tags), sm.meta_graphs[0])
    return {"tensorflow": mg.meta_info_def.tensorflow_version, "graph_def_producer": mg.graph_def.versions.producer}


def _series(version: str) -> tuple[int, int] | None:
    """(major, minor) of a TensorFlow version ("2.20.0", "2.21.0-rc1", "v2.21"), None if none."""
    m = re.match(r"\s*v?(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_writer(name: str, writer: dict) -> None:
    """A SavedModel written by a newer TensorFlow than this one is refused here, as the project's
    TF Serving (same release as this TensorFlow, tests/test_tf_release.py) and the compatible server
    refuse it: it is not guaranteed to load. The rule is services/tfserving/compat/registry.py's
    check_writer, stated twice because each layer may import neither the other (models/ is the
    bottom, services/ imports nothing of the project); tests/test_compat_release.py runs both over
    the same cases so they cannot drift apart."""
    import tensorflow as tf

    written, own = writer["tensorflow"], tf.__version__
    newer = _series(written) is not None and _series(own) is not None and _series(written) > _series(own)
    if newer or writer["graph_def_producer"] > tf.version.GRAPH_DEF_VERSION:
        raise ExportError(
            f"model {name!r}: its SavedModel was written by TensorFlow {written or 'unknown'} (GraphDef version "
            f"{writer['graph_def_producer']}), newer than the project's TensorFlow {own} (GraphDef version "
            f"{tf.version.GRAPH_DEF_VERSION}), which its TF Serving runs: the server would refuse it. Save it again "
            f"with TensorFlow {'.'.join(map(str, _series(own) or ()))}"
        )


def build_mar(spec: ModelSpec, art: Artifacts, model_file: Path | None, weights: Path) -> None:
    """The TorchServe archive: your model (or the zoo's) with the project's generic handler and spec.json."""
    art.mar.parent.mkdir(parents=True, exist_ok=True)
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    cmd = [
        str(archiver),
        "--model-name", spec.name,
        "--version", f"{spec.version}.0",
        *(["--model-file", str(model_file)] if model_file else []),
        "--serialized-file", str(weights),
        "--handler", str(HANDLER),
        "--extra-files", str(art.spec_json),
        "--export-path", str(art.mar.parent),
        "--force",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ExportError(f"{spec.name}: torch-model-archiver failed: {proc.stderr.strip() or proc.stdout.strip()}")


def handler_module() -> Any:
    sys.path.insert(0, str(HANDLER.parent))
    try:
        return importlib.import_module("handler")
    finally:
        sys.path.remove(str(HANDLER.parent))


def load_torch_model_from_mar(mar: Path, workdir: Path) -> Any:
    """Unpack the archive and load its model with the handler's own loader, as a TorchServe worker would."""
    with zipfile.ZipFile(mar) as zf:
        zf.extractall(workdir)
    manifest = json.loads((workdir / "MAR-INF" / "MANIFEST.json").read_text())["model"]
    spec = json.loads((workdir / "spec.json").read_text())
    return handler_module().load_model(str(workdir), spec, manifest.get("modelFile"), manifest["serializedFile"])


def load_torch_from_mar(mar: Path, workdir: Path) -> Callable[[Any], Any]:
    """The archive's model as a function, run by the handler's own forward: named inputs -> named
    outputs, or (a single-input model) an array -> its first output."""
    model = load_torch_model_from_mar(mar, workdir)
    spec = json.loads((workdir / "spec.json").read_text())
    handler = handler_module()

    def run(x: Any) -> Any:
        inputs = x if isinstance(x, dict) else {spec["inputs"][0]["name"]: x}
        inputs = {t["name"]: list(inputs[t["name"]]) if t["dtype"] == "bytes" else inputs[t["name"]] for t in spec["inputs"]}
        out = handler.forward(model, spec, inputs)
        return out if isinstance(x, dict) else out[spec["outputs"][0]["name"]]

    return run


def load_savedmodel(path: Path, spec: ModelSpec) -> Callable[[Any], Any]:
    """The SavedModel's serving signature as a function, like load_torch_from_mar's."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures[spec.signature]
    names = [t.name for t in spec.outputs]

    def run(x: Any) -> Any:
        inputs = x if isinstance(x, dict) else {spec.input_name: x}
        out = fn(**{t.name: tf.constant(inputs[t.name]) for t in spec.inputs})
        values = {n: out[n].numpy() for n in names}
        return values if isinstance(x, dict) else values[spec.output_name]

    return run


def batched(fn: Callable[[Any], Any], x: Any, size: int = 64) -> Any:
    """fn over slices of x (an array or a dict of arrays), its answers joined."""
    if not isinstance(x, dict):
        return np.concatenate([fn(x[i : i + size]) for i in range(0, len(x), size)])
    total = len(next(iter(x.values())))
    parts = [fn({k: v[i : i + size] for k, v in x.items()}) for i in range(0, total, size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def measure_parity(spec: ModelSpec, art: Artifacts, seed: int, torch_loader: Callable = load_torch_from_mar) -> tuple[Any, dict]:
    """The SavedModel against the archive (the result returned), and model.onnx against the archive
    when one is staged (report["onnx"]; onnx_export.check gates it), on the same inputs."""
    from models import parity

    x, y, x_test, y_test = parity_inputs(spec, seed)
    inputs = x if isinstance(x, dict) else {spec.input_name: x}
    with tempfile.TemporaryDirectory() as tmp:
        torch_fn = torch_loader(art.mar, Path(tmp))
        torch_out = batched(torch_fn, inputs)
    tf_out = batched(load_savedmodel(art.savedmodel, spec), inputs)
    result = parity.compare_outputs(spec, torch_out, tf_out)
    report: dict[str, Any] = {"model": spec.name, "synthetic": spec.synthetic, **result.as_dict()}
    onnx_out = None
    if art.onnx_model.is_file():
        _, onnx_out, report["onnx"] = onnx_export.measure(spec, art.onnx_model, inputs, torch_out, tf_out)
    if y is not None:
        torch_probs, tf_probs = torch_out[spec.output_name], tf_out[spec.output_name]
        n_train = len(y) - len(x_test)
        report["accuracy"] = {
            "held_out_rows": len(x_test),
            "held_out_fraction": round(len(x_test) / len(y), 3),
            "torchserve_export": float((torch_probs[n_train:].argmax(-1) == y_test).mean()),
            "tensorflow_export": float((tf_probs[n_train:].argmax(-1) == y_test).mean()),
        }
        if onnx_out is not None:
            report["accuracy"]["onnx_export"] = float((onnx_out[spec.output_name][n_train:].argmax(-1) == y_test).mean())
    return result, report


def build_onnx(spec: ModelSpec, stage: Artifacts) -> dict:
    """The archive's model, loaded by the handler's own loader, exported to stage.onnx with a copy
    of spec.json beside it; the manifest's "onnx" entry. An imported model that cannot be exported
    is recorded with the reason (and no onnx folder); a zoo model must export."""
    with tempfile.TemporaryDirectory() as tmp:
        model = load_torch_model_from_mar(stage.mar, Path(tmp))
        info = onnx_export.export(spec, model, stage.onnx)
    if not info["exported"]:
        shutil.rmtree(stage.onnx, ignore_errors=True)
        if spec.zoo:
            raise ExportError(f"{spec.name}: the zoo's models must export to ONNX: {info['reason']}")
        return info
    shutil.copyfile(stage.spec_json, stage.onnx / "spec.json")
    return {**info, "path": str(stage.onnx_model.relative_to(stage.build))}


def build_zoo(spec: ModelSpec, art: Artifacts, seed: int) -> dict:
    """Train (or seed) the zoo model here and write both artifacts from the one set of weights."""
    import torch

    from models.mapping import to_tf_weights

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    zoo = zoo_module(spec.name)
    model = zoo.build_torch()
    training = zoo.train(model, seed)
    model.eval()
    torch.save(model.state_dict(), art.weights)
    build_mar(spec, art, ROOT / "models" / "zoo" / f"{spec.name}.py", art.weights)
    build_savedmodel(spec, zoo.tf_logits, to_tf_weights(model.state_dict()), art.savedmodel, getattr(zoo, "tf_preprocess", None))
    return training


def pack_imported(spec: ModelSpec, art: Artifacts) -> dict:
    """Your two artifacts as they are: the PyTorch side packed with the generic handler, the
    SavedModel copied into TF Serving's <base>/<name>/<version>/ layout."""
    fmt = spec.pytorch["format"]
    weights = spec.path(spec.pytorch.get("weights", ""))
    if not spec.pytorch.get("weights") or not weights.is_file():
        raise ExportError(f"model {spec.name!r}: pytorch.weights {spec.pytorch.get('weights')!r} is not a file")
    model_file = None
    if fmt == "state_dict":
        if not spec.pytorch.get("model_file") or not spec.pytorch.get("class"):
            raise ExportError(f"model {spec.name!r}: pytorch.format 'state_dict' needs pytorch.model_file and pytorch.class")
        model_file = spec.path(spec.pytorch["model_file"])
        if not model_file.is_file():
            raise ExportError(f"model {spec.name!r}: pytorch.model_file {str(model_file)!r} is not a file")
    saved = spec.path(spec.tensorflow["savedmodel"])
    if not (saved / "saved_model.pb").is_file():
        raise ExportError(f"model {spec.name!r}: tensorflow.savedmodel {str(saved)!r} is not a SavedModel directory (no saved_model.pb)")
    build_mar(spec, art, model_file, weights)
    shutil.copytree(saved, art.savedmodel)
    return {"trained": False, "note": f"imported: PyTorch {fmt} + SavedModel signature {spec.signature!r}"}


def export_model(name: str, build: Path = DEFAULT_BUILD, seed: int = DEFAULT_SEED, force: bool = False, spec: ModelSpec | None = None) -> dict:
    """Build one model's artifacts and prove parity. Everything is written under a staging folder
    first and moved into the model store only once parity holds, so a failure leaves the store
    (models/build/) exactly as it was."""
    spec = spec or get_spec(name)
    art = Artifacts(build, name, spec.version)
    fp = fingerprint(spec, seed)
    if not force and art.complete():
        manifest = json.loads(art.manifest.read_text())
        if manifest.get("fingerprint") == fp:
            return {**manifest, "cached": True}

    from models import parity

    started = time.perf_counter()
    build.mkdir(parents=True, exist_ok=True)
    for stale in build.glob(f".staging-{name}-*"):  # left by an export that was killed
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=build))
    try:
        stage = Artifacts(staging, name, spec.version)
        stage.work.mkdir(parents=True)
        stage.spec_json.write_text(spec.to_json())
        training = build_zoo(spec, stage, seed) if spec.zoo else pack_imported(spec, stage)
        writer = savedmodel_writer(stage.savedmodel)  # the zoo's: this TensorFlow (tf.__version__); yours: whichever saved it
        check_writer(name, writer)
        onnx = build_onnx(spec, stage)
        result, report = measure_parity(spec, stage, seed)
        report["savedmodel_written_by"] = writer
        if onnx["exported"]:
            report["onnx"].update(exporter=onnx["exporter"], export_seconds=onnx["seconds"])
        else:
            report["onnx"] = onnx
        stage.parity.write_text(json.dumps(report, indent=2))
        parity.check(result, name)
        onnx_export.check(report["onnx"], name)
        floor = ACCURACY_FLOOR.get(name) if spec.zoo else None
        if floor is not None:
            worst = min(report["accuracy"][k] for k in ("torchserve_export", "tensorflow_export", "onnx_export") if k in report["accuracy"])
            if worst < floor:
                raise ExportError(f"{name}: held-out accuracy {worst:.4f} is below the floor {floor}")
        manifest = {
            "model": name,
            "fingerprint": fp,
            "seed": seed,
            "synthetic": spec.synthetic,
            "training": training,
            "parity": report,
            # tensorflow: the one that ran this export; savedmodel_tensorflow: the one that wrote the SavedModel
            "versions": {
                "torch": metadata.version("torch"),
                "tensorflow": metadata.version("tensorflow"),
                "savedmodel_tensorflow": writer["tensorflow"],
                **({"onnx": metadata.version("onnx"), "onnxscript": metadata.version("onnxscript"), "onnxruntime": metadata.version("onnxruntime")} if onnx["exported"] else {}),
            },
            "mar": str(art.mar.relative_to(build)),
            "savedmodel": str(art.savedmodel.relative_to(build)),
            # exported: exporter, opset, the graph's input, path, bytes, seconds; or not: the reason
            "onnx": onnx,
            "seconds": round(time.perf_counter() - started, 2),
        }
        stage.manifest.write_text(json.dumps(manifest, indent=2))
        install(stage, art)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**manifest, "cached": False}


def install(stage: Artifacts, art: Artifacts) -> None:
    """Move a staged model into the store: its work folder, archive, SavedModel version and ONNX
    folder (an old ONNX folder is removed when the model no longer exports). The old manifest.json
    goes first, so a crash half-way leaves a model that is rebuilt, never one that looks complete
    with mismatched artifacts."""
    art.manifest.unlink(missing_ok=True)
    if not stage.onnx.exists():
        shutil.rmtree(art.onnx, ignore_errors=True)
    moves = [(stage.savedmodel, art.savedmodel), (stage.mar, art.mar), *([(stage.onnx, art.onnx)] if stage.onnx.exists() else []), (stage.work, art.work)]
    for src, dst in moves:  # the work folder (manifest.json) last: it marks the model complete
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_dir():
            shutil.rmtree(dst)
        elif dst.exists():
            dst.unlink()
        shutil.move(str(src), str(dst))
