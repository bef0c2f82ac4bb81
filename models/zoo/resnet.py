"""resnet: a small ResNet-style classifier on 32x32x3 images, SEEDED RANDOM weights.

Synthetic on purpose: it gives the stacks real convolutional compute to serve
without any download. Its predictions mean nothing. The canonical input is
channels-last (N, 32, 32, 3); the PyTorch graph permutes to NCHW itself.
Top level imports torch only: this file is the TorchServe archive's model file.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

STAGES = ((16, 16, 1), (16, 32, 2), (32, 64, 2))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride) if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(y + skip)


class ResNetSmall(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.Sequential(*(Block(cin, cout, s) for cin, cout, s in STAGES))
        self.fc = nn.Linear(STAGES[-1][1], num_classes)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW
        x = F.relu(self.stem(x))
        x = self.blocks(x)
        x = x.mean(dim=(2, 3))
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)


def build_torch() -> nn.Module:
    return ResNetSmall()


def tf_logits(w: dict, x):  # type: ignore[no-untyped-def]
    import tensorflow as tf

    from models import tfops

    x = tf.nn.relu(tfops.conv2d(x, w["stem.weight"], w["stem.bias"], padding=1))
    for i, (cin, cout, stride) in enumerate(STAGES):
        p = f"blocks.{i}."
        y = tf.nn.relu(tfops.conv2d(x, w[p + "conv1.weight"], w[p + "conv1.bias"], stride=stride, padding=1))
        y = tfops.conv2d(y, w[p + "conv2.weight"], w[p + "conv2.bias"], padding=1)
        if stride != 1 or cin != cout:
            x = tfops.conv2d(x, w[p + "shortcut.weight"], w[p + "shortcut.bias"], stride=stride)
        x = tf.nn.relu(y + x)
    x = tf.reduce_mean(x, axis=[1, 2])
    return tfops.linear(x, w["fc.weight"], w["fc.bias"])


def dataset(seed: int) -> None:
    return None  # synthetic: no dataset


def train(model: nn.Module, seed: int) -> dict:
    """No training: the weights are PyTorch's default initialisation under the seed."""
    return {"trained": False, "note": "seeded random weights (synthetic model)"}
