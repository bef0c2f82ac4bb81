"""How fast each framework runs the exported model in process: the ceiling a serving stack is measured against.

Lives with the exports (it loads the same .mar and SavedModel the stacks serve) so that loadtests/
never imports torch or TensorFlow; `twinserve bench --overhead` calls it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from models.export import DEFAULT_SEED, Artifacts, load_savedmodel, load_torch_from_mar, parity_inputs
from models.spec import get_spec


def inprocess_throughput(build: Path, model: str, batch: int, seconds: float = 3.0) -> dict:
    """Rows per second of each framework calling the exported model directly, one thread each."""
    import torch

    spec = get_spec(model)
    art = Artifacts(build, model)
    x = parity_inputs(spec, DEFAULT_SEED)[0]
    x = {k: v[np.arange(batch) % len(v)] for k, v in x.items()} if isinstance(x, dict) else x[np.arange(batch) % len(x)].astype(np.float32)
    torch.set_num_threads(1)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("torchserve", load_torch_from_mar(art.mar, Path(tmp))), ("tfserving", load_savedmodel(art.savedmodel, spec))):
            for _ in range(20):
                fn(x)
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                fn(x)
                calls += 1
            elapsed = time.perf_counter() - started
            out[name] = {"framework": "PyTorch forward (eager)" if name == "torchserve" else "TensorFlow signature call", "batch": batch, "rows_per_s": round(calls * batch / elapsed, 1), "ms_per_call": round(1000 * elapsed / calls, 4)}
    return out
