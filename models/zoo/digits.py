"""digits: a small CNN on scikit-learn's 8x8 digits, trained here.

This file is also the TorchServe archive's model file, so its top level imports
torch only; TensorFlow and scikit-learn are imported inside the functions that
need them, which run at export time.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DigitsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, 1, 8, 8) / 16.0  # canonical input is (N, 8, 8) raw pixel values 0-16
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)


def build_torch() -> nn.Module:
    return DigitsNet()


def tf_logits(w: dict, x):  # type: ignore[no-untyped-def]
    import tensorflow as tf

    from models import tfops

    x = tf.reshape(x, [-1, 8, 8, 1]) / 16.0
    x = tf.nn.relu(tfops.conv2d(x, w["conv1.weight"], w["conv1.bias"], padding=1))
    x = tf.nn.relu(tfops.conv2d(x, w["conv2.weight"], w["conv2.bias"], padding=1))
    x = tf.nn.max_pool2d(x, 2, 2, "VALID")
    x = tfops.flatten_like_torch(x)
    x = tf.nn.relu(tfops.linear(x, w["fc1.weight"], w["fc1.bias"]))
    return tfops.linear(x, w["fc2.weight"], w["fc2.bias"])


def dataset(seed: int):  # type: ignore[no-untyped-def]
    """(x_train, x_test, y_train, y_test) as float32 / int64, 25% held out."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = data.images.astype(np.float32)
    y = data.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def train(model: nn.Module, seed: int) -> dict:
    from models.training import fit_classifier

    x_train, x_test, y_train, y_test = dataset(seed)
    return fit_classifier(model, x_train, y_train, x_test, y_test, seed=seed, epochs=40, lr=2e-3, batch_size=64)
