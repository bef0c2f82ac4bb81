"""The one request path (gateway/core.py) and the backend registry, against the real stacks.

A third backend here is a real adapter registered in the test process: it serves from the real
TF backend under another name, which is what adding a stack takes (one adapter, configuration).
The only mock is an adapter that raises, since an unexpected exception is the one error no real
server can be made to produce.
"""

from __future__ import annotations

import httpx
import orjson
import pytest
from conftest import free_port
from gatewayutil import backends, running_gateway

from gateway.backends import REGISTRY, register
from gateway.backends.base import UpstreamResult
from gateway.backends.tfserving import TFServingBackend
from gateway.settings import GatewaySettings


class Replica(TFServingBackend):
    """A third stack for the registry test: the TF backend's REST API under another name."""

    name = "replica"


class Broken(TFServingBackend):
    """An adapter with a bug: every prediction raises something the gateway never expects."""

    name = "broken"

    async def predict(self, model: str, body: bytes, request_id: str) -> UpstreamResult:
        raise RuntimeError("adapter bug")


@pytest.fixture(scope="module", autouse=True)
def extra_adapters():  # type: ignore[no-untyped-def]
    for cls in (Replica, Broken):
        register(cls)
    yield
    for cls in (Replica, Broken):
        REGISTRY.pop(cls.name, None)



def rows(samples: dict, n: int = 3) -> bytes:
    return orjson.dumps({"instances": samples["tabular"][0][:n]}, option=orjson.OPT_SERIALIZE_NUMPY)


def test_a_third_backend_is_one_adapter_and_configuration(urls: dict, samples: dict) -> None:
    """Routing, compare, weights, readiness and circuits all take the registered stack, by configuration alone."""
    with running_gateway(**backends(urls), backends="torchserve,tfserving,replica", routing="weighted", weights="torchserve=0,tfserving=0,replica=1") as g:
        with httpx.Client(timeout=30) as client:
            r = client.post(f"{g}/v1/models/tabular:predict?backend=replica", content=rows(samples))
            assert r.status_code == 200 and r.headers["x-backend"] == "replica"
            served = {client.post(f"{g}/v1/models/tabular:predict", content=rows(samples)).headers["x-backend"] for _ in range(20)}
            assert served == {"replica"}  # all the weight is on the third stack
            cmp = client.post(f"{g}/v1/models/tabular:compare", content=rows(samples)).json()
            assert set(cmp["results"]) == {"torchserve", "tfserving", "replica"}
            assert cmp["classes_agree"] is True and cmp["max_abs_diff"] <= 1e-4
            v2 = client.post(f"{g}/v2/models/tabular/infer?backend=replica", json={"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 30], "data": samples["tabular"][0][0].tolist()}]})
            assert v2.status_code == 200 and v2.json()["parameters"]["backend"] == "replica"
            ready = client.get(f"{g}/readyz").json()
            assert set(ready["circuits"]) == {"torchserve", "tfserving", "replica"}
            assert ready["models"]["tabular"]["replica"] == "READY"
            enum = client.get(f"{g}/openapi.json").json()["paths"]["/v1/models/{model}:predict"]["post"]["parameters"]
            assert next(p for p in enum if p["name"] == "backend")["schema"]["enum"] == ["torchserve", "tfserving", "replica"]


def test_failover_walks_the_backends_in_order(urls: dict, samples: dict) -> None:
    from gatewayutil import dead_url

    settings = {**backends(urls), "tfserving_url": dead_url()}
    with running_gateway(**settings, backends="tfserving,replica,torchserve", primary="tfserving") as g:
        r = httpx.post(f"{g}/v1/models/tabular:predict", content=rows(samples), timeout=30)
    # replica shares the dead URL, so the third backend in the configured order serves
    assert r.status_code == 200 and r.headers["x-backend"] == "torchserve" and r.headers["x-failover-from"] == "tfserving"


def test_unknown_backend_names_are_refused_at_start() -> None:
    from gateway import backends as registry

    with pytest.raises(ValueError, match="TWINSERVE_GATEWAY_BACKENDS names unknown backend.*nope"):
        registry.create(GatewaySettings(backends="torchserve,nope"))
    with pytest.raises(ValueError, match="TWINSERVE_GATEWAY_WEIGHTS names unknown backend.*torchsrve"):
        registry.create(GatewaySettings(weights="torchsrve=90,tfserving=10"))


def test_an_unexpected_exception_is_the_same_json_500_on_every_route(urls: dict, samples: dict) -> None:
    with running_gateway(**backends(urls), backends="broken,torchserve", primary="broken", failover=False) as g:
        for path in ("/v1/models/tabular:predict", "/v1/models/tabular:compare"):
            r = httpx.post(f"{g}{path}", content=rows(samples), headers={"X-Request-ID": "rid-500"}, timeout=30)
            assert r.status_code == 500, (path, r.text)
            assert r.headers["content-type"] == "application/json" and r.headers["x-request-id"] == "rid-500"
            assert r.json() == {"error": "the gateway failed to handle this request; see its log", "type": "internal_error", "backend": None}
            assert "adapter bug" not in r.text and "Traceback" not in r.text
        metrics = httpx.get(f"{g}/metrics").text
        assert 'endpoint="predict",model="tabular",status="500"' in metrics


def test_wrong_method_on_an_inference_route_is_405_with_allow(urls: dict) -> None:
    g = urls["gateway"]
    for path in ("/v1/models/tabular:predict", "/v1/models/tabular:compare", "/v1/models/tabular:explain", "/v2/models/tabular/infer"):
        r = httpx.get(f"{g}{path}")
        assert r.status_code == 405, (path, r.text)
        assert r.headers["allow"] == "POST"
        assert r.json()["type"] == "method_not_allowed" and "POST" in r.json()["error"]


def test_api_keys_are_checked_in_one_place_for_every_route(urls: dict, samples: dict) -> None:
    """Inference and administrative routes alike need a key; liveness and readiness probes do not.
    The same holds on the gRPC port: UNAUTHENTICATED without the key in the call's metadata."""
    grpc_port = free_port()
    with running_gateway(**backends(urls), api_keys="k1", grpc_port=grpc_port) as g:
        grpc_keys_are_checked(f"127.0.0.1:{grpc_port}")
        with httpx.Client(timeout=30) as client:
            for method, path in (("POST", "/v1/models/tabular:predict"), ("POST", "/v1/models/tabular:compare"), ("POST", "/v2/models/tabular/infer"), ("GET", "/v1/models"), ("GET", "/v1/models/tabular"), ("GET", "/v2/models/tabular"), ("GET", "/v2")):
                r = client.request(method, f"{g}{path}", content=rows(samples) if method == "POST" else None)
                assert r.status_code == 401, (path, r.status_code)
                assert r.json()["type"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
            assert client.get(f"{g}/v1/models", headers={"X-API-Key": "k1"}).status_code == 200
            for path in ("/v2/health/live", "/v2/health/ready", "/healthz", "/readyz"):
                assert client.get(f"{g}{path}").status_code == 200, path


def grpc_keys_are_checked(target: str) -> None:
    import grpc
    import tritonclient.grpc as triton_grpc
    from tritonclient.utils import InferenceServerException

    client = triton_grpc.InferenceServerClient(target)
    try:
        assert client.is_server_live() and client.is_server_ready()  # probes stay open
        for call in (lambda **kw: client.get_model_metadata("tabular", **kw), lambda **kw: client.get_server_metadata(**kw)):
            with pytest.raises(InferenceServerException) as refused:
                call()
            assert refused.value.status() == str(grpc.StatusCode.UNAUTHENTICATED), refused.value
            assert "API key" in refused.value.message()
        assert client.get_model_metadata("tabular", headers={"x-api-key": "k1"}).name == "tabular"
        assert client.get_server_metadata(headers={"authorization": "Bearer k1"}).name == "twinserve"
    finally:
        client.close()


def test_backend_override_is_parsed_once_for_every_inference_route(urls: dict, samples: dict) -> None:
    g = urls["gateway"]
    for path in ("/v1/models/tabular:predict", "/v1/models/tabular:explain"):
        for where in ({"params": {"backend": "nope"}}, {"headers": {"X-Backend": "nope"}}):
            r = httpx.post(f"{g}{path}", content=rows(samples, 1), timeout=30, **where)  # type: ignore[arg-type]
            assert r.status_code == 400 and r.json()["type"] == "unknown_backend", (path, where, r.text)
        r = httpx.post(f"{g}{path}", content=rows(samples, 1), headers={"X-Backend": "tfserving"}, timeout=30)
        assert r.status_code == 200 and r.headers["x-backend"] == "tfserving"
