"""The request bodies every target gets: real dataset rows for digits and tabular, seeded inputs for resnet.

Built once per load process and cycled, so generating load costs no JSON
encoding per request. No torch or TensorFlow import: scikit-learn ships the data.
"""

from __future__ import annotations

import numpy as np
import orjson

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


def bodies(model: str, instances: int, count: int = 64) -> list[bytes]:
    """`count` V1 bodies of `instances` rows each, taken in turn from the data."""
    spec = get_spec(model)
    data = rows(spec, max(256, instances))
    out = []
    for i in range(count):
        idx = [(i * instances + j) % len(data) for j in range(instances)]
        out.append(orjson.dumps({"instances": data[idx]}, option=orjson.OPT_SERIALIZE_NUMPY))
    return out


def check_answer(content: bytes, instances: int, num_classes: int) -> str | None:
    """None when the answer has the right shape and is a probability vector per row, else what is wrong."""
    try:
        data = orjson.loads(content)
        preds = data["predictions"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "answer has no 'predictions'"
    if not isinstance(preds, list) or len(preds) != instances:
        return f"expected {instances} rows of predictions, got {len(preds) if isinstance(preds, list) else type(preds).__name__}"
    for row in preds:
        if not isinstance(row, list) or len(row) != num_classes:
            return f"expected {num_classes} probabilities per row"
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
        error = orjson.loads(content)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"HTTP {status} unexplained"
    if isinstance(error, dict):
        return f"HTTP {status} {error.get('type')} (backend {error.get('backend')})"
    return f"HTTP {status} {str(error)[:80]}"
