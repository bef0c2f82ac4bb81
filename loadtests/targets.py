"""The load targets: each stack directly, and the gateway routed to each. One locust user class per target."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    user_class: str
    url_key: str  # which base URL it uses: torchserve, tfserving or gateway
    stack: str  # which serving stack answers
    via_gateway: bool

    endpoint: str = "predict"  # or "explain" (Integrated Gradients through the gateway)

    def path(self, model: str) -> str:
        if self.endpoint == "explain":
            return f"/v1/models/{model}:explain?backend={self.stack}"
        if self.url_key == "torchserve":
            return f"/predictions/{model}"
        if self.url_key == "tfserving" or self.stack == "routed":
            return f"/v1/models/{model}:predict"
        return f"/v1/models/{model}:predict?backend={self.stack}"


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("torchserve", "TorchServeDirect", "torchserve", "torchserve", False),
        Target("tfserving", "TFServingDirect", "tfserving", "tfserving", False),
        Target("gateway-torchserve", "GatewayTorchServe", "gateway", "torchserve", True),
        Target("gateway-tfserving", "GatewayTFServing", "gateway", "tfserving", True),
        Target("gateway", "GatewayRouted", "gateway", "routed", True),
        Target("explain-torchserve", "GatewayExplainTorchServe", "gateway", "torchserve", True, "explain"),
        Target("explain-tfserving", "GatewayExplainTFServing", "gateway", "tfserving", True, "explain"),
    )
}

# what `twinserve bench` compares by default: each stack directly and through the gateway
COMPARISON = ["torchserve", "tfserving", "gateway-torchserve", "gateway-tfserving"]
