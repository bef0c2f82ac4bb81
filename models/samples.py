"""Sample inputs of every model, framework-free: what parity is measured on and load tests send.

One source for both, so the bench sends the inputs parity was proven on: your
manifest's samples .npz (one array per input name), the zoo image model's JPEG
photos, or inputs generated from the spec. numpy (and, for images, Pillow and
scikit-learn's bundled photos) only: loadtests/ imports this without torch or
TensorFlow.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from models.spec import ModelSpec

GENERATED_ROWS = 64
DEFAULT_SEED = 20261125  # the exports' seed: parity runs on these inputs, and the bench sends the same


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


JPEG_SAMPLES = 28


def jpeg_photos(seed: int, count: int = JPEG_SAMPLES) -> np.ndarray:
    """Real photos as JPEG bytes (a numpy object array), deterministic for a seed: scikit-learn's two
    bundled photos (china, flower; 427x640) as shipped, then seeded variations: crops of 15-100% of
    the area at aspect ratios 3:5 to 5:3, flips, rescalings by x0.3 to x1.6 (one 800x600 and one
    160x120 for certain), two converted to grayscale (still 3-channel), re-encoded by Pillow at JPEG
    qualities 60-95 with 4:4:4, 4:2:2 or 4:2:0 chroma, some progressive. Nothing is downloaded."""
    rng = np.random.default_rng(seed)
    originals = photos()
    out: list[bytes] = [raw for _, raw in originals]
    fixed_size = {2: (800, 600), 3: (160, 120)}  # bigger than 224 in both dimensions; smaller in both
    gray = {7, 18}
    for i in range(2, count):
        image, _ = originals[i % 2]
        varied = augment(image, rng, size=fixed_size.get(i), gray=i in gray)
        out.append(encode_jpeg(varied, int(rng.integers(60, 96)), int(rng.integers(0, 3)), progressive=bool(rng.random() < 0.25)))
    result = np.empty(len(out), dtype=object)
    result[:] = out
    return result


def calibration_images(seed: int, count: int, size: int) -> list[bytes]:
    """Square crops of the bundled photos as JPEG bytes (the image model's BatchNorm calibration)."""
    rng = np.random.default_rng(seed)
    originals = photos()
    return [encode_jpeg(augment(originals[i % 2][0], rng, size=(size, size), gray=bool(rng.random() < 0.1)), int(rng.integers(60, 96))) for i in range(count)]


def photos() -> list[tuple[Any, bytes]]:
    """scikit-learn's sample photos: (RGB PIL image, the original JPEG file's bytes)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    return [(Image.fromarray(array), Path(filename).read_bytes()) for array, filename in zip(bunch.images, bunch.filenames)]


def encode_jpeg(image: Any, quality: int, subsampling: int = 2, progressive: bool = False) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality, subsampling=subsampling, progressive=progressive)
    return buf.getvalue()


def augment(image: Any, rng: np.random.Generator, size: tuple[int, int] | None = None, gray: bool = False) -> Any:
    """A random crop (15-100% of the area, aspect 3:5 to 5:3), maybe flipped, rescaled to `size` or by x0.3 to x1.6."""
    from PIL import Image

    w, h = image.size
    for _ in range(20):
        area = rng.uniform(0.15, 1.0) * w * h
        aspect = math.exp(rng.uniform(math.log(3 / 5), math.log(5 / 3)))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 16 <= cw <= w and 16 <= ch <= h:
            break
    else:
        cw, ch = w, h
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = image.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if size is None:
        scale = rng.uniform(0.3, 1.6)
        size = (max(32, round(cw * scale)), max(32, round(ch * scale)))
    resample = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS)[int(rng.integers(0, 3))]
    out = out.resize(size, resample=resample)
    return out.convert("L").convert("RGB") if gray else out
