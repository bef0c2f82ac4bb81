"""Proof that the two exports are one model: run both on the same inputs and compare every output."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from models.spec import ModelSpec

ABS_TOLERANCE = 1e-4  # default maximum absolute difference between the two stacks' outputs
MARGIN = 1e-4  # a class disagreement only counts when the top two probabilities are further apart than this


class ParityError(RuntimeError):
    pass


@dataclass
class ParityResult:
    inputs: int
    max_abs_diff: float  # over every float output (exact outputs count 0 when equal, inf when not)
    mean_abs_diff: float
    argmax_agreement: float  # the first output's classes (1.0 when the model is not a classifier)
    decisive_disagreements: int  # disagreements where the top-two margin exceeds MARGIN
    tolerance: float = ABS_TOLERANCE
    outputs: dict[str, dict] = field(default_factory=dict)  # per output: max and mean |diff|, first input beyond tolerance
    first_disagreement: int | None = None  # the first input on which any output is beyond tolerance

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.decisive_disagreements == 0

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def compare(torch_probs: np.ndarray, tf_probs: np.ndarray, tolerance: float = ABS_TOLERANCE, classifier: bool = True) -> ParityResult:
    """One output, compared: for a classifier's probabilities, also its classes."""
    if torch_probs.shape != tf_probs.shape:
        raise ParityError(f"output shapes differ: torch {torch_probs.shape}, tensorflow {tf_probs.shape}")
    diff = output_diff(torch_probs, tf_probs)
    per_row = diff.reshape(len(diff), -1).max(axis=1) if diff.size else np.zeros(len(diff))
    beyond = np.flatnonzero(per_row > tolerance)
    agreement, decisive = 1.0, 0
    if classifier and torch_probs.ndim == 2:
        a, b = torch_probs.argmax(-1), tf_probs.argmax(-1)
        top2 = np.sort(torch_probs, axis=-1)[:, -2:]
        margin = (top2[:, 1] - top2[:, 0]) > MARGIN
        agreement, decisive = float((a == b).mean()), int(((a != b) & margin).sum())
    return ParityResult(
        inputs=len(torch_probs),
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        argmax_agreement=agreement,
        decisive_disagreements=decisive,
        tolerance=tolerance,
        first_disagreement=int(beyond[0]) if len(beyond) else None,
    )


def output_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| for numbers (float64); 0 where exact values (bytes, strings) are equal, inf where not."""
    if a.dtype.kind in "fiub" and b.dtype.kind in "fiub":
        return np.abs(a.astype(np.float64) - b.astype(np.float64))
    return np.where(a == b, 0.0, np.inf)


def compare_outputs(spec: "ModelSpec", torch_out: dict[str, np.ndarray], tf_out: dict[str, np.ndarray]) -> ParityResult:
    """Every output of the spec, compared; the worst one decides."""
    per: dict[str, ParityResult] = {}
    for i, t in enumerate(spec.outputs):
        a, b = np.asarray(torch_out[t.name]), np.asarray(tf_out[t.name])
        if a.shape != b.shape:
            raise ParityError(f"{spec.name}: output {t.name!r} shapes differ: PyTorch {list(a.shape)}, TensorFlow {list(b.shape)}")
        per[t.name] = compare(a, b, spec.tolerance, classifier=i == 0 and spec.classifier)
    first = per[spec.outputs[0].name]
    firsts = [r.first_disagreement for r in per.values() if r.first_disagreement is not None]
    return ParityResult(
        inputs=first.inputs,
        max_abs_diff=max(r.max_abs_diff for r in per.values()),
        mean_abs_diff=float(np.mean([r.mean_abs_diff for r in per.values()])),
        argmax_agreement=first.argmax_agreement,
        decisive_disagreements=first.decisive_disagreements,
        tolerance=spec.tolerance,
        outputs={n: {"max_abs_diff": r.max_abs_diff, "mean_abs_diff": r.mean_abs_diff, "first_disagreement": r.first_disagreement} for n, r in per.items()},
        first_disagreement=min(firsts) if firsts else None,
    )


def check(result: ParityResult, name: str) -> None:
    if not result.ok:
        per = "; ".join(f"{n}: max |diff| {o['max_abs_diff']:.3g}" for n, o in result.outputs.items()) or f"max |diff| {result.max_abs_diff:.3g}"
        first = f", first disagreeing input #{result.first_disagreement}" if result.first_disagreement is not None else ""
        raise ParityError(
            f"{name}: the PyTorch and TensorFlow exports disagree ({per}; tolerance {result.tolerance:g}){first}, "
            f"{result.decisive_disagreements} decisive class disagreements over {result.inputs} inputs"
        )
