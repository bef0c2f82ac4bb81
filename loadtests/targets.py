"""The load targets: each stack directly, through the gateway, and through two reference proxies.

The reference proxies (nginx, and the bare-Python floor of loadtests/floorproxy.py) forward the
direct path verbatim, so a reference target sends exactly what the direct target sends; only the
process in front differs. One locust user class per target.
"""

from __future__ import annotations

from dataclasses import dataclass

# The processes that can stand in front of a stack. Each one's CPU over a run is charged to the
# target under this name (LocustRun.server[front]), beside the stack's own ("stack").
FRONTS = ("gateway", "nginx", "floor")
REFERENCE_FRONTS = ("nginx", "floor")
STACKS = ("torchserve", "tfserving", "kserve")  # kserve: KServe's model server running ONNX Runtime
# KServe's V1 protocol takes TF Serving's JSON at TF Serving's path: the same body for every stack
DIRECT_PATHS = {"torchserve": "/predictions/{model}", "tfserving": "/v1/models/{model}:predict", "kserve": "/v1/models/{model}:predict"}


@dataclass(frozen=True)
class Target:
    name: str
    user_class: str
    url_key: str  # which base URL it uses: a stack's (torchserve, tfserving, kserve), gateway, or the target's own (reference proxies)
    stack: str  # which serving stack answers ("routed": the gateway's routing policy picks)
    front: str | None  # the process in front of the stack (one of FRONTS), None when direct

    endpoint: str = "predict"  # or "explain" (Integrated Gradients through the gateway)

    @property
    def stacks(self) -> tuple[str, ...]:
        """The serving stacks this target needs running: the routed gateway may send to either."""
        return STACKS if self.stack == "routed" else (self.stack,)

    @property
    def via_gateway(self) -> bool:
        return self.front == "gateway"

    def path(self, model: str) -> str:
        if self.endpoint == "explain":
            return f"/v1/models/{model}:explain?backend={self.stack}"
        if not self.via_gateway:  # direct, or a reference proxy forwarding the direct path verbatim
            return DIRECT_PATHS[self.stack].format(model=model)
        if self.stack == "routed":
            return f"/v1/models/{model}:predict"
        return f"/v1/models/{model}:predict?backend={self.stack}"


def reference_target(front: str, stack: str) -> str:
    """The name of the target that loads `stack` through the reference proxy `front`."""
    return f"{front}-{stack}"


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("torchserve", "TorchServeDirect", "torchserve", "torchserve", None),
        Target("tfserving", "TFServingDirect", "tfserving", "tfserving", None),
        Target("gateway-torchserve", "GatewayTorchServe", "gateway", "torchserve", "gateway"),
        Target("gateway-tfserving", "GatewayTFServing", "gateway", "tfserving", "gateway"),
        Target("kserve", "KServeDirect", "kserve", "kserve", None),
        Target("gateway-kserve", "GatewayKServe", "gateway", "kserve", "gateway"),
        Target("gateway", "GatewayRouted", "gateway", "routed", "gateway"),
        Target("explain-torchserve", "GatewayExplainTorchServe", "gateway", "torchserve", "gateway", "explain"),
        Target("explain-tfserving", "GatewayExplainTFServing", "gateway", "tfserving", "gateway", "explain"),
        Target("nginx-torchserve", "NginxTorchServe", "nginx-torchserve", "torchserve", "nginx"),
        Target("nginx-tfserving", "NginxTFServing", "nginx-tfserving", "tfserving", "nginx"),
        Target("floor-torchserve", "FloorTorchServe", "floor-torchserve", "torchserve", "floor"),
        Target("floor-tfserving", "FloorTFServing", "floor-tfserving", "tfserving", "floor"),
        Target("nginx-kserve", "NginxKServe", "nginx-kserve", "kserve", "nginx"),
        Target("floor-kserve", "FloorKServe", "floor-kserve", "kserve", "floor"),
    )
}

# what `twinserve bench` compares by default: each stack directly and through the gateway
COMPARISON = ["torchserve", "tfserving", "kserve", "gateway-torchserve", "gateway-tfserving", "gateway-kserve"]


def comparison(stacks: list[str]) -> list[str]:
    """COMPARISON for the stacks that run (TWINSERVE_STACKS)."""
    return [t for t in COMPARISON if set(TARGETS[t].stacks) <= set(stacks)]


def with_references(targets: list[str]) -> list[str]:
    """What `--overhead` runs: `targets`, then for every stack they load (both for the routed
    gateway) its direct target, its gateway target, and its nginx and floor targets.

    The gateway's cost is read as ratios of these rows, measured in the same run, so a run that
    lacked the direct or the gateway row (`--targets tfserving --overhead`) had nothing to read it
    against, and its added-latency probe then called a gateway that nobody had started.
    """
    stacks = [s for s in STACKS if any(s in TARGETS[t].stacks for t in targets)]
    extra = [name for s in stacks for name in (s, f"gateway-{s}")]
    extra += [reference_target(f, s) for f in REFERENCE_FRONTS for s in stacks]
    return targets + [t for t in dict.fromkeys(extra) if t not in targets]
