"""Every setting of twinserve, read once from the environment (TWINSERVE_*) with sane defaults.

The gateway imports this module too, so it imports neither torch nor TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class StackSettings(BaseSettings):
    """The two serving stacks and their native launcher."""

    model_config = SettingsConfigDict(env_prefix="TWINSERVE_", extra="ignore")

    host: str = Field("127.0.0.1", description="bind address of every native service")
    torchserve_inference_port: int = 8080
    torchserve_management_port: int = 8081
    torchserve_metrics_port: int = 8082
    torchserve_grpc_inference_port: int = 7070
    torchserve_grpc_management_port: int = 7071
    tfserving_grpc_port: int = 8500
    tfserving_rest_port: int = 8501
    gateway_port: int = 8000
    models: str = Field("digits,tabular,resnet", description="comma-separated models to serve")
    build_dir: Path = ROOT / "models" / "build"
    run_dir: Path = Field(ROOT / ".twinserve", description="pid/state file and per-run log folders")
    tf_backend: Literal["auto", "binary", "compat"] = Field(
        "auto", description="auto: tensorflow_model_server if on PATH, else the compatible server"
    )
    batch_size: int = Field(8, description="server-side batch: TorchServe batchSize (requests), TF max_execution_batch_size (rows)")
    batch_delay_ms: int = Field(2, description="TorchServe maxBatchDelay / TF batch_timeout_micros")
    workers: int = Field(1, description="TorchServe workers per model; TF num_batch_threads")
    torch_threads: int = Field(1, description="OMP_NUM_THREADS / torch threads per TorchServe worker")
    tf_threads: int = Field(1, description="TensorFlow intra- and inter-op threads")
    jvm_heap: str = Field("256m", description="TorchServe JVM max heap")
    torchserve_token_auth: bool = Field(False, description="leave TorchServe's token authorisation on; the gateway then reads its keys")
    torchserve_token_expiration_min: float = Field(60.0, gt=0, description="lifetime of TorchServe's keys in minutes (token authorisation on); the gateway and `up` renew an expired key")
    response_timeout_s: int = Field(30, description="TorchServe per-model responseTimeout")
    startup_timeout_s: float = Field(180.0, description="how long `up` waits for every model to be ready")

    @property
    def model_list(self) -> list[str]:
        return [m.strip() for m in self.models.split(",") if m.strip()]


class GatewaySettings(BaseSettings):
    """The gateway: where the backends are, how to route, and the limits that keep it responsive."""

    model_config = SettingsConfigDict(env_prefix="TWINSERVE_GATEWAY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, ge=1, description="uvicorn worker processes; several share one Prometheus multiprocess directory so `/metrics` counts them all")
    torchserve_url: str = "http://127.0.0.1:8080"
    torchserve_management_url: str = "http://127.0.0.1:8081"
    torchserve_token: str = Field("", description="TorchServe inference key, when its token authorisation is on")
    torchserve_key_file: str = Field("", description="TorchServe's key_file.json: the gateway reads the inference and management keys from it")
    tfserving_url: str = "http://127.0.0.1:8501"
    routing: Literal["fixed", "weighted", "mirror"] = "fixed"
    primary: Literal["torchserve", "tfserving"] = "torchserve"
    weights: str = Field("torchserve=50,tfserving=50", description="weighted split, e.g. torchserve=90,tfserving=10")
    failover: bool = Field(True, description="serve from the other stack when the chosen one fails")
    timeout_s: float = Field(10.0, description="bound on one upstream call, connect included")
    connect_timeout_s: float = 1.0
    pool_size: int = Field(128, description="keep-alive connections per backend")
    max_in_flight: int = Field(256, description="concurrent requests per backend before 429")
    max_body_bytes: int = Field(4 * 1024 * 1024, description="larger request bodies get 413")
    breaker_failures: int = Field(5, description="consecutive failures that open a backend's circuit")
    breaker_cooldown_s: float = Field(5.0, description="how long an open circuit waits before a probe")
    transport: Literal["aiohttp", "httpx"] = Field("aiohttp", description="httpx transport: aiohttp is cheaper per request")
    api_keys: str = Field("", description="comma-separated API keys; empty disables key checks")
    models: str = "digits,tabular,resnet"

    @property
    def model_list(self) -> list[str]:
        return [m.strip() for m in self.models.split(",") if m.strip()]

    @property
    def weight_map(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for part in self.weights.split(","):
            if part.strip():
                name, _, value = part.partition("=")
                out[name.strip()] = float(value)
        return out
