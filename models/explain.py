"""Integrated Gradients, defined once for both stacks: the same baseline, steps and integration rule.

TorchServe computes it with Captum (`IntegratedGradients`, method "gausslegendre"); the SavedModel
carries an `explain` signature (models/tfops.py: integrated_gradients) that computes the same sum in the TensorFlow graph with the same
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
