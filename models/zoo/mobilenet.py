"""mobilenet: MobileNetV2 (width 1.0, 224x224, 1000 classes) fed JPEG bytes, SEEDED RANDOM weights.

A real-size image classifier, synthetic on purpose: the weights are PyTorch's
default initialisation under the caller's seed (no download of any kind, no
model hub). `train` trains nothing: it calibrates the BatchNorm running
statistics on crops of the two photos bundled with scikit-learn, so activations
have a realistic scale, and rescales the classifier's random weights by one
scalar (and centres its bias) so the probabilities are not degenerate (see
`train`). It exists to give the stacks real image work to serve: JPEG decoding,
resizing and ~300 MFLOPs of convolutions per image. Its predictions mean
nothing (the class indices are not ImageNet's): it is for load and parity.

The network is written here in plain torch because torchvision cannot be
installed beside the pinned torch on this project (PyPI's torchvision build
fails to import against it: "operator torchvision::nms does not exist"). It
mirrors torchvision's `mobilenet_v2` exactly, architecture and module names
alike (`features.0.0.weight`, `features.1.conv.0.0.weight`, ...,
`classifier.1.weight`), so a torchvision state dict loads into it unchanged.

The input is one encoded image per instance: JPEG, PNG or a still GIF, the
formats TensorFlow's DecodeJpeg kernel decodes, so both stacks accept and refuse
the same bytes (up to MAX_PIXELS; only the PyTorch side checks that). Preprocessing
is part of both graphs and gives the same values in both frameworks: decode to
RGB uint8 (Pillow / `tf.io.decode_jpeg` with the accurate integer DCT,
libjpeg-turbo's JDCT_ISLOW, on both sides: the decoded pixels are identical; TF's
default DCT is the fast one and differs by up to 18 levels), divide by 255,
bilinear resize to 224x224 with half-pixel centres and no antialiasing (the two
frameworks round the sampling coordinates differently in float32: values differ
by up to ~1e-5 of the [0, 1] range),
normalise with the ImageNet mean and std. There is no aspect-preserving crop:
the whole image is squeezed to 224x224. EXIF orientation is ignored by both.

Top level imports torch only: this file is the TorchServe archive's model file.
Pillow and numpy (serving), TensorFlow and scikit-learn (export) are imported
inside the functions that need them.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

INPUT_NAME = "image_bytes"
SIZE = 224  # the network's input is SIZE x SIZE x 3
NUM_CLASSES = 1000
MAX_PIXELS = 4096 * 4096  # largest width x height accepted, checked from the header before decoding
FORMATS = ("JPEG", "PNG", "GIF")  # what TensorFlow's DecodeJpeg kernel also decodes: both stacks accept the same
KINDS = "JPEG, PNG or GIF"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-5
N_SAMPLES = 28
LOGIT_STD = 1.5  # train(): the logits' spread across classes; 2.0 doubles the TF-vs-torch gap (8e-5 on 224 images) for peakier outputs

# torchvision's inverted_residual_setting: expansion t, output channels c, repeats n, first stride s
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


def _blocks() -> list[tuple[int, int, int, int]]:
    """(in channels, hidden channels, out channels, stride) of each inverted residual, features.1 to features.17."""
    out, cin = [], STEM_CHANNELS
    for t, c, n, s in SETTING:
        for i in range(n):
            out.append((cin, cin * t, c, s if i == 0 else 1))
            cin = c
    return out


class ConvBNReLU6(nn.Sequential):
    """torchvision's Conv2dNormActivation: conv (no bias, padding (k-1)//2) -> BatchNorm -> ReLU6, as .0 .1 .2."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )
        self.out_channels = cout


class InvertedResidual(nn.Module):
    """1x1 expansion (skipped when t == 1) -> 3x3 depthwise -> 1x1 linear projection, plus the input when shapes allow."""

    def __init__(self, cin: int, hidden: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(ConvBNReLU6(cin, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision.models.mobilenet_v2(width_mult=1.0): same layers, same state dict names; forward takes NCHW."""

    def __init__(self, num_classes: int = NUM_CLASSES, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNReLU6(3, STEM_CHANNELS, stride=2)]
        layers += [InvertedResidual(*b) for b in _blocks()]
        layers.append(ConvBNReLU6(_blocks()[-1][2], LAST_CHANNELS, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(LAST_CHANNELS, num_classes))
        # weights: PyTorch's default initialisation (the caller seeds it); torchvision's own init is not copied

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW -> (N, 1280): the features, averaged over space (what the classifier sees)."""
        return torch.flatten(F.adaptive_avg_pool2d(self.features(x), (1, 1)), 1)

    def forward_nchw(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(x))


def _decode(data: Any, index: int) -> torch.Tensor:
    """One encoded image -> (H, W, 3) uint8 tensor; ValueError (naming the problem) for anything else."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    where = f" (instance {index})"
    if isinstance(data, np.ndarray) and data.ndim == 0:
        data = data.item()
    if isinstance(data, str):
        data = data.encode()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"input {INPUT_NAME!r} takes encoded image bytes, got {type(data).__name__}{where}")  # noqa: TRY004 - the handler answers ValueError with 400
    try:
        image = Image.open(io.BytesIO(bytes(data)), formats=FORMATS)  # lazy: reads the header only
    except UnidentifiedImageError:
        raise ValueError(f"input {INPUT_NAME!r} is not a decodable image ({KINDS}): cannot identify image file{where}") from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"input {INPUT_NAME!r} is too large an image: {exc}{where}") from None
    except Exception as exc:  # noqa: BLE001 - any failure to parse the header is the sender's fault
        raise ValueError(f"input {INPUT_NAME!r} is not a decodable image ({KINDS}): {exc}{where}") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"input {INPUT_NAME!r} is too large an image: {width}x{height} = {width * height} pixels, over the limit of {MAX_PIXELS}{where}"
        )
    if width < 1 or height < 1:
        raise ValueError(f"input {INPUT_NAME!r} is an empty image ({width}x{height}){where}")
    try:
        if image.format == "GIF" and getattr(image, "n_frames", 1) > 1:  # TensorFlow's DecodeJpeg refuses these
            raise ValueError(f"input {INPUT_NAME!r} is an animated GIF ({image.n_frames} frames): send one still image{where}")
        if image.mode.startswith("I"):  # 16-bit grayscale PNG: keep the high byte, as libpng's strip_16 does in TensorFlow
            gray = (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
            return torch.from_numpy(np.repeat(gray[:, :, None], 3, axis=2))
        rgb = image.convert("RGB")  # decodes; libjpeg-turbo's default DCT is the accurate integer one (JDCT_ISLOW)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise ValueError(f"input {INPUT_NAME!r} is not a decodable image ({KINDS}): {exc}{where}") from None
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy())


class JpegClassifier(MobileNetV2):
    """MobileNetV2 behind image decoding: forward(list of encoded images) -> (N, 1000) softmax probabilities."""

    def preprocess(self, images: Iterable[Any]) -> torch.Tensor:
        """Encoded images -> float32 NHWC (N, 224, 224, 3), normalised."""
        prepared = [self.prepare(_decode(data, i)) for i, data in enumerate(images)]
        if not prepared:
            return torch.empty((0, SIZE, SIZE, 3), dtype=torch.float32)
        return torch.cat(prepared).contiguous()

    def prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        """One decoded image, (H, W, 3) uint8 -> float32 NHWC (1, 224, 224, 3), normalised: the
        tensor part of preprocess, apart so the ONNX export (models/onnx.py) traces this very code
        (ONNX has no image decoder: its graph takes the decoded pixels)."""
        x = pixels.permute(2, 0, 1).unsqueeze(0).to(torch.float32) / 255.0  # (1, 3, H, W) in [0, 1]
        x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=False)
        mean = torch.tensor(MEAN, dtype=torch.float32)
        std = torch.tensor(STD, dtype=torch.float32)
        return (x.permute(0, 2, 3, 1) - mean) / std

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 NHWC (N, 224, 224, 3), preprocessed -> (N, 1000) logits."""
        return self.forward_nchw(x.permute(0, 3, 1, 2))

    def forward(self, images: Iterable[Any]) -> torch.Tensor:  # type: ignore[override]
        return torch.softmax(self.logits(self.preprocess(images)), dim=-1)


def build_torch() -> nn.Module:
    return JpegClassifier()


# ----------------------------------------------------------------------------------------------
# TensorFlow: the same preprocessing and network from the ported weights (export time only)


def tf_preprocess(image_bytes):  # type: ignore[no-untyped-def]
    """tf.string [None] of encoded images -> float32 NHWC [None, 224, 224, 3], as JpegClassifier.preprocess."""
    import tensorflow as tf

    def one(data):  # type: ignore[no-untyped-def]
        # decode_jpeg decodes PNG and GIF too (the kernel sniffs the format); dct_method only affects JPEG
        pixels = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
        x = tf.cast(pixels, tf.float32) / 255.0
        return tf.image.resize(x, [SIZE, SIZE], method="bilinear", antialias=False)

    x = tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec([SIZE, SIZE, 3], tf.float32))
    return (x - tf.constant(MEAN, tf.float32)) / tf.constant(STD, tf.float32)


def tf_logits(w: dict, x):  # type: ignore[no-untyped-def]
    """MobileNetV2 logits from the ported weights (models.mapping.to_tf_weights); x is preprocessed NHWC."""
    import tensorflow as tf

    from models import tfops

    def bn(x, p: str):  # type: ignore[no-untyped-def]
        # inference BatchNorm as ATen computes it: x * (gamma / sqrt(var + eps)) + (beta - mean * scale)
        scale = w[p + "weight"] / tf.sqrt(w[p + "running_var"] + BN_EPS)
        return x * scale + (w[p + "bias"] - w[p + "running_mean"] * scale)

    def conv_bn_relu6(x, p: str, stride: int = 1, depthwise: bool = False):  # type: ignore[no-untyped-def]
        kernel = w[p + "0.weight"]
        if depthwise:  # (kh, kw, 1, C) from OIHW -> HWIO; depthwise_conv2d wants (kh, kw, C, 1): same memory order
            k = tf.reshape(kernel, [kernel.shape[0], kernel.shape[1], kernel.shape[3], 1])
            pad = (kernel.shape[0] - 1) // 2
            x = tf.nn.depthwise_conv2d(x, k, strides=[1, stride, stride, 1], padding=[[0, 0], [pad, pad], [pad, pad], [0, 0]])
        else:
            x = tfops.conv2d(x, kernel, None, stride=stride, padding=(kernel.shape[0] - 1) // 2)
        return tf.nn.relu6(bn(x, p + "1."))

    x = conv_bn_relu6(x, "features.0.", stride=2)
    for i, (cin, hidden, cout, stride) in enumerate(_blocks(), start=1):
        p = f"features.{i}.conv."
        y, j = x, 0
        if hidden != cin:
            y = conv_bn_relu6(y, f"{p}{j}.")
            j += 1
        y = conv_bn_relu6(y, f"{p}{j}.", stride=stride, depthwise=True)
        y = bn(tfops.conv2d(y, w[f"{p}{j + 1}.weight"], None), f"{p}{j + 2}.")
        x = x + y if (stride == 1 and cin == cout) else y
    x = conv_bn_relu6(x, f"features.{len(_blocks()) + 1}.")
    x = tf.reduce_mean(x, axis=[1, 2])
    return tfops.linear(x, w["classifier.1.weight"], w["classifier.1.bias"])


def dataset(seed: int) -> None:
    return None  # synthetic: no labelled data


def train(model: nn.Module, seed: int, calibrate_classifier: bool = True, batches: int = 6, batch_size: int = 16) -> dict:
    """No training (no labels, no gradients): calibrate the network on augmented crops of the bundled photos.

    1. BatchNorm running statistics: forward passes in train mode under no_grad with momentum None
       (a cumulative average over the batches), then eval.
    2. The classifier (unless calibrate_classifier is False): PyTorch's default Linear init gives
       logits with a spread of ~0.25 across 1000 classes, dominated by a component common to every
       image, so every probability stays within ~3x of 1/1000 and nearly every image gets the same
       class. W is scaled by one scalar so the logits' spread across classes is LOGIT_STD on the
       calibration crops, and the bias absorbs the crops' mean pooled feature (b - s W mean), so
       predictions differ by image. The convolutions keep PyTorch's default initialisation.

    Both run on one thread (restored after): float32 sums split across threads round differently,
    and this untrained network amplifies such differences ~100x, so the weights would otherwise
    depend on the exporting machine's thread count. ~10 s on one core."""
    from models.samples import calibration_images  # export time only: a TorchServe worker never trains

    images = calibration_images(seed + 1, batches * batch_size, SIZE)  # other crops than the parity samples
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the sums over ~1M activations per channel then do not depend on the caller's thread count
    try:
        scale = _calibrate(model, images, calibrate_classifier, batch_size)
    finally:
        torch.set_num_threads(threads)
    note = "seeded random weights; BatchNorm statistics calibrated on the bundled sample photos"
    report: dict = {"trained": False, "note": note, "calibration_images": len(images)}
    if scale is not None:
        report["note"] = note + f"; classifier weights scaled by {scale:.2f} and bias centred so logits spread ~{LOGIT_STD} across classes"
        report["classifier_scale"] = round(scale, 4)
    return report


def _calibrate(model: Any, images: list[bytes], classifier: bool, batch_size: int) -> float | None:
    """train()'s two steps on the calibration images; the classifier's scale, or None when left alone."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    model.train()
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    with torch.no_grad():
        for batch in batches:  # the features only: the classifier's dropout would draw from torch's RNG for nothing
            model.features(model.preprocess(batch).permute(0, 3, 1, 2))
    for m in norms:
        m.momentum = 0.1  # torchvision's default, so the module is a stock one again
    model.eval()
    if not classifier:
        return None
    linear = model.classifier[1]
    with torch.no_grad():
        pooled = torch.cat([model.pooled(model.preprocess(batch).permute(0, 3, 1, 2)) for batch in batches])
        mean = pooled.mean(0)
        spread = float(((pooled - mean) @ linear.weight.T).std(dim=1).mean())
        scale = LOGIT_STD / spread
        linear.bias.sub_(scale * (linear.weight @ mean))
        linear.weight.mul_(scale)
    return scale
