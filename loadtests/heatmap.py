"""A picture of agreement: one digits input and its Integrated Gradients from both stacks, side by side."""

from __future__ import annotations

from pathlib import Path

import httpx
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from loadtests.payloads import rows  # noqa: E402
from models.spec import get_spec  # noqa: E402


def fetch(gateway: str, model: str, index: int, target: int | None) -> tuple[np.ndarray, dict]:
    spec = get_spec(model)
    x = rows(spec, max(256, index + 1))[index : index + 1]
    body: dict = {"instances": x.tolist()}
    if target is not None:
        body["target"] = target
    r = httpx.post(f"{gateway}/v1/models/{model}:explain", params={"compare": "true"}, json=body, timeout=60)
    r.raise_for_status()
    return x[0], r.json()


def plot(x: np.ndarray, answer: dict, out: Path) -> Path:
    ts = np.asarray(answer["results"]["torchserve"]["attributions"][0])
    tf = np.asarray(answer["results"]["tfserving"]["attributions"][0])
    limit = float(max(np.abs(ts).max(), np.abs(tf).max(), 1e-12))
    target = answer["results"]["torchserve"]["targets"][0]
    fig, axes = plt.subplots(1, 4, figsize=(15, 4.2))
    axes[0].imshow(x, cmap="gray_r")
    axes[0].set_title(f"input ({answer['model']})")
    for ax, data, title in ((axes[1], ts, "TorchServe\n(Captum)"), (axes[2], tf, "TF backend\n(explain signature)")):
        im = ax.imshow(data, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"{title}\nclass {target}")
    delta = float(max(np.abs(ts - tf).max(), 1e-12))
    diff = axes[3].imshow(ts - tf, cmap="RdBu_r", vmin=-delta, vmax=delta)
    axes[3].set_title(f"difference\n(own scale: max |Δ| {answer['max_abs_diff']:.1e})")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[1:3].tolist(), shrink=0.8, label="attribution to the class logit")
    fig.colorbar(diff, ax=axes[3], shrink=0.8)
    fig.suptitle(f"Integrated Gradients, {answer['steps']} Gauss-Legendre steps, zero baseline; correlation {answer['correlation'][0]:.6f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
