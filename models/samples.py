"""Sample inputs of every model, framework-free: what parity is measured on and load tests send.

One source for both, so the bench sends the inputs parity was proven on: your
manifest's samples .npz (one array per input name), the zoo image model's JPEG
photos, or inputs generated from the spec. numpy (and, for images, Pillow and
scikit-learn's bundled photos) only: loadtests/ imports this without torch or
TensorFlow.
"""

from __future__ import annotations

import numpy as np

from models.spec import ModelSpec

GENERATED_ROWS = 64


class SampleError(ValueError):
    pass


def inputs(spec: ModelSpec, seed: int, count: int = GENERATED_ROWS) -> dict[str, np.ndarray]:
    """The model's sample inputs by name: the manifest's .npz, the image model's photos, or
    generated (floats in [0, 1), integers in [0, 10), booleans; -1 dimensions of size 4)."""
    if spec.samples:
        return from_npz(spec)
    if len(spec.inputs) == 1 and spec.inputs[0].is_bytes and spec.inputs[0].max_pixels:
        return {spec.input_name: jpeg_photos(seed)}
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for t in spec.inputs:
        shape = (count, *(4 if d < 0 else d for d in t.shape))
        if t.is_bytes:
            raise SampleError(f"model {spec.name!r}: input {t.name!r} takes bytes, which cannot be generated: give 'samples', an .npz of real inputs")
        if t.dtype == "bool":
            out[t.name] = rng.random(shape) < 0.5
        elif t.dtype.startswith(("int", "uint")):
            out[t.name] = rng.integers(0, 10, shape).astype(t.numpy_dtype)
        else:
            out[t.name] = rng.random(shape).astype(t.numpy_dtype)
    return out


def from_npz(spec: ModelSpec) -> dict[str, np.ndarray]:
    path = spec.path(spec.samples or "")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SampleError(f"model {spec.name!r}: samples file {path} cannot be read: {exc}") from None
    with data:
        missing = [t.name for t in spec.inputs if t.name not in data.files]
        if missing:
            raise SampleError(f"model {spec.name!r}: samples file {path} has no array {missing[0]!r} (it holds {data.files})")
        out = {}
        for t in spec.inputs:
            arr = data[t.name]
            out[t.name] = np.array([bytes(v) for v in arr], dtype=object) if t.is_bytes else arr.astype(t.numpy_dtype)
    return out


def jpeg_photos(seed: int) -> np.ndarray:
    """Real photos as JPEG bytes: scikit-learn's two bundled photos and seeded variations of them."""
    raise SampleError("jpeg samples: not yet")
