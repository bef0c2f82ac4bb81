"""The gateway against the real stacks started by the project's launcher."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
import re
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from models.spec import SPECS
from conftest import ROW_MODELS


def post(url: str, body: object, **kw: object) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return httpx.post(url, content=content, timeout=30, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ROW_MODELS)
@pytest.mark.parametrize("backend", ["torchserve", "tfserving", "kserve"])
def test_predict_every_model_through_each_backend(urls: dict, samples: dict, name: str, backend: str) -> None:
    x, expected = samples[name]
    r = post(f"{urls['gateway']}/v1/models/{name}:predict?backend={backend}", {"instances": x[:4]})
    assert r.status_code == 200, r.text
    assert r.headers["x-backend"] == backend
    assert float(r.headers["x-upstream-ms"]) > 0
    assert np.abs(np.asarray(r.json()["predictions"]) - expected[:4]).max() <= 1e-4


def test_backend_header_and_columnar_form(urls: dict, samples: dict) -> None:
    x, expected = samples["digits"]
    r = post(f"{urls['gateway']}/v1/models/digits:predict", {"inputs": {"pixels": x[:2]}}, headers={"X-Backend": "tfserving"})
    assert r.status_code == 200 and r.headers["x-backend"] == "tfserving"
    assert np.abs(np.asarray(r.json()["outputs"]) - expected[:2]).max() <= 1e-4
    r = post(f"{urls['gateway']}/v1/models/digits:predict", {"instances": [{"pixels": row} for row in x[:2].tolist()]})
    assert r.status_code == 200 and r.headers["x-backend"] == "torchserve"  # the default fixed primary


@pytest.mark.parametrize("name", ROW_MODELS)
def test_v2_infer_flat_and_nested(urls: dict, samples: dict, name: str) -> None:
    spec = SPECS[name]
    x, expected = samples[name]
    for data in (x[:3].reshape(-1).tolist(), x[:3].tolist()):
        body = {"id": "abc", "inputs": [{"name": spec.input_name, "shape": [3, *spec.shape], "datatype": "FP32", "data": data}]}
        for backend in ("torchserve", "tfserving", "kserve"):
            r = post(f"{urls['gateway']}/v2/models/{name}/infer?backend={backend}", body)
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["id"] == "abc" and out["model_name"] == name
            (tensor,) = out["outputs"]
            assert tensor["name"] == spec.output_name and tensor["shape"] == [3, spec.num_classes] and tensor["datatype"] == "FP32"
            assert np.abs(np.asarray(tensor["data"]).reshape(3, -1) - expected[:3]).max() <= 1e-4


def test_v2_metadata_and_health(urls: dict) -> None:
    g = urls["gateway"]
    meta = httpx.get(f"{g}/v2/models/digits").json()
    assert meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 8, 8]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert httpx.get(f"{g}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{g}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{g}/v2/models/digits/ready").json()["ready"] is True
    assert httpx.get(f"{g}/v2/models/nope").status_code == 404
    assert httpx.get(f"{g}/v2").json()["name"] == "twinserve"


def test_compare_returns_every_stack_and_their_agreement(urls: dict, samples: dict) -> None:
    x, _ = samples["resnet"]
    r = post(f"{urls['gateway']}/v1/models/resnet:compare", {"instances": x[:5]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["results"]) == {"torchserve", "tfserving", "kserve"}
    for res in body["results"].values():
        assert len(res["predictions"]) == 5 and res["latency_ms"] > 0
    answers = [np.asarray(body["results"][n]["predictions"]) for n in ("torchserve", "tfserving", "kserve")]
    worst = max(float(np.abs(a - b).max()) for i, a in enumerate(answers) for b in answers[i + 1:])
    assert body["max_abs_diff"] == pytest.approx(worst)  # the largest over the three pairs
    assert body["max_abs_diff"] <= 1e-4
    assert body["classes_agree"] is True


def test_model_listing_health_and_readiness(stack, urls: dict) -> None:
    g = urls["gateway"]
    models = httpx.get(f"{g}/v1/models").json()["models"]
    assert [m["name"] for m in models] == stack.model_list
    assert all(m["backends"] == {"torchserve": "READY", "tfserving": "READY", "kserve": "READY"} for m in models)
    one = httpx.get(f"{g}/v1/models/resnet").json()
    assert one["synthetic"] is True and one["shape"] == [32, 32, 3]
    assert httpx.get(f"{g}/healthz").status_code == 200
    ready = httpx.get(f"{g}/readyz").json()
    assert ready["ready"] is True and ready["circuits"] == {"torchserve": "closed", "tfserving": "closed", "kserve": "closed"}
    assert ready["implementations"]["tfserving"].startswith("twinserve-tf-compat")
    assert ready["implementations"]["torchserve"] == "TorchServe"
    assert ready["implementations"]["kserve"] == "KServe model server + ONNX Runtime"


BAD = [
    (b'{"instances": [[1.0, 2.0]]}', 400, "invalid_shape"),
    (b'{"instances": [["a", "b"]]}', 400, "invalid_dtype"),
    (b'{"instances": [[1.0, 2.0], [1.0]]}', 400, "invalid_input"),
    (b'{"instances": [[1e39' + b", 1.0" * 29 + b"]]}", 400, "non_finite"),
    (b'{"instances": []}', 400, "empty_batch"),
    (b'{"instances": ' + orjson.dumps([[1.0] * 30] * 65) + b"}", 400, "batch_too_large"),
    (b'{"instances": [[NaN' + b", 1.0" * 29 + b"]]}", 400, "non_finite"),  # TF Serving's NaN token parses, then is refused (issue #19)
    (b"{not json", 400, "malformed_json"),
    (b"", 400, "malformed_json"),
    (b"[1, 2]", 400, "invalid_input"),
    (b'{"instances": [[1.0]], "inputs": [[1.0]]}', 400, "invalid_input"),
    (b'{"signature_name": "other", "instances": [[1.0]]}', 400, "invalid_input"),
]


@pytest.mark.parametrize("body, status, kind", BAD)
def test_bad_input_gets_a_clear_error(urls: dict, body: bytes, status: int, kind: str) -> None:
    r = httpx.post(f"{urls['gateway']}/v1/models/tabular:predict", content=body, timeout=10)
    assert r.status_code == status, r.text
    error = r.json()
    assert error["type"] == kind and error["error"]
    assert "Traceback" not in r.text


def test_unknown_model_backend_and_oversized_body(urls: dict) -> None:
    g = urls["gateway"]
    r = post(f"{g}/v1/models/nope:predict", {"instances": [[1.0]]})
    assert r.status_code == 404 and r.json()["type"] == "unknown_model"
    r = post(f"{g}/v1/models/tabular:predict?backend=onnx", {"instances": [[1.0] * 30]})
    assert r.status_code == 400 and r.json()["type"] == "unknown_backend"
    r = httpx.post(f"{g}/v1/models/tabular:predict", content=b" " * (4 * 1024 * 1024 + 1), timeout=30)
    assert r.status_code == 413 and r.json()["type"] == "body_too_large"
    r = post(f"{g}/v2/models/tabular/infer", {"inputs": [{"name": "wrong", "shape": [1, 30], "datatype": "FP32", "data": [1.0] * 30}]})
    assert r.status_code == 400
    r = post(f"{g}/v2/models/tabular/infer", {"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "data": [1.0] * 29}]})
    assert r.status_code == 400 and r.json()["type"] == "invalid_shape"
    r = post(f"{g}/v2/models/tabular/infer", {"inputs": [{"name": "features", "shape": [1, 30], "datatype": "BYTES", "data": ["a"] * 30}]})
    assert r.status_code == 400 and r.json()["type"] == "invalid_dtype"


def test_request_id_is_kept_or_generated(urls: dict, samples: dict) -> None:
    x, _ = samples["tabular"]
    r = post(f"{urls['gateway']}/v1/models/tabular:predict", {"instances": x[:1]}, headers={"X-Request-ID": "trace-123"})
    assert r.headers["x-request-id"] == "trace-123"
    r = post(f"{urls['gateway']}/v1/models/tabular:predict", {"instances": x[:1]})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    r = post(f"{urls['gateway']}/v1/models/tabular:predict", {"instances": [[1.0]]}, headers={"X-Request-ID": "bad-one"})
    assert r.headers["x-request-id"] == "bad-one"


def _counter(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_what_was_sent(urls: dict, samples: dict) -> None:
    g = urls["gateway"]
    x, _ = samples["digits"]
    before = httpx.get(f"{g}/metrics").text
    for _ in range(7):
        assert post(f"{g}/v1/models/digits:predict?backend=tfserving", {"instances": x[:1]}).status_code == 200
    for _ in range(3):
        assert post(f"{g}/v1/models/digits:predict", {"instances": [[1.0]]}).status_code == 400
    after = httpx.get(f"{g}/metrics").text
    ok = dict(model="digits", backend="tfserving", endpoint="predict", status="200")
    bad = dict(model="digits", backend="none", endpoint="predict", status="400")
    assert _counter(after, "twinserve_gateway_requests_total", **ok) - _counter(before, "twinserve_gateway_requests_total", **ok) == 7
    assert _counter(after, "twinserve_gateway_requests_total", **bad) - _counter(before, "twinserve_gateway_requests_total", **bad) == 3
    assert _counter(after, "twinserve_gateway_upstream_seconds_count", model="digits", backend="tfserving") >= 7
    assert "twinserve_gateway_in_flight" in after


def test_openapi_documents_every_endpoint(urls: dict) -> None:
    spec = httpx.get(f"{urls['gateway']}/openapi.json").json()
    for path in ("/v1/models/{model}:predict", "/v1/models/{model}:compare", "/v1/models", "/v1/models/{model}", "/v2/models/{model}/infer", "/v2/models/{model}", "/v2/health/live", "/v2/health/ready", "/healthz", "/readyz", "/metrics"):
        assert path in spec["paths"], path
    body = spec["paths"]["/v1/models/{model}:predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/PredictRequest"}
    assert "V2Tensor" in spec["components"]["schemas"] and "PredictRequest" in spec["components"]["schemas"]


def test_concurrent_clients_through_the_gateway_get_their_own_rows(urls: dict, samples: dict) -> None:
    x, expected = samples["digits"]

    def one(i: int) -> None:
        start = i % 30
        r = post(f"{urls['gateway']}/v1/models/digits:predict?backend={'torchserve' if i % 2 else 'tfserving'}", {"instances": x[start : start + 2]})
        assert r.status_code == 200
        assert np.abs(np.asarray(r.json()["predictions"]) - expected[start : start + 2]).max() <= 1e-4

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(64)))


def test_metrics_of_a_two_worker_gateway_count_every_worker(stack, tmp_path, samples: dict) -> None:  # type: ignore[no-untyped-def]
    from conftest import free_port, group_members
    from twinserve import stack as native

    settings = stack.model_copy(update={"gateway_port": free_port(), "gateway_grpc_port": free_port(), "run_dir": tmp_path / "run"})
    started = native.up(settings, ("gateway",), gateway={"workers": "2"})
    g = f"http://127.0.0.1:{settings.gateway_port}"
    x, _ = samples["tabular"]
    try:
        children = [pid for pid in group_members([started["gateway"].pgid]) if pid != started["gateway"].pid]
        environs = [dict(e.split("=", 1) for e in open(f"/proc/{pid}/environ").read().split("\0") if "=" in e) for pid in children]
        shared = Path(next(e["PROMETHEUS_MULTIPROC_DIR"] for e in environs if "PROMETHEUS_MULTIPROC_DIR" in e))

        def one(i: int) -> int:
            # a fresh connection per request, so both workers accept some
            return post(f"{g}/v1/models/tabular:predict?backend=torchserve", {"instances": x[i % 30 : i % 30 + 1]}).status_code

        def served() -> list[int]:
            return [pid for pid in children if (shared / f"counter_{pid}.db").exists()]

        sent = 0
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            while (sent < 60 or len(served()) < 2) and sent < 600:  # the kernel picks the worker: send until both have served
                assert set(pool.map(one, range(sent, sent + 20))) == {200}
                sent += 20
        workers = served()
        assert len(workers) == 2, f"one worker served none of {sent} requests"
        ok = dict(model="tabular", backend="torchserve", endpoint="predict", status="200")
        for _ in range(6):  # whichever worker answers the scrape, it reports both workers' requests
            assert _counter(httpx.get(f"{g}/metrics").text, "twinserve_gateway_requests_total", **ok) == sent
        # a worker that stops leaves the live gauges (in-flight, circuit-open); its counts stay
        stopping = workers[0]
        assert list(shared.glob(f"gauge_live*_{stopping}.db"))
        os.kill(stopping, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while stopping in group_members([started["gateway"].pgid]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not list(shared.glob(f"gauge_live*_{stopping}.db"))
        assert _counter(httpx.get(f"{g}/metrics").text, "twinserve_gateway_requests_total", **ok) == sent
    finally:
        native.down(settings, ["gateway"])
    assert not group_members([started["gateway"].pgid])
    assert not shared.exists(), "the gateway left its metrics directory behind"
