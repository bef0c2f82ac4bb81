"""Triton's own Python client, tritonclient.http 2.73, unmodified and with its defaults, against the
session's gateway: health, server and model metadata, the model configuration and statistics
extensions, and `infer` on both stacks for one float input, an image, two inputs of two dtypes with
two outputs, and a BYTES input. With its defaults the client sends every input as binary tensor
data and asks for every output as binary; its answers are checked against each stack's own V1
answer to the same inputs. Errors reach the client as InferenceServerException naming the problem.
A few hand-made binary bodies check the extension's size rules, which the client never breaks.
"""

from __future__ import annotations

import base64

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from conftest import OWN_MODEL
from models.samples import jpeg_photos

BACKENDS = ("torchserve", "tfserving")
HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def client(urls: dict):  # type: ignore[no-untyped-def]
    """The client as its documentation builds it: host:port, no scheme, default options."""
    c = triton.InferenceServerClient(urls["gateway"].removeprefix("http://"))
    yield c
    c.close()


def direct(urls: dict, backend: str, model: str, body: dict) -> dict[str, np.ndarray]:
    """A stack's own answer to a V1 body, past the gateway: outputs by name (one output: its name)."""
    url = f"{urls['torchserve']}/predictions/{model}" if backend == "torchserve" else f"{urls['tfserving']}/v1/models/{model}:predict"
    r = httpx.post(url, json=body, timeout=60)
    assert r.status_code == 200, r.text
    answer = r.json()
    values = answer["predictions"] if "predictions" in answer else answer["outputs"]
    if isinstance(values, dict):
        return {k: np.asarray(v) for k, v in values.items()}
    if values and isinstance(values[0], dict):
        return {k: np.asarray([row[k] for row in values]) for k in values[0]}
    return {"probabilities": np.asarray(values)}


def tensor(name: str, array: np.ndarray, datatype: str) -> triton.InferInput:
    t = triton.InferInput(name, list(array.shape), datatype)
    t.set_data_from_numpy(array)  # binary_data=True: the client's default
    return t


def binary_size(result: triton.InferResult, name: str) -> int | None:
    output = result.get_output(name)
    assert output is not None, result.get_response()
    return (output.get("parameters") or {}).get("binary_data_size")


def test_health_and_server_metadata_announce_the_extensions(client) -> None:  # type: ignore[no-untyped-def]
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("tabular") and client.is_model_ready(OWN_MODEL)
    meta = client.get_server_metadata()
    assert meta["name"] == "twinserve"
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(meta["extensions"])


def test_model_metadata_and_configuration(client) -> None:  # type: ignore[no-untyped-def]
    meta = client.get_model_metadata(OWN_MODEL)
    assert meta["name"] == OWN_MODEL and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}, {"name": "tokens", "datatype": "INT64", "shape": [-1, 3]}]

    config = client.get_model_config(OWN_MODEL)
    assert config["name"] == OWN_MODEL and config["max_batch_size"] == 64 and config["platform"] == meta["platform"]
    assert config["input"] == [{"name": "features", "data_type": "TYPE_FP32", "dims": [4]}, {"name": "tokens", "data_type": "TYPE_INT64", "dims": [3]}]
    assert {o["name"]: (o["data_type"], o["dims"]) for o in config["output"]} == {"hidden": ("TYPE_FP32", [8]), "scores": ("TYPE_FP32", [3])}
    assert config["parameters"]["backends"]["string_value"] == "torchserve,tfserving,kserve"

    image = client.get_model_config("mobilenet")  # one JPEG per instance: a scalar BYTES, as Triton writes it
    assert image["max_batch_size"] == 16
    assert image["input"] == [{"name": "image_bytes", "data_type": "TYPE_STRING", "dims": [1], "reshape": {"shape": []}}]
    assert client.get_model_config("resnet")["input"][0]["dims"] == [32, 32, 3]


@pytest.mark.parametrize("backend", BACKENDS)
def test_infer_tabular_with_the_defaults(client, urls: dict, samples: dict, backend: str) -> None:  # type: ignore[no-untyped-def]
    x, expected = samples["tabular"]
    rows = x[:1]  # FP32 [1, 30]
    result = client.infer("tabular", [tensor("features", rows, "FP32")], headers={"x-backend": backend})
    got = result.as_numpy("probabilities")
    assert got.dtype == np.float32 and got.shape == (1, 2)
    assert binary_size(result, "probabilities") == 1 * 2 * 4  # came back as binary, as the client asked
    assert result.get_response()["parameters"]["backend"] == backend
    np.testing.assert_allclose(got, direct(urls, backend, "tabular", {"instances": rows.tolist()})["probabilities"], atol=1e-6)
    np.testing.assert_allclose(got, expected[:1], atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_infer_resnet_batch(client, urls: dict, samples: dict, backend: str) -> None:  # type: ignore[no-untyped-def]
    x, expected = samples["resnet"]
    images = x[:4]  # FP32 [4, 32, 32, 3]
    result = client.infer("resnet", [tensor("image", images, "FP32")], query_params={"backend": backend})
    got = result.as_numpy("probabilities")
    assert got.shape == (4, 10) and result.get_response()["parameters"]["backend"] == backend
    np.testing.assert_allclose(got, direct(urls, backend, "resnet", {"instances": images.tolist()})["probabilities"], atol=1e-6)
    np.testing.assert_allclose(got, expected[:4], atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_infer_two_inputs_two_outputs(client, urls: dict, own_model: dict, backend: str) -> None:  # type: ignore[no-untyped-def]
    with np.load(own_model["samples"]) as data:
        features, tokens = data["features"][:5], data["tokens"][:5]
    inputs = [tensor("features", features, "FP32"), tensor("tokens", tokens, "INT64")]
    want = direct(urls, backend, OWN_MODEL, {"inputs": {"features": features.tolist(), "tokens": tokens.tolist()}})

    result = client.infer(OWN_MODEL, inputs, headers={"x-backend": backend})
    for name, width in (("hidden", 8), ("scores", 3)):
        assert binary_size(result, name) == 5 * width * 4
        np.testing.assert_allclose(result.as_numpy(name), want[name], atol=1e-6)

    # one output as binary, the other as JSON, each as asked
    outputs = [triton.InferRequestedOutput("scores", binary_data=False), triton.InferRequestedOutput("hidden", binary_data=True)]
    result = client.infer(OWN_MODEL, inputs, outputs=outputs, headers={"x-backend": backend})
    assert binary_size(result, "hidden") == 5 * 8 * 4 and binary_size(result, "scores") is None
    assert len(result.get_output("scores")["data"]) == 15
    for name in ("hidden", "scores"):
        np.testing.assert_allclose(result.as_numpy(name), want[name], atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_infer_jpeg_bytes(client, urls: dict, backend: str) -> None:  # type: ignore[no-untyped-def]
    photos = list(jpeg_photos(20261125)[:2])
    result = client.infer("mobilenet", [tensor("image_bytes", np.array(photos, dtype=object), "BYTES")], headers={"x-backend": backend})
    got = result.as_numpy("probabilities")
    assert got.shape == (2, 1000) and result.get_response()["parameters"]["backend"] == backend
    want = direct(urls, backend, "mobilenet", {"instances": [{"b64": base64.b64encode(p).decode()} for p in photos]})
    np.testing.assert_allclose(got, want["probabilities"], atol=1e-5)
    assert (got.argmax(-1) == want["probabilities"].argmax(-1)).all()


def test_json_outputs_when_asked(client, samples: dict) -> None:  # type: ignore[no-untyped-def]
    """binary_data=False on an output: the answer is all JSON, without the binary header."""
    x, expected = samples["digits"]
    result = client.infer("digits", [tensor("pixels", x[:3], "FP32")], outputs=[triton.InferRequestedOutput("probabilities", binary_data=False)])
    output = result.get_output("probabilities")
    assert "data" in output and "parameters" not in output
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected[:3], atol=1e-4)

    json_input = triton.InferInput("pixels", [3, 8, 8], "FP32")
    json_input.set_data_from_numpy(x[:3], binary_data=False)  # the whole request as JSON, no binary part
    result = client.infer("digits", [json_input], outputs=[triton.InferRequestedOutput("probabilities", binary_data=False)])
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected[:3], atol=1e-4)


def test_statistics_count_the_inferences(client, samples: dict) -> None:  # type: ignore[no-untyped-def]
    def tabular_stats() -> dict:
        (stat,) = client.get_inference_statistics("tabular")["model_stats"]
        assert stat["name"] == "tabular" and stat["version"] == "1"
        return stat

    before = tabular_stats()
    x, _ = samples["tabular"]
    for _ in range(3):
        client.infer("tabular", [tensor("features", x[:2], "FP32")])
    with pytest.raises(InferenceServerException):
        client.infer("tabular", [tensor("features", x[:2, :29], "FP32")])  # refused by validation: no inference
    after = tabular_stats()
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 3
    assert after["inference_stats"]["success"]["ns"] > before["inference_stats"]["success"]["ns"]
    assert after["inference_count"] - before["inference_count"] == 6  # instances
    assert after["execution_count"] - before["execution_count"] == 3
    assert after["inference_stats"]["fail"] == before["inference_stats"]["fail"]
    assert after["last_inference"] >= before["last_inference"] and after["last_inference"] > 0
    stats = after["inference_stats"]
    assert stats["compute_infer"]["count"] == stats["success"]["count"]
    assert 0 < stats["compute_infer"]["ns"] <= stats["success"]["ns"]
    assert stats["queue"]["ns"] + stats["compute_infer"]["ns"] == pytest.approx(stats["success"]["ns"], abs=2)

    every = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in every} >= {"digits", "tabular", "resnet", "mobilenet", OWN_MODEL}
    with pytest.raises(InferenceServerException) as err:
        client.get_inference_statistics("nope")
    assert err.value.status() == "404" and "unknown model" in err.value.message()


# errors through the client: InferenceServerException carrying the gateway's message -------------------
def test_unknown_model(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InferenceServerException) as err:
        client.infer("nope", [tensor("features", np.zeros((1, 30), np.float32), "FP32")])
    assert err.value.status() == "404" and "unknown model 'nope'" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.get_model_config("nope")
    assert err.value.status() == "404" and "unknown model 'nope'" in err.value.message()


def test_wrong_shape(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InferenceServerException) as err:
        client.infer("tabular", [tensor("features", np.zeros((1, 29), np.float32), "FP32")])
    assert err.value.status() == "400" and "must have shape [30]; got [29]" in err.value.message()
    assert "must have shape [30]" in str(err.value)  # the client's own formatting of the error


def test_wrong_dtype(client) -> None:  # type: ignore[no-untyped-def]
    inputs = [tensor("features", np.zeros((1, 4), np.float32), "FP32"), tensor("tokens", np.zeros((1, 3), np.float32), "FP32")]
    with pytest.raises(InferenceServerException) as err:
        client.infer(OWN_MODEL, inputs)
    assert err.value.status() == "400" and "'tokens' takes int64" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.infer("tabular", [tensor("features", np.array([[b"x"] * 30], dtype=object), "BYTES")])
    assert err.value.status() == "400" and "datatype 'BYTES'" in err.value.message()


def test_body_over_the_limit(client) -> None:  # type: ignore[no-untyped-def]
    big = np.array([b"\xff" * (4 * 1024 * 1024 + 1)], dtype=object)
    with pytest.raises(InferenceServerException) as err:
        client.infer("mobilenet", [tensor("image_bytes", big, "BYTES")])
    assert err.value.status() == "413" and "exceeds the limit" in err.value.message()


# the extension's size rules, with bodies the client would never send --------------------------------
def binary_body(header: dict, data: bytes) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(header)
    return head + data, {HEADER: str(len(head))}


FEATURES = np.arange(30, dtype="<f4").reshape(1, 30)


@pytest.mark.parametrize(
    "header, data, length, fragment",
    [
        ({"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "parameters": {"binary_data_size": 120}}]}, FEATURES.tobytes()[:100], None, "only 100 of the 100 bytes"),
        ({"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "parameters": {"binary_data_size": 120}}]}, FEATURES.tobytes() + b"xx", None, "add up to 120"),
        ({"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "parameters": {"binary_data_size": 116}}]}, FEATURES.tobytes()[:116], None, "116 bytes of binary data do not fit FP32 of shape [1, 30], which takes 120 bytes"),
        ({"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "parameters": {"binary_data_size": -4}}]}, b"", None, "binary_data_size must be a non-negative integer"),
        ({"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "parameters": {"binary_data_size": 120}}]}, FEATURES.tobytes(), "100000", "the body has only"),
        ({"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "parameters": {"binary_data_size": 120}}]}, FEATURES.tobytes(), "ten", "non-negative integer"),
        ({"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "data": [0.0] * 30, "parameters": {"binary_data_size": 120}}]}, FEATURES.tobytes(), None, "both 'data' and binary_data_size"),
        ({"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "parameters": {"binary_data_size": 120}}], "parameters": {"binary_data_output": "yes"}}, FEATURES.tobytes(), None, "binary_data_output must be true or false"),
    ],
)
def test_sizes_that_do_not_add_up_are_a_400(urls: dict, header: dict, data: bytes, length: str | None, fragment: str) -> None:
    body, headers = binary_body(header, data)
    if length is not None:
        headers[HEADER] = length
    r = httpx.post(f"{urls['gateway']}/v2/models/tabular/infer", content=body, headers=headers, timeout=30)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"] and r.json()["type"] in ("invalid_binary_data", "invalid_shape", "invalid_input")


def test_bytes_elements_and_a_missing_header(urls: dict) -> None:
    g = urls["gateway"]
    photo = bytes(jpeg_photos(20261125)[0])
    cut = len(photo).to_bytes(4, "little") + photo[:1000]  # the element says more bytes than follow
    body, headers = binary_body({"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(cut)}}]}, cut)
    r = httpx.post(f"{g}/v2/models/mobilenet/infer", content=body, headers=headers, timeout=30)
    assert r.status_code == 400 and f"declares {len(photo)} bytes but only 1000 remain" in r.json()["error"], r.text

    two = b"".join(len(p).to_bytes(4, "little") + p for p in (photo, photo))  # two elements for shape [1]
    body, headers = binary_body({"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(two)}}]}, two)
    r = httpx.post(f"{g}/v2/models/mobilenet/infer", content=body, headers=headers, timeout=30)
    assert r.status_code == 400 and "holds 2 BYTES elements but shape [1] needs 1" in r.json()["error"], r.text

    body, _ = binary_body({"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "parameters": {"binary_data_size": 120}}]}, FEATURES.tobytes())
    r = httpx.post(f"{g}/v2/models/tabular/infer", content=body, timeout=30)  # no Inference-Header-Content-Length
    assert r.status_code == 400 and HEADER in r.json()["error"], r.text


def test_a_binary_answer_on_the_wire(urls: dict, samples: dict) -> None:
    """What any client sees: the header, the content type, the JSON then the bytes it announces."""
    x, expected = samples["tabular"]
    body, headers = binary_body({"inputs": [{"name": "features", "shape": [2, 30], "datatype": "FP32", "parameters": {"binary_data_size": 240}}], "parameters": {"binary_data_output": True}}, x[:2].astype("<f4").tobytes())
    r = httpx.post(f"{urls['gateway']}/v2/models/tabular/infer", content=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    length = int(r.headers[HEADER])
    answer = orjson.loads(r.content[:length])
    (output,) = answer["outputs"]
    assert output["parameters"] == {"binary_data_size": 16} and "data" not in output and len(r.content) == length + 16
    np.testing.assert_allclose(np.frombuffer(r.content[length:], "<f4").reshape(output["shape"]), expected[:2], atol=1e-4)
