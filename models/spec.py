"""Each served model's interface, read from the model manifest (`twinserve.toml`).

Plain data with no torch or TensorFlow import, so that the gateway and the load
tests can read it without paying for either framework. The TorchServe handler,
the SavedModel signature, the gateway's validation and the load-test payloads
all derive their names, dtypes and shapes from here. The zoo is the default
manifest's content, not a special case: a model imported with `twinserve
import` is one more `[models.<name>]` table in the same file.

The manifest is `$TWINSERVE_MANIFEST` when set, else `twinserve.toml` at the
project root. Paths inside it are relative to the manifest's own folder.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = ROOT / "twinserve.toml"
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")  # used with fullmatch
RESERVED = frozenset({"model-store", "tfserving", "onnx", "imports"})  # folders of the model store and the manifest's

# manifest dtype -> (numpy dtype name, KServe V2 datatype, TensorFlow dtype name)
DTYPES: dict[str, tuple[str, str, str]] = {
    "float32": ("float32", "FP32", "float32"),
    "float16": ("float16", "FP16", "float16"),
    "float64": ("float64", "FP64", "float64"),
    "int8": ("int8", "INT8", "int8"),
    "uint8": ("uint8", "UINT8", "uint8"),
    "int32": ("int32", "INT32", "int32"),
    "int64": ("int64", "INT64", "int64"),
    "bool": ("bool", "BOOL", "bool"),
    "bytes": ("object", "BYTES", "string"),
}
ALIASES = {"string": "bytes", "str": "bytes", "half": "float16", "float": "float32", "double": "float64", "long": "int64", "int": "int32"}
TORCH_FORMATS = ("zoo", "state_dict", "torchscript", "export")
MAX_BATCH = 64  # the TF backend's max_batch_size (twinserve/launchers/tfserving_config.py)


class ManifestError(ValueError):
    """A manifest entry that cannot be used: the message names the entry and the field."""


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output: dtype and shape per instance (-1: any size in that dimension)."""

    name: str
    dtype: str = "float32"
    shape: tuple[int, ...] = ()
    max_bytes: int | None = None  # bytes inputs: the largest value accepted (413 beyond it)
    max_pixels: int | None = None  # image bytes inputs: the largest width x height accepted (413 beyond it)

    @property
    def numpy_dtype(self) -> str:
        return DTYPES[self.dtype][0]

    @property
    def v2_datatype(self) -> str:
        return DTYPES[self.dtype][1]

    @property
    def tf_dtype(self) -> str:
        return DTYPES[self.dtype][2]

    @property
    def is_bytes(self) -> bool:
        return self.dtype == "bytes"

    @property
    def fixed(self) -> bool:
        return all(d >= 0 for d in self.shape)

    def matches(self, shape: tuple[int, ...]) -> bool:
        """Does one instance of this shape fit (every -1 dimension takes any size)?"""
        return len(shape) == len(self.shape) and all(e < 0 or e == a for e, a in zip(self.shape, shape))

    def shown(self) -> str:
        return "[" + ", ".join(str(d) for d in self.shape) + "]"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    description: str = ""
    labels: tuple[str, ...] = ()  # class names, when the first output is a classifier's probabilities
    synthetic: bool = False  # seeded random weights, not trained
    value_range: tuple[float, float] | None = None  # documented input range, not enforced
    max_batch: int = 64  # instances per request accepted by the handler and gateway
    version: int = 1
    tolerance: float = 1e-4  # parity: the largest absolute difference allowed between the two exports
    signature: str = "serving_default"
    explainable: bool = False  # has the `explain` signature (zoo classifiers over one float input)
    pytorch: dict[str, str] = field(default_factory=dict)  # format + files (see README, "Your own models")
    tensorflow: dict[str, str] = field(default_factory=dict)  # savedmodel + signature
    samples: str | None = None  # an .npz of real inputs, one array per input name
    base: str = ""  # the folder the manifest's relative paths start from

    # the zoo's single-input classifiers read these; a model with several inputs uses `inputs`
    @property
    def input_name(self) -> str:
        return self.inputs[0].name

    @property
    def shape(self) -> tuple[int, ...]:
        return self.inputs[0].shape

    @property
    def dtype(self) -> str:
        return self.inputs[0].dtype

    @property
    def output_name(self) -> str:
        return self.outputs[0].name

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def classifier(self) -> bool:
        """Probabilities over labels in the first output: class agreement means something."""
        return bool(self.labels) and self.outputs[0].shape == (len(self.labels),)

    @property
    def zoo(self) -> bool:
        return self.pytorch.get("format") == "zoo"

    @property
    def instance_size(self) -> int:
        size = 1
        for dim in self.shape:
            size *= max(dim, 1)
        return size

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def path(self, value: str) -> Path:
        """A manifest path, resolved against the manifest's folder."""
        p = Path(value)
        return p if p.is_absolute() else Path(self.base or ROOT) / p

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        data = dict(data)
        data["inputs"] = tuple(TensorSpec(**{**t, "shape": tuple(t["shape"])}) for t in data["inputs"])
        data["outputs"] = tuple(TensorSpec(**{**t, "shape": tuple(t["shape"])}) for t in data["outputs"])
        data["labels"] = tuple(data.get("labels", ()))
        if data.get("value_range") is not None:
            data["value_range"] = tuple(data["value_range"])
        return cls(**data)


# reading a manifest -------------------------------------------------------------------------------
def check_name(name: str) -> None:
    """A model name is also a folder and a URL segment: letters, digits, '_' and '-', and not one of
    the model store's own folders."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or name in RESERVED:
        raise ManifestError(f"model {name!r}: a model name is 1-63 letters, digits, '_' and '-', starting with a letter, and not {', '.join(sorted(RESERVED))}")


def _tensor(entry: str, where: str, raw: Any) -> TensorSpec:
    if not isinstance(raw, dict):
        raise ManifestError(f"model {entry!r}: each of {where} must be a table with name, dtype and shape")
    known = {"name", "dtype", "shape", "max_bytes", "max_pixels"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ManifestError(f"model {entry!r}: {where} field {unknown[0]!r} is not known (fields: {', '.join(sorted(known))})")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ManifestError(f"model {entry!r}: every entry of {where} needs a 'name'")
    dtype = raw.get("dtype")
    dtype = ALIASES.get(dtype, dtype) if isinstance(dtype, str) else None
    if dtype not in DTYPES:
        raise ManifestError(f"model {entry!r}: {where} {name!r} has dtype {raw.get('dtype')!r}; use one of {', '.join(DTYPES)}")
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1) for d in shape):
        raise ManifestError(f"model {entry!r}: {where} {name!r} needs 'shape', the shape of one instance as a list of positive sizes or -1 (e.g. [224, 224, 3], or [] for a scalar)")
    for limit in ("max_bytes", "max_pixels"):
        value = raw.get(limit)
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ManifestError(f"model {entry!r}: {where} {name!r} field {limit!r} must be a positive integer")
    if dtype == "bytes" and shape:
        raise ManifestError(f"model {entry!r}: {where} {name!r}: a bytes tensor is one value per instance, shape []")
    if where == "outputs" and dtype == "bytes":
        raise ManifestError(f"model {entry!r}: output {name!r}: bytes outputs are not served yet (numbers and booleans are)")
    return TensorSpec(name, dtype, tuple(shape), raw.get("max_bytes"), raw.get("max_pixels"))


def _entry(name: str, raw: Any, base: Path) -> ModelSpec:
    check_name(name)
    if not isinstance(raw, dict):
        raise ManifestError(f"model {name!r}: must be a table")
    known = {"description", "labels", "classes", "synthetic", "value_range", "max_batch", "version", "tolerance", "inputs", "outputs", "pytorch", "tensorflow", "samples", "explainable"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ManifestError(f"model {name!r}: field {unknown[0]!r} is not known (fields: {', '.join(sorted(known))})")
    for key in ("inputs", "outputs"):
        if not isinstance(raw.get(key), list) or not raw[key]:
            raise ManifestError(f"model {name!r}: needs '{key}', a list of tensors ([[models.{name}.{key}]] tables)")
    inputs = tuple(_tensor(name, "inputs", t) for t in raw["inputs"])
    outputs = tuple(_tensor(name, "outputs", t) for t in raw["outputs"])
    for key, tensors in (("inputs", inputs), ("outputs", outputs)):
        names = [t.name for t in tensors]
        if len(set(names)) != len(names):
            raise ManifestError(f"model {name!r}: {key} names repeat: {names}")
    pytorch = raw.get("pytorch", {})
    if not isinstance(pytorch, dict) or pytorch.get("format") not in TORCH_FORMATS:
        raise ManifestError(f"model {name!r}: pytorch.format must be one of {', '.join(TORCH_FORMATS)}")
    tensorflow = raw.get("tensorflow", {})
    if not isinstance(tensorflow, dict):
        raise ManifestError(f"model {name!r}: tensorflow must be a table (savedmodel, signature)")
    if pytorch["format"] != "zoo" and not tensorflow.get("savedmodel"):
        raise ManifestError(f"model {name!r}: tensorflow.savedmodel is required (the SavedModel directory)")
    ints = {"max_batch": raw.get("max_batch", 64), "version": raw.get("version", 1)}
    for key, value in ints.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ManifestError(f"model {name!r}: field {key!r} must be a positive integer")
    if ints["max_batch"] > MAX_BATCH:
        raise ManifestError(f"model {name!r}: field 'max_batch' is at most {MAX_BATCH} (the TF backend's largest batch)")
    if tensorflow.get("signature", "serving_default") != "serving_default":
        raise ManifestError(f"model {name!r}: tensorflow.signature must be 'serving_default', the signature both the gateway and TF Serving's REST API call by default: export the SavedModel with its serving function under that name")
    for key in ("synthetic", "explainable"):
        if not isinstance(raw.get(key, False), bool):
            raise ManifestError(f"model {name!r}: field {key!r} must be true or false")
    tolerance = raw.get("tolerance", 1e-4)
    if not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise ManifestError(f"model {name!r}: field 'tolerance' must be a non-negative number")
    labels = raw.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ManifestError(f"model {name!r}: field 'labels' must be a list of strings")
    classes = raw.get("classes")
    if classes is not None:  # many classes, no names: class_0, class_1, ...
        if labels or not isinstance(classes, int) or isinstance(classes, bool) or classes < 2:
            raise ManifestError(f"model {name!r}: field 'classes' is a count of at least 2, given instead of 'labels'")
        labels = [f"class_{i}" for i in range(classes)]
    value_range = raw.get("value_range")
    if value_range is not None and not (isinstance(value_range, list) and len(value_range) == 2 and all(isinstance(v, (int, float)) for v in value_range)):
        raise ManifestError(f"model {name!r}: field 'value_range' must be [low, high]")
    if raw.get("samples") is not None and not isinstance(raw["samples"], str):
        raise ManifestError(f"model {name!r}: field 'samples' must be a path")
    return ModelSpec(
        name=name,
        inputs=inputs,
        outputs=outputs,
        description=str(raw.get("description", "")),
        labels=tuple(labels),
        synthetic=bool(raw.get("synthetic", False)),
        value_range=tuple(value_range) if value_range else None,  # type: ignore[arg-type]
        max_batch=ints["max_batch"],
        version=ints["version"],
        tolerance=float(tolerance),
        signature=str(tensorflow.get("signature", "serving_default")),
        explainable=bool(raw.get("explainable", False)),
        pytorch={k: str(v) for k, v in pytorch.items()},
        tensorflow={k: str(v) for k, v in tensorflow.items()},
        samples=raw.get("samples"),
        base=str(base),
    )


def parse_manifest(data: dict, base: Path) -> dict[str, ModelSpec]:
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ManifestError("'models' must be tables: [models.<name>]")
    return {name: _entry(name, raw, base) for name, raw in models.items()}


def manifest_path() -> Path:
    return Path(os.environ.get("TWINSERVE_MANIFEST") or DEFAULT_MANIFEST)


def load_manifest(path: Path | None = None) -> dict[str, ModelSpec]:
    path = Path(path or manifest_path())
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"no model manifest at {path} (set TWINSERVE_MANIFEST or pass --manifest)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: not valid TOML: {exc}") from None
    return parse_manifest(data, path.resolve().parent)


SPECS: dict[str, ModelSpec] = load_manifest()
MODEL_NAMES: tuple[str, ...] = tuple(SPECS)


def get_spec(name: str) -> ModelSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}") from None
