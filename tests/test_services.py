"""The two serving stacks, real and native: same answers, TF Serving's REST and gRPC contract, bad input."""

from __future__ import annotations

import concurrent.futures
import math

import httpx
import numpy as np
import orjson
import pytest

from models.spec import SPECS
from conftest import ROW_MODELS


def ts_predict(urls: dict, model: str, body: dict) -> httpx.Response:
    return httpx.post(f"{urls['torchserve']}/predictions/{model}", content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), headers={"Content-Type": "application/json"}, timeout=30)


def tf_predict(urls: dict, model: str, body: dict | bytes, path: str = "") -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return httpx.post(f"{urls['tfserving']}/v1/models/{model}{path}:predict", content=content, timeout=30)


@pytest.mark.parametrize("name", ROW_MODELS)
def test_both_stacks_give_the_same_predictions(urls: dict, samples: dict, name: str) -> None:
    x, expected = samples[name]
    ts = ts_predict(urls, name, {"instances": x[:8]})
    tf = tf_predict(urls, name, {"instances": x[:8]})
    assert ts.status_code == 200, ts.text
    assert tf.status_code == 200, tf.text
    a = np.asarray(ts.json()["predictions"])
    b = np.asarray(tf.json()["predictions"])
    assert a.shape == b.shape == (8, SPECS[name].num_classes)
    assert np.abs(a - b).max() <= 1e-4
    assert np.abs(b - expected[:8]).max() <= 1e-5


@pytest.mark.parametrize("name", ["digits", "tabular"])
def test_columnar_form_on_both_stacks(urls: dict, samples: dict, name: str) -> None:
    x, expected = samples[name]
    spec = SPECS[name]
    for body in ({"inputs": x[:3]}, {"inputs": {spec.input_name: x[:3]}}):
        for r in (ts_predict(urls, name, body), tf_predict(urls, name, body)):
            assert r.status_code == 200, r.text
            assert np.abs(np.asarray(r.json()["outputs"]) - expected[:3]).max() <= 1e-4


def test_tf_rest_status_and_metadata(urls: dict) -> None:
    r = httpx.get(f"{urls['tfserving']}/v1/models/digits")
    assert r.status_code == 200
    assert r.json() == {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert r.headers["x-tf-serving-implementation"].startswith("twinserve-tf-compat")
    assert httpx.get(f"{urls['tfserving']}/v1/models/digits/versions/1").status_code == 200
    meta = httpx.get(f"{urls['tfserving']}/v1/models/digits/metadata").json()
    assert meta["model_spec"]["name"] == "digits" and meta["model_spec"]["version"] == "1"
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    pixels = sig["inputs"]["pixels"]
    assert pixels["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in pixels["tensor_shape"]["dim"]] == ["-1", "8", "8"]
    assert list(sig["outputs"]) == ["probabilities"]


def test_tf_rest_errors_follow_tf_serving(urls: dict, samples: dict) -> None:
    x, _ = samples["tabular"]
    r = tf_predict(urls, "nope", {"instances": x[:1]})
    assert r.status_code == 404 and r.json() == {"error": "Servable not found for request: Latest(nope)"}
    r = tf_predict(urls, "tabular", {"instances": x[:1]}, path="/versions/7")
    assert r.status_code == 404 and "Specific(tabular, 7)" in r.json()["error"]
    r = tf_predict(urls, "tabular", {"instances": [[1.0, 2.0]]})
    assert r.status_code == 400 and "shape" in r.json()["error"]
    r = tf_predict(urls, "tabular", {"instances": x[:1], "inputs": x[:1]})
    assert r.status_code == 400 and "only one of" in r.json()["error"]
    r = tf_predict(urls, "tabular", {"signature_name": "nope", "instances": x[:1]})
    assert r.status_code == 400 and "nope" in r.json()["error"]
    r = tf_predict(urls, "tabular", b"{not json")
    assert r.status_code == 400 and "JSON Parse error" in r.json()["error"]
    r = httpx.get(f"{urls['tfserving']}/v1/models")
    assert r.status_code == 400 and r.json()["error"] == "Missing model name in request."
    r = httpx.delete(f"{urls['tfserving']}/v1/models/tabular")
    assert r.status_code == 400 and r.json()["error"].startswith("Malformed request: DELETE")


def test_tf_grpc_predict_metadata_and_status(urls: dict, samples: dict) -> None:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc

    x, expected = samples["digits"]
    with grpc.insecure_channel(urls["grpc"]) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "digits"
        request.model_spec.signature_name = "serving_default"
        request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(x[:4]))
        response = stub.Predict(request, timeout=30)
        probs = tf.make_ndarray(response.outputs["probabilities"])
        assert np.abs(probs - expected[:4]).max() <= 1e-5
        assert response.model_spec.version.value == 1

        meta_req = get_model_metadata_pb2.GetModelMetadataRequest()
        meta_req.model_spec.name = "digits"
        meta_req.metadata_field.append("signature_def")
        meta = stub.GetModelMetadata(meta_req, timeout=10)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        meta.metadata["signature_def"].Unpack(sig_map)
        assert "pixels" in sig_map.signature_def["serving_default"].inputs

        status_req = get_model_status_pb2.GetModelStatusRequest()
        status_req.model_spec.name = "digits"
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_req, timeout=10)
        assert status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.State.AVAILABLE

        request.model_spec.name = "nope"
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"instances": [[1.0, 2.0]]}, "shape"),
        ({"instances": [["a"] * 30]}, "rectangular array of numbers"),
        ({"instances": []}, "empty"),
        ({"instances": [[1.0] * 30], "inputs": [[1.0] * 30]}, "exactly one"),
        ({"instances": [[1.0] * 30, [1.0] * 29]}, "rectangular"),
        ({"nothing": 1}, "exactly one"),
        ({"instances": [[1.0] * 30] * 65}, "exceeds the limit"),
    ],
)
def test_torchserve_bad_input_is_a_400_with_a_json_error(urls: dict, body: dict, fragment: str) -> None:
    r = ts_predict(urls, "tabular", body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert fragment in r.json()["error"]


def test_torchserve_rejects_nan_and_invalid_json(urls: dict) -> None:
    r = httpx.post(f"{urls['torchserve']}/predictions/tabular", content=b'{"instances": [[NaN' + b", 1.0" * 29 + b"]]}", headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 400 and ("NaN" in r.json()["error"] or "JSON" in r.json()["error"])
    r = httpx.post(f"{urls['torchserve']}/predictions/tabular", content=b"{broken", headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    row = [1e39] + [1.0] * 29  # overflows float32 to inf
    r = ts_predict(urls, "tabular", {"instances": [row]})
    assert r.status_code == 400 and "NaN or infinite" in r.json()["error"]


@pytest.mark.parametrize("target", ["torchserve", "tfserving"])
def test_batching_keeps_each_clients_rows_apart(urls: dict, samples: dict, target: str) -> None:
    """32 concurrent clients, each with a different number of different rows: each gets exactly its own back."""
    x, expected = samples["tabular"]

    def one(i: int) -> tuple[int, np.ndarray, int]:
        start, count = i % 24, 1 + i % 5
        body = {"instances": x[start : start + count]}
        r = ts_predict(urls, "tabular", body) if target == "torchserve" else tf_predict(urls, "tabular", body)
        assert r.status_code == 200, r.text
        return start, np.asarray(r.json()["predictions"]), count

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(96)))
    for start, probs, count in results:
        assert probs.shape == (count, 2)
        assert np.abs(probs - expected[start : start + count]).max() <= 1e-4


def test_torchserve_metrics_are_prometheus(urls: dict) -> None:
    text = httpx.get(f"{urls['ts_metrics']}/metrics").text
    assert "ts_inference_requests_total" in text


def test_tf_metrics_count_requests(urls: dict, samples: dict) -> None:
    def count() -> float:
        text = httpx.get(f"{urls['tfserving']}/monitoring/prometheus/metrics").text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(":tensorflow:serving:request_count_total") and 'model_name="resnet"' in line and 'status="OK"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    before = count()
    x, _ = samples["resnet"]
    for _ in range(3):
        assert tf_predict(urls, "resnet", {"instances": x[:1]}).status_code == 200
    assert math.isclose(count() - before, 3)


def test_tf_backend_follows_new_versions_on_disk_without_dropping_a_request(build_dir, tmp_path, samples: dict) -> None:  # type: ignore[no-untyped-def]
    """TF Serving's file-system polling: a new version folder is served, the old one unloaded; a broken
    version is reported and leaves the serving one alone until its files change."""
    import shutil
    import threading
    import time

    from conftest import stack_settings
    from twinserve import stack as native

    source = build_dir / "tfserving" / "tabular" / "1"
    base = tmp_path / "build" / "tfserving" / "tabular"
    shutil.copytree(source, base / "1")
    settings = stack_settings(tmp_path / "run", tmp_path / "build", models="tabular")
    native.up(settings, ("tfserving",))
    url = f"http://127.0.0.1:{settings.tfserving_rest_port}/v1/models/tabular"
    x, expected = samples["tabular"]
    body = orjson.dumps({"instances": x[:4]}, option=orjson.OPT_SERIALIZE_NUMPY)

    def publish(version: int, files: "Path | None" = None) -> None:  # type: ignore[name-defined]  # noqa: F821
        staging = tmp_path / f"staging-{version}"
        if files is None:
            staging.mkdir()
            (staging / "saved_model.pb").write_bytes(b"not a SavedModel")
        else:
            shutil.copytree(files, staging)
        staging.rename(base / str(version))  # appears whole, as a deploy tool would write it

    def states() -> dict[str, str]:
        return {s["version"]: s["state"] for s in httpx.get(url, timeout=5).json()["model_version_status"]}

    def wait_for(expected_states: dict[str, str]) -> None:
        deadline = time.monotonic() + 60
        while states() != expected_states:
            assert time.monotonic() < deadline, f"versions {states()} never became {expected_states}"
            time.sleep(0.2)

    statuses: list[int] = []
    stop = threading.Event()

    def keep_predicting() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                r = client.post(f"{url}:predict", content=body)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    assert np.abs(np.asarray(r.json()["predictions"]) - expected[:4]).max() <= 1e-4

    load = threading.Thread(target=keep_predicting)
    load.start()
    try:
        assert states() == {"1": "AVAILABLE"}
        publish(2, source)
        wait_for({"2": "AVAILABLE"})
        assert httpx.get(f"{url}/metadata").json()["model_spec"]["version"] == "2"
        assert httpx.post(f"{url}/versions/1:predict", content=body).status_code == 404

        publish(3)  # broken: reported, version 2 goes on serving
        wait_for({"2": "AVAILABLE", "3": "END"})
        failed = [s for s in httpx.get(url).json()["model_version_status"] if s["version"] == "3"][0]
        assert failed["status"]["error_code"] != "OK" and failed["status"]["error_message"]

        shutil.copytree(source, base / "3", dirs_exist_ok=True)  # the files are fixed: retried and served
        wait_for({"3": "AVAILABLE"})
        assert httpx.get(f"{url}/metadata").json()["model_spec"]["version"] == "3"
    finally:
        stop.set()
        load.join(timeout=60)
        native.down(settings)
    assert len(statuses) > 20 and set(statuses) == {200}, f"requests during the roll-outs: {sorted(set(statuses))}"
