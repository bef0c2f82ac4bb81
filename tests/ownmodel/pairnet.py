"""A model that is not in the zoo: two inputs (float32 [4], int64 [3]) and two outputs.

The user's own PyTorch file, as `twinserve import --model-file ... --class PairNet` takes it:
top level imports torch only, and the class builds with no arguments.
"""

from __future__ import annotations

import torch
from torch import nn


class PairNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.embedding = nn.Embedding(10, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = torch.tanh(self.fc(features) + self.embedding(tokens).mean(dim=1))
        return {"scores": torch.softmax(self.head(hidden), dim=-1), "hidden": hidden}
