"""The gateway's settings (TWINSERVE_GATEWAY_*), read once at start-up. The gateway owns them:
it imports nothing from the operator layer, so its image carries gateway/ and models/ only."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """The gateway: where the backends are, how to route, and the limits that keep it responsive."""

    model_config = SettingsConfigDict(env_prefix="TWINSERVE_GATEWAY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = Field(8001, ge=0, le=65535, description="gRPC port on the same host: KServe V2's GRPCInferenceService and TF Serving's PredictionService/ModelService; 0 turns gRPC off")
    workers: int = Field(1, ge=1, description="uvicorn worker processes; several share one Prometheus multiprocess directory so `/metrics` counts them all")
    torchserve_url: str = Field("http://127.0.0.1:8080", description="TorchServe's inference API: one URL or a comma-separated list; each host name is resolved to all its addresses, one replica each (gateway/replicas.py)")
    torchserve_management_url: str = Field("http://127.0.0.1:8081", description="TorchServe's management API; with several replicas, each replica's address at this URL's port")
    torchserve_token: str = Field("", description="TorchServe inference key, when its token authorisation is on")
    torchserve_key_file: str = Field("", description="TorchServe's key_file.json: the gateway reads the inference and management keys from it")
    tfserving_url: str = Field("http://127.0.0.1:8501", description="TF Serving's REST API: one URL or a comma-separated list, resolved like torchserve_url")
    kserve_url: str = Field("http://127.0.0.1:8090", description="KServe's model server (ONNX Runtime, the third stack): its REST API, one URL or a comma-separated list, resolved like torchserve_url")
    resolve_interval_s: float = Field(5.0, ge=0.0, description="how often the stacks' host names are re-resolved to their replicas' addresses (Docker's and Kubernetes' DNS); 0 resolves once at start")
    backends: str = Field("torchserve,tfserving,kserve", description="comma-separated backends to enable, from the registry (gateway/backends/); their order is the failover order")
    routing: Literal["fixed", "weighted", "mirror"] = "fixed"
    primary: str = Field("torchserve", description="the backend that serves under fixed and mirror routing (one of the enabled backends)")
    weights: str = Field("", description="weighted split, e.g. torchserve=90,tfserving=10 (a backend left out gets none); empty: an equal split over the enabled backends")
    failover: bool = Field(True, description="serve from the other stack when the chosen one fails")
    timeout_s: float = Field(10.0, description="bound on one upstream call, connect included")
    connect_timeout_s: float = 1.0
    pool_size: int = Field(128, description="keep-alive connections per backend")
    max_in_flight: int = Field(256, description="concurrent requests per backend before 429")
    max_body_bytes: int = Field(4 * 1024 * 1024, description="larger request bodies get 413")
    breaker_failures: int = Field(5, description="consecutive failures that open a backend's circuit")
    breaker_cooldown_s: float = Field(5.0, description="how long an open circuit waits before a probe")
    api_keys: str = Field("", description="comma-separated API keys; empty disables key checks")
    access_log_sample: float = Field(0.01, ge=0.0, le=1.0, description="share of requests written to the access log (every 5xx is written); 0 turns it off, 1 logs every request")
    models: str = "digits,tabular,resnet"

    @property
    def model_list(self) -> list[str]:
        return [m.strip() for m in self.models.split(",") if m.strip()]

    @field_validator("weights")
    @classmethod
    def _weights_are_pairs(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            name, _, number = part.partition("=")
            try:
                float(number)
            except ValueError:
                raise ValueError(f"{part!r} is not name=number; e.g. torchserve=90,tfserving=10") from None
            if not name.strip():
                raise ValueError(f"{part!r} is not name=number; e.g. torchserve=90,tfserving=10")
        return value

    @property
    def backend_list(self) -> list[str]:
        return [b.strip() for b in self.backends.split(",") if b.strip()]

    @property
    def weight_map(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for part in self.weights.split(","):
            if part.strip():
                name, _, value = part.partition("=")
                out[name.strip()] = float(value)
        return out


def describe_errors(exc: ValidationError, prefix: str) -> str:
    """One line per bad setting, naming the environment variable, the value given and what is allowed,
    instead of pydantic's traceback."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error.get("loc") else "?"
        given = error.get("input")
        shown = f"={given!r}" if isinstance(given, (str, int, float, bool)) else ""
        lines.append(f"{prefix}{field.upper()}{shown}: {error['msg']}")
    return "; ".join(lines)
