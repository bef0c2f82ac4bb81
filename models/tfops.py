"""TensorFlow building blocks that reproduce PyTorch's layer semantics exactly.

Padding is always explicit: TensorFlow's "SAME" pads asymmetrically for even
inputs with stride 2, PyTorch pads symmetrically, and the two would disagree.
Only the exporter imports this module; the serving paths never do.
"""

from __future__ import annotations

import tensorflow as tf

from models import explain as ig


def conv2d(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor | None, stride: int = 1, padding: int = 0) -> tf.Tensor:
    """NHWC input, HWIO weight (already transposed from PyTorch's OIHW)."""
    pads = [[0, 0], [padding, padding], [padding, padding], [0, 0]]
    y = tf.nn.conv2d(x, weight, strides=[1, stride, stride, 1], padding=pads)
    return y if bias is None else y + bias


def linear(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor | None) -> tf.Tensor:
    """Weight in (in, out) layout, already transposed from PyTorch's (out, in)."""
    y = tf.matmul(x, weight)
    return y if bias is None else y + bias


def flatten_like_torch(x: tf.Tensor) -> tf.Tensor:
    """Flatten an NHWC tensor in PyTorch's NCHW order, so a following Linear's weights line up."""
    x = tf.transpose(x, [0, 3, 1, 2])
    return tf.reshape(x, [tf.shape(x)[0], -1])


def integrated_gradients(score_fn, x, target, steps: int = ig.STEPS):  # type: ignore[no-untyped-def]
    """Attributions of score_fn(x)[i, target[i]] along the straight path from zeros to x (models/explain.py's rule)."""
    alphas, weights = ig.gauss_legendre(steps)
    n = tf.shape(x)[0]
    inner = tf.shape(x)[1:]
    rank = len(x.shape) - 1
    a = tf.reshape(tf.constant(alphas, tf.float32), [steps, 1] + [1] * rank)
    path = tf.reshape(a * x[None], tf.concat([[steps * n], inner], 0))  # baseline zeros: path = alpha * x
    targets = tf.tile(target, [steps])
    with tf.GradientTape() as tape:
        tape.watch(path)
        scores = score_fn(path)
        chosen = tf.gather(scores, targets, axis=1, batch_dims=1)
    grads = tf.reshape(tape.gradient(chosen, path), tf.concat([[steps, n], inner], 0))
    avg = tf.tensordot(tf.constant(weights, tf.float32), grads, axes=1)
    return x * avg
