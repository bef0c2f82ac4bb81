"""A deterministic classifier training loop shared by the trained zoo models."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def fit_classifier(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    seed: int,
    epochs: int,
    lr: float,
    batch_size: int,
) -> dict:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), batch_size):
            idx = order[start : start + batch_size]
            optimiser.zero_grad()
            loss = loss_fn(model.logits(xt[idx]), yt[idx])
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        train_acc = (model(xt).argmax(-1) == yt).float().mean().item()
        test_acc = (model(torch.from_numpy(x_test)).argmax(-1).numpy() == y_test).mean().item()
    return {
        "trained": True,
        "epochs": epochs,
        "train_rows": len(x_train),
        "test_rows": len(x_test),
        "train_accuracy": round(train_acc, 4),
        "test_accuracy": round(float(test_acc), 4),
    }
