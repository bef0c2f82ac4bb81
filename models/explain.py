"""Integrated Gradients, defined once for both stacks: the same baseline, steps and integration rule.

TorchServe computes it with Captum (`IntegratedGradients`, method "gausslegendre"); the SavedModel
carries an `explain` signature that computes the same sum in the TensorFlow graph with the same
Gauss-Legendre nodes and weights, so TensorFlow Serving serves it unchanged. Attributions are of
the target class's probability; the baseline is all zeros; a target of -1 means the predicted class.
"""

from __future__ import annotations

import numpy as np

METHOD = "integrated_gradients"
INTEGRATION = "gausslegendre"
STEPS = 64
BASELINE = "zeros"
SIGNATURE = "explain"
TARGET_INPUT = "target"
ATTRIBUTIONS = "attributions"


def gauss_legendre(steps: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
    """(alphas in [0, 1], weights summing to 1), the rule Captum's "gausslegendre" uses."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return 0.5 * (nodes + 1.0), 0.5 * weights


def tf_integrated_gradients(score_fn, x, target, steps: int = STEPS):  # type: ignore[no-untyped-def]
    """Attributions of score_fn(x)[i, target[i]] along the straight path from zeros to x."""
    import tensorflow as tf

    alphas, weights = gauss_legendre(steps)
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
