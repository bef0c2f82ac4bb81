"""PyTorch state dict -> TensorFlow weights: the one place where layouts are translated."""

from __future__ import annotations

import numpy as np
import torch


def to_tf_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Conv kernels OIHW -> HWIO and Linear weights (out, in) -> (in, out); everything else as is."""
    out: dict[str, np.ndarray] = {}
    for name, tensor in state_dict.items():
        value = tensor.detach().cpu().numpy().astype(np.float32)
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)
        elif value.ndim == 2 and name.endswith("weight"):
            value = value.T
        out[name] = np.ascontiguousarray(value)
    return out
