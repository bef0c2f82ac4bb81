"""Every setting of twinserve, read once from the environment (TWINSERVE_*) with sane defaults.

The gateway has its own settings (gateway/settings.py); this module is the operator layer's.
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
    kserve_http_port: int = Field(8090, description="the third stack, KServe's model server running ONNX Runtime: its REST port (V1 and V2)")
    kserve_grpc_port: int = Field(8091, description="KServe's V2 gRPC port")
    kserve_threads: int = Field(1, ge=1, description="ONNX Runtime intra-op threads per model session in the KServe stack")
    kserve_workers: int = Field(1, ge=1, description="KServe model server worker processes")
    kserve_python: Path = Field(ROOT / ".venv-kserve" / "bin" / "python", description="the KServe stack's own Python (`make setup` makes .venv-kserve: kserve 0.21 pins psutil<6 and protobuf 6, the project psutil 7 and protobuf 7)")
    stacks: str = Field("torchserve,tfserving,kserve", description="the serving stacks `up` starts natively and the gateway routes to, in failover order")
    gateway_port: int = 8000
    gateway_grpc_port: int = Field(8001, description="the gateway's gRPC port (KServe V2 and TF Serving's services); 0 turns gRPC off")
    gateway_host: str | None = Field(None, description="the gateway's bind address (TWINSERVE_GATEWAY_HOST, the same variable the gateway reads); default: TWINSERVE_HOST")
    models: str = Field("digits,tabular,resnet", description="comma-separated models to serve")
    build_dir: Path = ROOT / "models" / "build"
    run_dir: Path = Field(ROOT / ".twinserve", description="pid/state file and per-run log folders")
    tf_backend: Literal["auto", "binary", "compat"] = Field(
        "auto", description="auto: tensorflow_model_server if on PATH, else the compatible server"
    )
    batch_size: int = Field(8, description="server-side batch: TorchServe batchSize (requests), TF max_execution_batch_size (rows)")
    batch_delay_ms: int = Field(2, description="TorchServe maxBatchDelay / TF batch_timeout_micros")
    workers: int = Field(1, description="TorchServe workers per model; TF num_batch_threads; KServe inferences run at once (--parallel_runs)")
    torch_threads: int = Field(1, description="OMP_NUM_THREADS / torch threads per TorchServe worker")
    tf_threads: int = Field(1, description="TensorFlow intra- and inter-op threads")
    jvm_heap: str = Field("256m", description="TorchServe JVM max heap")
    torchserve_request_logs: bool = Field(False, description="TorchServe's per-request log lines (access log, per-job and per-batch lines); off keeps start-up lines, warnings and errors")
    log_max_mb: float = Field(50.0, gt=0, description="cap of each log file of a service (its captured output, TorchServe's own files); one rolled file is kept beside it")
    torchserve_token_auth: bool = Field(False, description="leave TorchServe's token authorisation on; the gateway then reads its keys")
    torchserve_token_expiration_min: float = Field(60.0, gt=0, description="lifetime of TorchServe's keys in minutes (token authorisation on); the gateway and `up` renew an expired key")
    response_timeout_s: int = Field(30, description="TorchServe per-model responseTimeout")
    startup_timeout_s: float = Field(180.0, description="how long `up` waits for every model to be ready")

    @property
    def model_list(self) -> list[str]:
        return [m.strip() for m in self.models.split(",") if m.strip()]

    @property
    def stack_list(self) -> list[str]:
        return [m.strip() for m in self.stacks.split(",") if m.strip()]

    @property
    def gateway_bind(self) -> str:
        return self.gateway_host or self.host

    @property
    def gateway_client_host(self) -> str:
        """Where to reach the gateway: its bind address, or loopback when it binds every interface
        (an IPv6 address in brackets, as URLs and gRPC targets write it)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.gateway_bind, self.gateway_bind)
        return host if ":" not in host else f"[{host}]"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.gateway_client_host}:{self.gateway_port}"

    @property
    def gateway_grpc_target(self) -> str:
        """The gateway's gRPC address as clients write it (host:port)."""
        return f"{self.gateway_client_host}:{self.gateway_grpc_port}"
