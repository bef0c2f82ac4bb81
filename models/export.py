"""Train or seed each zoo model, write the TorchServe archive and the SavedModel, prove parity.

Parity is measured on the artifacts as written (the .mar unpacked and loaded by
the handler's own loader, the SavedModel loaded by TensorFlow), never on the
in-memory models, so a fault in packaging is caught as surely as one in the
weight mapping. A second run with nothing changed is a cache hit: the manifest's
fingerprint covers every source file and version that shapes an artifact.
"""

from __future__ import annotations

import hashlib
import importlib
import json
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

from models.spec import ModelSpec, get_spec

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUILD = ROOT / "models" / "build"
HANDLER = ROOT / "services" / "torchserve" / "handler.py"
DEFAULT_SEED = 20261125
PARITY_ROWS = 512
ACCURACY_FLOOR = {"digits": 0.95, "tabular": 0.90}
SOURCES = ["models/spec.py", "models/explain.py", "models/training.py", "models/tfops.py", "models/mapping.py", "models/export.py", "services/torchserve/handler.py"]


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
        return all(p.exists() for p in (self.mar, self.savedmodel / "saved_model.pb", self.parity, self.manifest))


def zoo_module(name: str) -> Any:
    return importlib.import_module(f"models.zoo.{name}")


def fingerprint(name: str, seed: int) -> str:
    digest = hashlib.sha256()
    for rel in [*SOURCES, f"models/zoo/{name}.py"]:
        digest.update(rel.encode())
        digest.update((ROOT / rel).read_bytes())
    for dist in ("torch", "tensorflow", "torch-model-archiver", "numpy", "scikit-learn"):
        digest.update(f"{dist}={metadata.version(dist)}".encode())
    digest.update(str(seed).encode())
    return digest.hexdigest()


def parity_inputs(spec: ModelSpec, seed: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(all inputs, all labels, held-out inputs, held-out labels): real rows where the model has a dataset."""
    split = zoo_module(spec.name).dataset(seed)
    if split is None:
        rng = np.random.default_rng(seed)
        return rng.random((PARITY_ROWS, *spec.shape), dtype=np.float32), None, None, None
    x_train, x_test, y_train, y_test = split
    x = np.concatenate([x_train, x_test])
    y = np.concatenate([y_train, y_test])
    return x, y, x_test, y_test


def build_savedmodel(spec: ModelSpec, logits_fn: Callable, weights: dict[str, np.ndarray], path: Path) -> None:
    import tensorflow as tf

    from models import explain as ig
    from models import tfops

    class Exported(tf.Module):
        def __init__(self) -> None:
            super().__init__(name=spec.name)
            self.w = {k: tf.Variable(v, trainable=False, name=k.replace(".", "_")) for k, v in weights.items()}

        def probabilities(self, x: tf.Tensor) -> tf.Tensor:
            return tf.nn.softmax(logits_fn(self.w, x), axis=-1)

        @tf.function(input_signature=[tf.TensorSpec([None, *spec.shape], tf.float32, name=spec.input_name)])
        def serve(self, x: tf.Tensor) -> dict:
            return {spec.output_name: self.probabilities(x)}

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

    module = Exported()
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve, ig.SIGNATURE: module.explain})


def build_mar(spec: ModelSpec, art: Artifacts) -> None:
    art.mar.parent.mkdir(parents=True, exist_ok=True)
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    cmd = [
        str(archiver),
        "--model-name", spec.name,
        "--version", f"{spec.version}.0",
        "--model-file", str(ROOT / "models" / "zoo" / f"{spec.name}.py"),
        "--serialized-file", str(art.weights),
        "--handler", str(HANDLER),
        "--extra-files", str(art.spec_json),
        "--export-path", str(art.mar.parent),
        "--force",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ExportError(f"{spec.name}: torch-model-archiver failed: {proc.stderr.strip() or proc.stdout.strip()}")


def load_torch_model_from_mar(mar: Path, workdir: Path) -> Any:
    """Unpack the archive and load its model with the handler's own loader, as a TorchServe worker would."""
    sys.path.insert(0, str(HANDLER.parent))
    try:
        handler = importlib.import_module("handler")
    finally:
        sys.path.remove(str(HANDLER.parent))
    with zipfile.ZipFile(mar) as zf:
        zf.extractall(workdir)
    manifest = json.loads((workdir / "MAR-INF" / "MANIFEST.json").read_text())["model"]
    return handler.load_model(str(workdir), manifest["modelFile"], manifest["serializedFile"])


def load_torch_from_mar(mar: Path, workdir: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The archive's model as a function from rows to probabilities."""
    import torch

    model = load_torch_model_from_mar(mar, workdir)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run


def load_savedmodel(path: Path, spec: ModelSpec) -> Callable[[np.ndarray], np.ndarray]:
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures["serving_default"]

    def run(x: np.ndarray) -> np.ndarray:
        return fn(**{spec.input_name: tf.constant(x)})[spec.output_name].numpy()

    return run


def batched(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, size: int = 256) -> np.ndarray:
    return np.concatenate([fn(x[i : i + size]) for i in range(0, len(x), size)])


def measure_parity(spec: ModelSpec, art: Artifacts, seed: int, torch_loader: Callable = load_torch_from_mar) -> tuple[Any, dict]:
    from models import parity

    x, y, x_test, y_test = parity_inputs(spec, seed)
    with tempfile.TemporaryDirectory() as tmp:
        torch_fn = torch_loader(art.mar, Path(tmp))
        torch_probs = batched(torch_fn, x)
    tf_probs = batched(load_savedmodel(art.savedmodel, spec), x)
    result = parity.compare(torch_probs, tf_probs)
    report: dict[str, Any] = {"model": spec.name, "synthetic": spec.synthetic, **result.as_dict()}
    if y is not None:
        n_train = len(x) - len(x_test)
        report["accuracy"] = {
            "held_out_rows": len(x_test),
            "held_out_fraction": round(len(x_test) / len(x), 3),
            "torchserve_export": float((torch_probs[n_train:].argmax(-1) == y_test).mean()),
            "tensorflow_export": float((tf_probs[n_train:].argmax(-1) == y_test).mean()),
        }
    return result, report


def export_model(name: str, build: Path = DEFAULT_BUILD, seed: int = DEFAULT_SEED, force: bool = False) -> dict:
    spec = get_spec(name)
    art = Artifacts(build, name, spec.version)
    fp = fingerprint(name, seed)
    if not force and art.complete():
        manifest = json.loads(art.manifest.read_text())
        if manifest.get("fingerprint") == fp:
            return {**manifest, "cached": True}

    import torch

    from models import parity
    from models.mapping import to_tf_weights

    started = time.perf_counter()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    zoo = zoo_module(name)
    model = zoo.build_torch()
    training = zoo.train(model, seed)
    model.eval()

    art.work.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), art.weights)
    art.spec_json.write_text(spec.to_json())
    build_mar(spec, art)
    build_savedmodel(spec, zoo.tf_logits, to_tf_weights(model.state_dict()), art.savedmodel)

    result, report = measure_parity(spec, art, seed)
    art.parity.write_text(json.dumps(report, indent=2))
    parity.check(result, name)
    floor = ACCURACY_FLOOR.get(name)
    if floor is not None:
        worst = min(report["accuracy"]["torchserve_export"], report["accuracy"]["tensorflow_export"])
        if worst < floor:
            raise ExportError(f"{name}: held-out accuracy {worst:.4f} is below the floor {floor}")

    manifest = {
        "model": name,
        "fingerprint": fp,
        "seed": seed,
        "synthetic": spec.synthetic,
        "training": training,
        "parity": report,
        "mar": str(art.mar.relative_to(build)),
        "savedmodel": str(art.savedmodel.relative_to(build)),
        "seconds": round(time.perf_counter() - started, 2),
    }
    art.manifest.write_text(json.dumps(manifest, indent=2))
    return {**manifest, "cached": False}
