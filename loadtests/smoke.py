"""Predictions for every model through a gateway, to both stacks, checked for agreement.

Used by the compose smoke test: `python -m loadtests.smoke http://127.0.0.1:8000`.
"""

from __future__ import annotations

import sys

import httpx
import numpy as np

from loadtests.payloads import bodies, check_answer
from models.spec import get_spec


def check(gateway: str) -> list[str]:
    problems = []
    with httpx.Client(base_url=gateway, timeout=30) as client:
        ready = client.get("/readyz").json()
        print(f"gateway ready: {ready['ready']}; TF backend: {ready['implementations'].get('tfserving')}")
        for model in ready.get("models", {}):  # the models this gateway serves
            spec = get_spec(model)
            body = bodies(model, 2, count=1)[0]
            answers = {}
            for backend in ("torchserve", "tfserving"):
                r = client.post(f"/v1/models/{model}:predict", params={"backend": backend}, content=body)
                if r.status_code != 200 or r.headers.get("x-backend") != backend:
                    problems.append(f"{model} via {backend}: HTTP {r.status_code} {r.text[:200]}")
                    continue
                problem = check_answer(r.content, 2, spec)
                if problem:
                    problems.append(f"{model} via {backend}: {problem}")
                    continue
                preds = r.json()["predictions"]
                answers[backend] = np.concatenate([np.ravel(row[t.name] if len(spec.outputs) > 1 else row).astype(np.float64) for row in preds for t in spec.outputs])
            if len(answers) == 2:
                diff = float(np.abs(answers["torchserve"] - answers["tfserving"]).max())
                print(f"{model:8s} torchserve and tfserving agree: max |diff| {diff:.2e}")
                if diff > spec.tolerance:
                    problems.append(f"{model}: the stacks disagree by {diff}")
    return problems


def served(gateway: str) -> int:
    """Requests the gateway has answered with 200, from its Prometheus metrics."""
    text = httpx.get(f"{gateway}/metrics", timeout=10).text
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("twinserve_gateway_requests_total{") and 'status="200"' in line))


def main() -> int:
    if sys.argv[1:2] == ["--served"]:
        print(served(sys.argv[2]))
        return 0
    problems = check(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000")
    for p in problems:
        print(f"FAIL {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
