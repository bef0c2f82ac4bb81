"""The single source of truth for each model's interface.

Plain data with no torch or TensorFlow import, so that the gateway and the load
tests can read it without paying for either framework. The TorchServe handler,
the SavedModel signature, the gateway's validation and the load-test payloads
all derive their names and shapes from here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input_name: str
    shape: tuple[int, ...]  # per instance, canonical layout (channels last)
    labels: tuple[str, ...]
    description: str
    dtype: str = "float32"
    output_name: str = "probabilities"
    synthetic: bool = False  # seeded random weights, not trained
    value_range: tuple[float, float] | None = None  # documented input range, not enforced
    max_batch: int = 64  # instances per request accepted by the handler and gateway
    version: int = 1
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def instance_size(self) -> int:
        size = 1
        for dim in self.shape:
            size *= dim
        return size

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        data = dict(data)
        data["shape"] = tuple(data["shape"])
        data["labels"] = tuple(data["labels"])
        if data.get("value_range") is not None:
            data["value_range"] = tuple(data["value_range"])
        return cls(**data)


SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="digits",
            input_name="pixels",
            shape=(8, 8),
            labels=tuple(str(d) for d in range(10)),
            description="Small CNN trained on scikit-learn's bundled 8x8 digits (pixel values 0-16).",
            value_range=(0.0, 16.0),
        ),
        ModelSpec(
            name="tabular",
            input_name="features",
            shape=(30,),
            labels=("malignant", "benign"),
            description="MLP trained on scikit-learn's bundled breast-cancer data; standardisation is inside the graph, send raw features.",
        ),
        ModelSpec(
            name="resnet",
            input_name="image",
            shape=(32, 32, 3),
            labels=tuple(f"class_{i}" for i in range(10)),
            description="ResNet-style classifier on 32x32x3 images with SEEDED RANDOM weights (synthetic: for load, not accuracy).",
            synthetic=True,
            value_range=(0.0, 1.0),
            max_batch=32,
        ),
    )
}

MODEL_NAMES: tuple[str, ...] = tuple(SPECS)


def get_spec(name: str) -> ModelSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}") from None
