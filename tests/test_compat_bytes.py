"""String (DT_STRING) tensors on the TF-Serving-compatible server, against a real private server.

A tiny SavedModel decodes JPEG bytes (`image_bytes`, [None]) to three colour shares (`probabilities`,
[None, 3]), passes the bytes through (`thumb_bytes`, written base64 because of the `_bytes` suffix)
and names the dominant colour (`label`, a plain string). A second signature `echo` shows how a JSON
string becomes bytes; a second model `affine` (float32 [None, 4]) covers numeric shape checks on gRPC.
The server is the compatible one, started by the project's launcher on free loopback ports and
stopped at the end with nothing left running.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import threading
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

LEAKS = ("Graph execution error", "Detected at node", "[[", "{{", "Op:", "node ", "Traceback", "File \"")
BATCH_DELAY_MS = 100  # wide enough that requests sent together share one batch


def _build_models(base: Path) -> None:
    import tensorflow as tf

    class JpegNet(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.names = tf.constant(["red", "green", "blue"])

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):  # type: ignore[no-untyped-def]
            def one(b):  # type: ignore[no-untyped-def]
                img = tf.io.decode_jpeg(b, channels=3)
                img = tf.image.resize(tf.cast(img, tf.float32) / 255.0, [8, 8])
                return tf.reduce_mean(img, axis=[0, 1])

            shares = tf.map_fn(one, image_bytes, fn_output_signature=tf.float32)
            probs = tf.nn.softmax(shares * 10.0)
            return {"probabilities": probs, "thumb_bytes": image_bytes, "label": tf.gather(self.names, tf.argmax(probs, axis=1))}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def echo(self, text):  # type: ignore[no-untyped-def]
            return {"text_bytes": text, "length": tf.strings.length(text)}

    class Affine(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.constant(np.arange(8, dtype=np.float32).reshape(4, 2) / 10)
            self.b = tf.constant(np.array([0.5, -0.5], np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):  # type: ignore[no-untyped-def]
            return {"y": tf.matmul(x, self.w) - self.b}

    jpeg = JpegNet()
    tf.saved_model.save(jpeg, str(base / "jpegnet" / "1"), signatures={"serving_default": jpeg.serve, "echo": jpeg.echo})
    affine = Affine()
    tf.saved_model.save(affine, str(base / "affine" / "1"), signatures={"serving_default": affine.serve})


def _jpegs() -> list[bytes]:
    """Real photos (scikit-learn's sample images) and crops of them, as JPEG files made by Pillow."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    out = []
    for photo in load_sample_images().images:
        for top, left in ((0, 0), (200, 300), (100, 0), (0, 400)):
            buf = io.BytesIO()
            Image.fromarray(photo[top : top + 200, left : left + 240]).save(buf, format="JPEG", quality=90)
            out.append(buf.getvalue())
    return out


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compat-bytes")
    _build_models(root / "build" / "tfserving")
    return root


@pytest.fixture(scope="module")
def server(build: Path):  # type: ignore[no-untyped-def]
    from conftest import group_members, stack_settings
    from twinserve import stack as native

    settings = stack_settings(build / "run", build / "build", models="jpegnet,affine", tf_backend="compat", batch_size=8, batch_delay_ms=BATCH_DELAY_MS)
    started = native.up(settings, ("tfserving",))
    pgids = [svc.pgid for svc in started.values()]
    try:
        yield {"rest": f"http://127.0.0.1:{settings.tfserving_rest_port}", "grpc": f"127.0.0.1:{settings.tfserving_grpc_port}"}
    finally:
        native.down(settings)
        leftover = group_members(pgids)
        assert not leftover, f"processes left behind after down: {leftover}"


@pytest.fixture(scope="module")
def images() -> dict:
    return {"jpegs": _jpegs()}


@pytest.fixture(scope="module")
def expected(build: Path, images: dict) -> np.ndarray:
    """What the SavedModel itself answers for the JPEGs (run in this process, unbatched)."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(build / "build" / "tfserving" / "jpegnet" / "1")).signatures["serving_default"]
    probs = fn(image_bytes=tf.constant(np.array(images["jpegs"], dtype=object)))["probabilities"].numpy()
    # distinct answers per image, so that an answer given to the wrong request is noticed
    assert min(np.abs(probs[i] - probs[j]).max() for i in range(len(probs)) for j in range(i)) > 1e-3
    return probs


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def predict(server: dict, body: dict | bytes, model: str = "jpegnet", client: httpx.Client | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return (client or httpx).post(f"{server['rest']}/v1/models/{model}:predict", content=content, timeout=60)


def assert_clean(message: str) -> None:
    leaked = [m for m in LEAKS if m in message]
    assert not leaked, f"graph internals {leaked} in the error: {message!r}"
    assert "\n" not in message, message


def label_of(probs: np.ndarray) -> str:
    return ["red", "green", "blue"][int(np.argmax(probs))]


def test_rest_row_format_with_b64(server: dict, images: dict, expected: np.ndarray) -> None:
    jpegs = images["jpegs"][:3]
    for body in ({"instances": [b64(j) for j in jpegs]}, {"instances": [{"image_bytes": b64(j)} for j in jpegs]}):
        r = predict(server, body)
        assert r.status_code == 200, r.text
        rows = r.json()["predictions"]
        assert len(rows) == 3
        for j, row, want in zip(jpegs, rows, expected[:3], strict=True):
            assert set(row) == {"probabilities", "thumb_bytes", "label"}
            assert np.abs(np.asarray(row["probabilities"]) - want).max() <= 1e-5
            # a DT_STRING output named *_bytes comes back as {"b64": ...}, the bytes unchanged
            assert row["thumb_bytes"] == b64(j)
            # any other DT_STRING output as a plain string
            assert row["label"] == label_of(want)


def test_rest_columnar_format_with_b64(server: dict, images: dict, expected: np.ndarray) -> None:
    jpegs = images["jpegs"][2:5]
    for body in ({"inputs": {"image_bytes": [b64(j) for j in jpegs]}}, {"inputs": [b64(j) for j in jpegs]}):
        r = predict(server, body)
        assert r.status_code == 200, r.text
        out = r.json()["outputs"]
        assert np.abs(np.asarray(out["probabilities"]) - expected[2:5]).max() <= 1e-5
        assert out["thumb_bytes"] == [b64(j) for j in jpegs]
        assert out["label"] == [label_of(p) for p in expected[2:5]]


def test_rest_plain_json_string_is_its_utf8_bytes(server: dict) -> None:
    text = "héllo, wörld ✓"
    r = predict(server, {"signature_name": "echo", "instances": [text, {"b64": base64.b64encode(b"\x00\xffraw").decode()}]})
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    assert rows[0] == {"text_bytes": b64(text.encode("utf-8")), "length": len(text.encode("utf-8"))}
    assert rows[1] == {"text_bytes": b64(b"\x00\xffraw"), "length": 5}


@pytest.mark.parametrize(
    "value",
    [{"b64": "this is not base64!"}, {"b64": "QUJD="}, {"b64": "QUJDR"}, {"b64": "QUJD", "extra": 1}, {"b64": 12}],
    ids=["bad-characters", "wrong-padding", "dangling-character", "extra-key", "not-a-string"],
)
def test_bad_base64_is_a_400_naming_the_input(server: dict, images: dict, value: dict) -> None:
    for body in ({"instances": [b64(images["jpegs"][0]), value]}, {"inputs": {"image_bytes": [value]}}):
        r = predict(server, body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert "image_bytes" in error and "base64" in error, error
        assert_clean(error)


def test_a_non_image_is_a_400_with_a_clean_message(server: dict, images: dict) -> None:
    for value in ("this is not a JPEG", b64(bytes(range(256)) * 4)):
        r = predict(server, {"instances": [value]})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert "Unknown image file format" in error and "image_bytes" in error and "jpegnet" in error, error
        assert_clean(error)
    r = predict(server, {"instances": [1.5]})  # not a string at all: refused before the graph
    assert r.status_code == 400 and "DT_STRING" in r.json()["error"], r.text


def test_one_bad_request_does_not_fail_its_batch(server: dict, images: dict, expected: np.ndarray) -> None:
    """Requests sent together are run as one batch; the non-image makes the batched run fail, and
    every other request must still get its own answer (the bad one alone a 400)."""
    jpegs = images["jpegs"]
    bad_at = 3
    n = 8
    for round_ in range(3):
        barrier = threading.Barrier(n)

        def call(i: int, barrier: threading.Barrier = barrier) -> tuple[int, httpx.Response]:
            value = {"b64": base64.b64encode(b"definitely not a jpeg").decode()} if i == bad_at else b64(jpegs[i % len(jpegs)])
            with httpx.Client() as client:
                barrier.wait(timeout=30)
                return i, predict(server, {"instances": [value]}, client=client)

        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            answers = dict(pool.map(call, range(n)))
        for i, r in answers.items():
            if i == bad_at:
                assert r.status_code == 400, r.text
                assert "Unknown image file format" in r.json()["error"]
                assert_clean(r.json()["error"])
            else:
                assert r.status_code == 200, f"round {round_}, request {i}: {r.status_code} {r.text}"
                row = r.json()["predictions"][0]
                assert np.abs(np.asarray(row["probabilities"]) - expected[i % len(jpegs)]).max() <= 1e-5
                assert row["thumb_bytes"] == b64(jpegs[i % len(jpegs)])


def _stub(server: dict):  # type: ignore[no-untyped-def]
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(server["grpc"])
    return channel, prediction_service_pb2_grpc.PredictionServiceStub(channel)


def test_grpc_predict_with_string_val(server: dict, images: dict, expected: np.ndarray) -> None:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    jpegs = images["jpegs"][:2]
    channel, stub = _stub(server)
    with channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "jpegnet"
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(jpegs, dtype=tf.string))
        assert list(request.inputs["image_bytes"].string_val) == jpegs
        response = stub.Predict(request, timeout=60)
        assert np.abs(tf.make_ndarray(response.outputs["probabilities"]) - expected[:2]).max() <= 1e-5
        thumbs = response.outputs["thumb_bytes"]
        assert thumbs.dtype == tf.string.as_datatype_enum and list(thumbs.string_val) == jpegs
        assert list(response.outputs["label"].string_val) == [label_of(p).encode() for p in expected[:2]]

        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([jpegs[0], b"not an image"], dtype=tf.string))
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(request, timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert "Unknown image file format" in err.value.details() and "image_bytes" in err.value.details()
        assert_clean(err.value.details())

        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([1.0, 2.0], dtype=tf.float32))
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(request, timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "image_bytes" in err.value.details() and "DT_STRING" in err.value.details(), err.value.details()


def test_grpc_numeric_wrong_shape_is_invalid_argument(server: dict) -> None:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    channel, stub = _stub(server)
    with channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "affine"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
        y = tf.make_ndarray(stub.Predict(request, timeout=60).outputs["y"])
        assert np.abs(y - (x @ (np.arange(8, dtype=np.float32).reshape(4, 2) / 10) - [0.5, -0.5])).max() <= 1e-5

        for bad in (np.ones((2, 3), np.float32), np.ones((4,), np.float32), np.ones((1, 4, 1), np.float32)):
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(bad))
            with pytest.raises(grpc.RpcError) as err:
                stub.Predict(request, timeout=60)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad.shape, err.value.code(), err.value.details())
            assert "'x'" in err.value.details() and "shape" in err.value.details(), err.value.details()
            assert_clean(err.value.details())

        request.inputs["x"].CopyFrom(tf.make_tensor_proto([b"a", b"b"], dtype=tf.string))
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(request, timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "DT_FLOAT" in err.value.details(), err.value.details()

        request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
        request.output_filter.append("nope")
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(request, timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "nope" in err.value.details()
