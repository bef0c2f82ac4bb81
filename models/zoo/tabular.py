"""tabular: an MLP on scikit-learn's breast-cancer data, trained here.

The standardisation (train-split mean and std) is a pair of buffers inside the
model, so both exported graphs take raw features. Top level imports torch only:
this file is the TorchServe archive's model file.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TabularNet(nn.Module):
    def __init__(self, num_features: int = 30, hidden: int = 32) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.fc1 = nn.Linear(num_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 2)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)


def build_torch() -> nn.Module:
    return TabularNet()


def tf_logits(w: dict, x):  # type: ignore[no-untyped-def]
    import tensorflow as tf

    from models import tfops

    x = (x - w["mean"]) / w["std"]
    x = tf.nn.relu(tfops.linear(x, w["fc1.weight"], w["fc1.bias"]))
    x = tf.nn.relu(tfops.linear(x, w["fc2.weight"], w["fc2.bias"]))
    return tfops.linear(x, w["fc3.weight"], w["fc3.bias"])


def dataset(seed: int):  # type: ignore[no-untyped-def]
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    y = data.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def train(model: nn.Module, seed: int) -> dict:
    from models.training import fit_classifier

    x_train, x_test, y_train, y_test = dataset(seed)
    with torch.no_grad():
        model.mean.copy_(torch.from_numpy(x_train.mean(axis=0)))
        model.std.copy_(torch.from_numpy(x_train.std(axis=0) + 1e-6))
    return fit_classifier(model, x_train, y_train, x_test, y_test, seed=seed, epochs=150, lr=1e-3, batch_size=32)
