"""TF Serving's model, batching and monitoring configs, rendered for one native run.

The same three files (with /models paths) live beside this module for Docker.
"""

from __future__ import annotations

from pathlib import Path

from twinserve.settings import ROOT, StackSettings

HERE = ROOT / "services" / "tfserving"  # the static configs, shared with the Docker images
MONITORING = HERE / "monitoring.config"


def models_config(names: list[str], base: Path) -> str:
    blocks = "".join(
        f'  config {{\n    name: "{n}"\n    base_path: "{base / n}"\n    model_platform: "tensorflow"\n'
        "    model_version_policy { latest { num_versions: 1 } }\n  }\n"
        for n in names
    )
    return f"model_config_list {{\n{blocks}}}\n"


def batching_config(settings: StackSettings, max_request_rows: int = 64) -> str:
    """Same batch size and delay as TorchServe's: TorchServe batches requests, TF batches rows,
    so large-batch splitting keeps a one-row-per-request load batching alike on both."""
    return (
        f"max_batch_size {{ value: {max_request_rows} }}\n"
        "enable_large_batch_splitting { value: true }\n"
        f"max_execution_batch_size {{ value: {settings.batch_size} }}\n"
        f"batch_timeout_micros {{ value: {settings.batch_delay_ms * 1000} }}\n"
        f"num_batch_threads {{ value: {settings.workers} }}\n"
        "max_enqueued_batches { value: 1000 }\n"
    )


def write_all(settings: StackSettings, base: Path, folder: Path) -> dict[str, Path]:
    out = {"models": folder / "models.config", "batching": folder / "batching.config", "monitoring": MONITORING}
    out["models"].write_text(models_config(settings.model_list, base))
    out["batching"].write_text(batching_config(settings))
    return out
