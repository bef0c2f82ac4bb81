"""The request bodies every target gets: real dataset rows for digits and tabular, every other
model's sample inputs (models/samples.py: your .npz, the image model's JPEG photos, or generated
from the spec), the same inputs parity was measured on.

Built once per load process and cycled, so generating load costs no JSON
encoding per request. No torch or TensorFlow import: scikit-learn ships the data.
"""

from __future__ import annotations

import base64

import numpy as np
import orjson

from models import samples
from models.spec import ModelSpec, get_spec

SEED = 1234


def rows(spec: ModelSpec, count: int = 256) -> np.ndarray:
    if spec.name == "digits":
        from sklearn.datasets import load_digits

        x = load_digits().images.astype(np.float32)
    elif spec.name == "tabular":
        from sklearn.datasets import load_breast_cancer

        x = load_breast_cancer().data.astype(np.float32)
    else:
        x = np.random.default_rng(SEED).random((count, *spec.shape), dtype=np.float32)
    return x[:count]


def inputs(spec: ModelSpec, count: int = 256) -> dict[str, np.ndarray]:
    if spec.name in ("digits", "tabular", "resnet") and spec.zoo:
        return {spec.input_name: rows(spec, count)}
    return samples.inputs(spec, samples.DEFAULT_SEED)  # the inputs parity was proven on


def value(v: object) -> object:
    return {"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v


def bodies(model: str, instances: int, count: int = 64) -> list[bytes]:
    """`count` V1 bodies of `instances` instances each, taken in turn from the data: rows of one
    input, or objects naming every input; bytes as {"b64": ...}."""
    spec = get_spec(model)
    data = inputs(spec, max(256, instances))
    size = len(next(iter(data.values())))
    out = []
    for i in range(count):
        idx = [(i * instances + j) % size for j in range(instances)]
        if len(spec.inputs) == 1 and not spec.inputs[0].is_bytes:
            body: object = {"instances": data[spec.input_name][idx]}
        elif len(spec.inputs) == 1:
            body = {"instances": [value(data[spec.input_name][j]) for j in idx]}
        else:
            body = {"instances": [{t.name: value(data[t.name][j]) for t in spec.inputs} for j in idx]}
        out.append(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
    return out


def check_answer(content: bytes, instances: int, spec: ModelSpec) -> str | None:
    """None when the answer has one prediction per instance (for a classifier, a probability
    vector per row; with several outputs, an object naming each), else what is wrong."""
    try:
        data = orjson.loads(content)
        preds = data["predictions"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "answer has no 'predictions'"
    if not isinstance(preds, list) or len(preds) != instances:
        return f"expected {instances} rows of predictions, got {len(preds) if isinstance(preds, list) else type(preds).__name__}"
    if len(spec.outputs) > 1:
        names = {t.name for t in spec.outputs}
        if not all(isinstance(row, dict) and set(row) == names for row in preds):
            return f"expected every prediction to name the outputs {sorted(names)}"
        return None
    if spec.classifier:
        for row in preds:
            if not isinstance(row, list) or len(row) != spec.num_classes:
                return f"expected {spec.num_classes} probabilities per row"
            if abs(sum(row) - 1.0) > 1e-3:
                return "probabilities do not sum to 1"
    return None


def check_explanation(content: bytes, instances: int, shape: tuple[int, ...]) -> str | None:
    """None when there is one attribution tensor of the input's shape per row, else what is wrong."""
    try:
        explanations = orjson.loads(content)["explanations"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "answer has no 'explanations'"
    if not isinstance(explanations, list) or len(explanations) != instances:
        return f"expected {instances} explanations"
    for e in explanations:
        if np.asarray(e.get("attributions")).shape != shape:
            return f"attributions must have the input's shape {list(shape)}"
    return None


def describe_error(status: int, content: bytes) -> str:
    """A failure reason that says whether the error was a clear one naming a backend."""
    try:
        body = orjson.loads(content)
        error = body["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"HTTP {status} unexplained"
    if "type" in body:  # the gateway's detail beside the protocol's {"error": "<message>"}
        return f"HTTP {status} {body.get('type')} (backend {body.get('backend')})"
    return f"HTTP {status} {str(error)[:80]}"
