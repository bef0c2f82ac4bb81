"""TorchServe's config.properties, rendered from the stack settings for one native run."""

from __future__ import annotations

import json
from pathlib import Path

from twinserve.settings import ROOT, StackSettings

LOG_CONFIG = ROOT / "services" / "torchserve" / "log4j2.xml"  # also copied into the Docker image
DOCKER_LOG_CONFIG = "file:///srv/twinserve/log4j2.xml"


def log_max_bytes(settings: StackSettings) -> int:
    return int(settings.log_max_mb * 1024 * 1024)


def vmargs(settings: StackSettings, log_config: str) -> str:
    """The JVM's options: heap and GC, and twinserve's log4j2 configuration (TorchServe's documented
    way to replace its logging) with the two settings it reads as system properties. A file URI
    carries no whitespace, which TorchServe would split vmargs on."""
    return " ".join(
        [
            f"-Xmx{settings.jvm_heap}",
            "-XX:+UseSerialGC",
            "-XX:-UsePerfData",
            f"-Dlog4j.configurationFile={log_config}",
            f"-Dtwinserve.request_logs={str(settings.torchserve_request_logs).lower()}",
            f"-Dtwinserve.log_max_bytes={log_max_bytes(settings)}",
        ]
    )


def render(settings: StackSettings, model_store: Path, log_config: str = DOCKER_LOG_CONFIG) -> str:
    """config.properties; `log_config` is the log4j2 file's URI (the Docker image's by default, so the
    checked-in services/torchserve/config.properties is this function's output)."""
    models = {
        name: {
            "1.0": {
                "defaultVersion": True,
                "marName": f"{name}.mar",
                "minWorkers": settings.workers,
                "maxWorkers": settings.workers,
                "batchSize": settings.batch_size,
                "maxBatchDelay": settings.batch_delay_ms,
                "responseTimeout": settings.response_timeout_s,
            }
        }
        for name in settings.model_list
    }
    h = settings.host
    lines = [
        f"inference_address=http://{h}:{settings.torchserve_inference_port}",
        f"management_address=http://{h}:{settings.torchserve_management_port}",
        f"metrics_address=http://{h}:{settings.torchserve_metrics_port}",
        f"grpc_inference_address={h}",
        f"grpc_management_address={h}",
        f"grpc_inference_port={settings.torchserve_grpc_inference_port}",
        f"grpc_management_port={settings.torchserve_grpc_management_port}",
        f"model_store={model_store}",
        "load_models=" + ",".join(f"{n}.mar" for n in settings.model_list),
        "models=" + json.dumps(models),
        "metrics_mode=prometheus",
        f"disable_token_authorization={str(not settings.torchserve_token_auth).lower()}",
        f"token_expiration_min={settings.torchserve_token_expiration_min:g}",
        "enable_model_api=false",
        "install_py_dep_per_model=false",
        "default_response_timeout=" + str(settings.response_timeout_s),
        "job_queue_size=1000",
        f"vmargs={vmargs(settings, log_config)}",
    ]
    return "\n".join(lines) + "\n"


def write(settings: StackSettings, model_store: Path, path: Path) -> Path:
    path.write_text(render(settings, model_store, LOG_CONFIG.as_uri()))
    return path
