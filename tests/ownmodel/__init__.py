"""Writes the PairNet pair as a user would: a PyTorch state dict and a TensorFlow SavedModel with the same weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL_FILE = HERE / "pairnet.py"


def write_pair(folder: Path, seed: int = 7, skew: float = 0.0) -> tuple[Path, Path, Path]:
    """(state dict, SavedModel dir, samples .npz). skew > 0 shifts the TF head's bias: a different model."""
    import importlib.util

    import tensorflow as tf
    import torch

    loader = importlib.util.spec_from_file_location("pairnet", MODEL_FILE)
    module = importlib.util.module_from_spec(loader)  # type: ignore[arg-type]
    loader.loader.exec_module(module)  # type: ignore[union-attr]
    torch.manual_seed(seed)
    model = module.PairNet().eval()
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "pairnet.pt"
    torch.save(model.state_dict(), weights)
    w = {k: v.detach().numpy() for k, v in model.state_dict().items()}

    class Pair(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc_w = tf.constant(w["fc.weight"].T)
            self.fc_b = tf.constant(w["fc.bias"])
            self.emb = tf.constant(w["embedding.weight"])
            self.head_w = tf.constant(w["head.weight"].T)
            self.head_b = tf.constant(w["head.bias"] + np.float32(skew) * np.arange(3, dtype=np.float32))  # not a uniform shift, which softmax ignores

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features"), tf.TensorSpec([None, 3], tf.int64, name="tokens")])
        def serve(self, features: tf.Tensor, tokens: tf.Tensor) -> dict:
            hidden = tf.tanh(features @ self.fc_w + self.fc_b + tf.reduce_mean(tf.gather(self.emb, tokens), axis=1))
            return {"scores": tf.nn.softmax(hidden @ self.head_w + self.head_b, axis=-1), "hidden": hidden}

    pair = Pair()
    saved = folder / "pairnet_savedmodel"
    tf.saved_model.save(pair, str(saved), signatures={"serving_default": pair.serve})
    rng = np.random.default_rng(seed)
    samples = folder / "samples.npz"
    np.savez(samples, features=rng.normal(size=(48, 4)).astype(np.float32), tokens=rng.integers(0, 10, (48, 3)).astype(np.int64))
    return weights, saved, samples
