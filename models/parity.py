"""Proof that the two exports are one model: run both on the same inputs and compare."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

ABS_TOLERANCE = 1e-4  # maximum absolute difference between the two stacks' probabilities
MARGIN = 1e-4  # a class disagreement only counts when the top two probabilities are further apart than this


class ParityError(RuntimeError):
    pass


@dataclass
class ParityResult:
    inputs: int
    max_abs_diff: float
    mean_abs_diff: float
    argmax_agreement: float
    decisive_disagreements: int  # disagreements where the top-two margin exceeds MARGIN
    tolerance: float = ABS_TOLERANCE

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.decisive_disagreements == 0

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def compare(torch_probs: np.ndarray, tf_probs: np.ndarray, tolerance: float = ABS_TOLERANCE) -> ParityResult:
    if torch_probs.shape != tf_probs.shape:
        raise ParityError(f"output shapes differ: torch {torch_probs.shape}, tensorflow {tf_probs.shape}")
    diff = np.abs(torch_probs.astype(np.float64) - tf_probs.astype(np.float64))
    a, b = torch_probs.argmax(-1), tf_probs.argmax(-1)
    top2 = np.sort(torch_probs, axis=-1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > MARGIN
    return ParityResult(
        inputs=len(torch_probs),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        argmax_agreement=float((a == b).mean()),
        decisive_disagreements=int(((a != b) & decisive).sum()),
        tolerance=tolerance,
    )


def check(result: ParityResult, name: str) -> None:
    if not result.ok:
        raise ParityError(
            f"{name}: the TorchServe and TensorFlow exports disagree: max |diff| {result.max_abs_diff:.3g} "
            f"(tolerance {result.tolerance:g}), {result.decisive_disagreements} decisive class disagreements "
            f"over {result.inputs} inputs"
        )
