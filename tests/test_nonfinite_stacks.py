"""Non-finite input sent straight to each stack (issue #19 point 4): a clear 400 naming it, on every path.

JSON bodies may spell non-finite floats `NaN`, `Infinity`, `-Infinity` (TF Serving's REST API reads
these tokens) or overflow to infinity (`1e999`; an integer too long for any float does too). Both
stacks refuse them with a 400 whose message says non-finite, alone: the other requests of the same
server-side batch are still served, TorchServe's worker does not restart, and the next request works.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

ROW = [0.5] * 29
SPELLINGS = [b"NaN", b"Infinity", b"-Infinity", b"1e999"]
HUGE_INTEGER = b"1" + b"0" * 400  # valid JSON, beyond any float
VALID = b'{"instances": [[' + b",".join([b"0.5"] * 30) + b"]]}"


def body(spelling: bytes, form: str) -> bytes:
    values = b",".join([b"0.5"] * 7 + [spelling] + [b"0.5"] * 22)
    if form == "row":
        return b'{"instances": [[' + values + b"]]}"
    return b'{"inputs": {"features": [[' + values + b"]]}}"


def url(urls: dict, target: str) -> str:
    return f"{urls['torchserve']}/predictions/tabular" if target == "torchserve" else f"{urls['tfserving']}/v1/models/tabular:predict"


def assert_non_finite(r: httpx.Response) -> None:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert isinstance(error, str), error  # TF Serving's shape: {"error": "<message>"}
    assert "non-finite" in error and "NaN or infinite" in error, error


def worker_pid(urls: dict) -> int:
    return httpx.get(f"{urls['management']}/models/tabular", timeout=10).json()[0]["workers"][0]["pid"]


@pytest.mark.parametrize("target", ["torchserve", "tfserving"])
@pytest.mark.parametrize("form", ["row", "columnar"])
@pytest.mark.parametrize("spelling", [*SPELLINGS, HUGE_INTEGER], ids=["NaN", "Infinity", "-Infinity", "1e999", "huge-integer"])
def test_non_finite_input_is_a_400_naming_it_and_the_next_request_is_served(urls: dict, target: str, form: str, spelling: bytes) -> None:
    with httpx.Client(timeout=30) as client:
        r = client.post(url(urls, target), content=body(spelling, form), headers={"Content-Type": "application/json"})
        assert_non_finite(r)
        ok = client.post(url(urls, target), content=VALID, headers={"Content-Type": "application/json"})
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["predictions"][0]) == 2


@pytest.mark.parametrize("spelling", SPELLINGS, ids=["NaN", "Infinity", "-Infinity", "1e999"])
def test_torchserve_refuses_them_whatever_the_content_type(urls: dict, spelling: bytes) -> None:
    """Without a JSON content type TorchServe hands the handler bytes: orjson refuses the tokens,
    the standard library's parser reads them, and the answer is the same non-finite 400."""
    r = httpx.post(url(urls, "torchserve"), content=body(spelling, "row"), headers={"Content-Type": "application/octet-stream"}, timeout=30)
    assert_non_finite(r)


@pytest.mark.parametrize("target", ["torchserve", "tfserving"])
def test_a_non_finite_request_fails_alone_in_its_batch(urls: dict, samples: dict, target: str) -> None:
    """16 clients at once, every other one sending NaN: the others get exactly their own rows back,
    and TorchServe's worker is the same process afterwards."""
    x, expected = samples["tabular"]
    pid = worker_pid(urls)

    def call(i: int) -> tuple[int, httpx.Response]:
        content = body(SPELLINGS[i % 4], "row") if i % 2 else f'{{"instances": {x[i : i + 1].tolist()}}}'.encode()
        with httpx.Client(timeout=30) as client:
            return i, client.post(url(urls, target), content=content, headers={"Content-Type": "application/json"})

    for _ in range(3):  # several rounds, so bad and good requests certainly share server-side batches
        with ThreadPoolExecutor(16) as pool:
            for i, r in pool.map(call, range(16)):
                if i % 2:
                    assert_non_finite(r)
                else:
                    assert r.status_code == 200, r.text
                    assert np.abs(np.array(r.json()["predictions"]) - expected[i : i + 1]).max() <= 1e-5
    assert worker_pid(urls) == pid, "TorchServe's worker restarted"


def test_tf_grpc_predict_refuses_non_finite_tensors(urls: dict, samples: dict) -> None:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    x, expected = samples["tabular"]
    with grpc.insecure_channel(urls["grpc"]) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for value in (np.nan, np.inf, -np.inf):
            bad = x[:2].copy()
            bad[1, 3] = value
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "tabular"
            request.inputs["features"].CopyFrom(tf.make_tensor_proto(bad))
            with pytest.raises(grpc.RpcError) as err:
                stub.Predict(request, timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "non-finite" in err.value.details(), err.value.details()
        request.inputs["features"].CopyFrom(tf.make_tensor_proto(x[:2]))
        probs = tf.make_ndarray(stub.Predict(request, timeout=30).outputs["probabilities"])
    assert np.abs(probs - expected[:2]).max() <= 1e-5
