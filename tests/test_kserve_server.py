"""KServe's model server running ONNX Runtime (services/kserve/), straight on its own ports.

A real server from .venv-kserve on free loopback ports, serving the ONNX export
(`models/build/onnx/<name>/model.onnx` + `spec.json`; KSERVE_TEST_ONNX_DIR points elsewhere), plus
two models this module makes itself: `pairwise`, a two-input two-output graph built with
onnx.helper (V1's object rows and named columns), and `ghost`, a spec without model.onnx (not
loaded; KServe's 404). Expected numbers come from the same model.onnx run in-process with
onnxruntime; images are decoded in-process with Pillow the way the server must.

The server is the module fixture `kserve_url` (the only one that starts anything).
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from twinserve.supervisor import free_port

ROOT = Path(__file__).resolve().parents[1]
KSERVE_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"
ONNX_DIR = Path(os.environ.get("KSERVE_TEST_ONNX_DIR", ROOT / "models" / "build" / "onnx"))
_LOGS: dict[str, Path] = {}  # server URL -> its log file


# ----------------------------------------------------------------------------------------------
# the server


def _pairwise(folder: Path) -> None:
    """features float32[4], tokens int64[3] -> doubled float32[4] (features * 2), total float32[] (sum of tokens)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["features", "two"], ["doubled"]),
            helper.make_node("Cast", ["tokens"], ["tokens_f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["tokens_f", "axes"], ["total"], keepdims=0),
        ],
        "pairwise",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4]), helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", 3])],
        [helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["N", 4]), helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]), helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "model.onnx"))
    spec = {
        "name": "pairwise",
        "inputs": [{"name": "features", "dtype": "float32", "shape": [4]}, {"name": "tokens", "dtype": "int64", "shape": [3]}],
        "outputs": [{"name": "doubled", "dtype": "float32", "shape": [4]}, {"name": "total", "dtype": "float32", "shape": []}],
        "max_batch": 8,
    }
    (folder / "spec.json").write_text(json.dumps(spec))


@pytest.fixture(scope="module")
def kserve_url(tmp_path_factory: pytest.TempPathFactory):
    if not KSERVE_PYTHON.exists():
        pytest.skip(f"{KSERVE_PYTHON} is missing: `make setup` makes the KServe venv")
    if not (ONNX_DIR / "tabular" / "model.onnx").exists():
        pytest.skip(f"no ONNX export at {ONNX_DIR} (tabular/model.onnx missing): export the models first")
    model_dir = tmp_path_factory.mktemp("onnx")
    exported = sorted(d.name for d in ONNX_DIR.iterdir() if (d / "model.onnx").exists() and (d / "spec.json").exists())
    for name in exported:
        (model_dir / name).symlink_to((ONNX_DIR / name).resolve())
    _pairwise(model_dir / "pairwise")
    (model_dir / "ghost").mkdir()
    (model_dir / "ghost" / "spec.json").write_text((ONNX_DIR / "tabular" / "spec.json").read_text())
    http_port, grpc_port = free_port(), free_port()
    log = model_dir / "server.log"
    cmd = [str(KSERVE_PYTHON), "-m", "services.kserve.server", "--model_dir", str(model_dir), "--models", ",".join([*exported, "pairwise", "ghost"]),
           "--http_port", str(http_port), "--grpc_port", str(grpc_port), "--host", "127.0.0.1", "--workers", "1", "--threads", "1"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the KServe server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if all(httpx.get(f"{url}/v2/models/{m}/ready", timeout=2).status_code == 200 for m in [*exported, "pairwise"]):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the KServe server was not ready within 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        _LOGS[url] = log
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def server_log(url: str) -> str:
    if url not in _LOGS:
        pytest.skip("the server's log is not at hand (a server this module did not start)")
    return _LOGS[url].read_text(errors="replace")


def served(url: str, model: str) -> None:
    if httpx.get(f"{url}/v2/models/{model}/ready", timeout=5).status_code != 200:
        pytest.skip(f"model {model!r} is not served (not in the ONNX export)")


# ----------------------------------------------------------------------------------------------
# helpers


def post(url: str, path: str, body: object = None, content: bytes | None = None, headers: dict | None = None) -> httpx.Response:
    if content is None:
        return httpx.post(f"{url}{path}", json=body, timeout=60)
    return httpx.post(f"{url}{path}", content=content, headers=headers or {"Content-Type": "application/json"}, timeout=60)


def reference(model: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(ONNX_DIR / model / "model.onnx"), sess_options=options, providers=["CPUExecutionProvider"])
    spec = json.loads((ONNX_DIR / model / "spec.json").read_text())
    return session.run([o["name"] for o in spec["outputs"]], feeds)


def tabular_rows(n: int = 8) -> np.ndarray:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer().data[:n].astype(np.float32)


def assert_error(r: httpx.Response, status: int, *words: str) -> str:
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert "Traceback" not in body["error"]
    for word in words:
        assert word.lower() in body["error"].lower(), (word, body["error"])
    return body["error"]


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


# ----------------------------------------------------------------------------------------------
# V1: TF Serving's JSON


def test_v1_rows_and_columns_give_the_models_numbers(kserve_url: str) -> None:
    x = tabular_rows()
    (expected,) = reference("tabular", {"features": x})
    rows = post(kserve_url, "/v1/models/tabular:predict", {"instances": x.tolist()})
    assert rows.status_code == 200, rows.text
    assert set(rows.json()) == {"predictions"}
    got = np.asarray(rows.json()["predictions"], dtype=np.float32)
    assert got.shape == expected.shape == (8, 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    for body in ({"inputs": x.tolist()}, {"inputs": {"features": x.tolist()}}, {"signature_name": "serving_default", "inputs": x.tolist()}):
        cols = post(kserve_url, "/v1/models/tabular:predict", body)
        assert cols.status_code == 200, cols.text
        assert set(cols.json()) == {"outputs"}
        np.testing.assert_allclose(np.asarray(cols.json()["outputs"], dtype=np.float32), expected, rtol=0, atol=1e-6)


def test_v1_digits_images_as_rows(kserve_url: str) -> None:
    served(kserve_url, "digits")
    from sklearn.datasets import load_digits

    x = load_digits().images[:5].astype(np.float32)
    (expected,) = reference("digits", {"pixels": x})
    r = post(kserve_url, "/v1/models/digits:predict", {"instances": x.tolist()})
    assert r.status_code == 200, r.text
    got = np.asarray(r.json()["predictions"], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert (got.argmax(1) == load_digits().target[:5]).mean() >= 0.8  # a trained model, not noise


def test_v1_several_inputs_and_outputs(kserve_url: str) -> None:
    served(kserve_url, "pairwise")  # made by this module's fixture
    features, tokens = [[1.0, 2.0, 3.0, 4.0], [0.5, 0.0, -1.0, 2.0]], [[1, 2, 3], [4, 5, 6]]
    rows = post(kserve_url, "/v1/models/pairwise:predict", {"instances": [{"features": f, "tokens": t} for f, t in zip(features, tokens)]})
    assert rows.status_code == 200, rows.text
    assert rows.json() == {"predictions": [{"doubled": [2.0, 4.0, 6.0, 8.0], "total": 6.0}, {"doubled": [1.0, 0.0, -2.0, 4.0], "total": 15.0}]}
    cols = post(kserve_url, "/v1/models/pairwise:predict", {"inputs": {"features": features, "tokens": tokens}})
    assert cols.status_code == 200, cols.text
    assert cols.json() == {"outputs": {"doubled": [[2.0, 4.0, 6.0, 8.0], [1.0, 0.0, -2.0, 4.0]], "total": [6.0, 15.0]}}


# ----------------------------------------------------------------------------------------------
# V2: KServe's InferRequest


def test_v2_infer_fp32(kserve_url: str) -> None:
    x = tabular_rows(3)
    (expected,) = reference("tabular", {"features": x})
    body = {"id": "req-1", "inputs": [{"name": "features", "datatype": "FP32", "shape": [3, 30], "data": x.reshape(-1).tolist()}]}
    r = post(kserve_url, "/v2/models/tabular/infer", body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model_name"] == "tabular" and answer["id"] == "req-1"
    (out,) = answer["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("probabilities", "FP32", [3, 2])
    np.testing.assert_allclose(np.asarray(out["data"], dtype=np.float32).reshape(3, 2), expected, rtol=0, atol=1e-6)
    nested = post(kserve_url, "/v2/models/tabular/infer", {"inputs": [{"name": "features", "datatype": "FP32", "shape": [3, 30], "data": x.tolist()}]})
    assert nested.status_code == 200, nested.text
    np.testing.assert_allclose(np.asarray(nested.json()["outputs"][0]["data"], dtype=np.float32).reshape(3, 2), expected, rtol=0, atol=1e-6)


def test_v2_several_inputs_every_output_named(kserve_url: str) -> None:
    served(kserve_url, "pairwise")  # made by this module's fixture
    body = {"inputs": [
        {"name": "tokens", "datatype": "INT64", "shape": [1, 3], "data": [1, 2, 3]},
        {"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
    ]}
    r = post(kserve_url, "/v2/models/pairwise/infer", body)
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["doubled"]["datatype"] == "FP32" and outputs["doubled"]["shape"] == [1, 4] and outputs["doubled"]["data"] == [2.0, 4.0, 6.0, 8.0]
    assert outputs["total"]["shape"] == [1] and outputs["total"]["data"] == [6.0]
    only = post(kserve_url, "/v2/models/pairwise/infer", {**body, "outputs": [{"name": "total"}]})
    assert [o["name"] for o in only.json()["outputs"]] == ["total"]
    assert_error(post(kserve_url, "/v2/models/pairwise/infer", {**body, "outputs": [{"name": "nope"}]}), 400, "unknown output", "nope")


def test_v2_grpc_infer(kserve_url: str) -> None:
    """V2 over gRPC on the server's gRPC port (found in its log): typed contents and raw contents."""
    import grpc

    log = server_log(kserve_url)
    port = int(log.split("Starting gRPC server on 127.0.0.1:")[1].split()[0])
    from tritonclient.grpc import (  # the V2 stubs that ship with tritonclient
        service_pb2 as pb,
    )
    from tritonclient.grpc import service_pb2_grpc as pbg

    x = tabular_rows(2)
    (expected,) = reference("tabular", {"features": x})
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pbg.GRPCInferenceServiceStub(channel)
        assert stub.ModelReady(pb.ModelReadyRequest(name="tabular")).ready
        tensor = pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=[2, 30])
        typed = stub.ModelInfer(pb.ModelInferRequest(model_name="tabular", inputs=[pb.ModelInferRequest.InferInputTensor(
            name="features", datatype="FP32", shape=[2, 30], contents=pb.InferTensorContents(fp32_contents=x.reshape(-1).tolist()))]))
        np.testing.assert_allclose(np.asarray(typed.outputs[0].contents.fp32_contents, dtype=np.float32).reshape(2, 2), expected, rtol=0, atol=1e-6)
        raw = stub.ModelInfer(pb.ModelInferRequest(model_name="tabular", inputs=[tensor], raw_input_contents=[x.tobytes()]))
        np.testing.assert_allclose(np.frombuffer(raw.raw_output_contents[0], dtype=np.float32).reshape(2, 2), expected, rtol=0, atol=1e-6)
        with pytest.raises(grpc.RpcError) as bad:
            stub.ModelInfer(pb.ModelInferRequest(model_name="tabular", inputs=[tensor], raw_input_contents=[x.tobytes()[:-4]]))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as missing:
            stub.ModelInfer(pb.ModelInferRequest(model_name="nope", inputs=[tensor], raw_input_contents=[x.tobytes()]))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


# ----------------------------------------------------------------------------------------------
# bad input: 400 with a message naming the problem


ROW = [1.0] * 30


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"instances": [ROW[:29]]}, ("features", "shape", "[30]", "[29]")),
        ({"instances": [["a"] * 30]}, ("features", "dtype", "strings")),
        ({"inputs": {"feature": [ROW]}}, ("unknown input", "feature")),
        ({"instances": [{"other": ROW}]}, ("missing input", "features")),
        ({"instances": []}, ("empty",)),
        ({"inputs": []}, ("empty",)),
        ({"instances": [ROW] * 65}, ("65", "limit", "64")),
        ({"instances": [ROW, ROW[:3]]}, ("ragged",)),
        ({"instances": [ROW], "inputs": [ROW]}, ("exactly one of", "instances", "inputs")),
        ({"rows": [ROW]}, ("instances", "inputs")),
        ({"instances": [[1e39] + ROW[1:]]}, ("non-finite",)),
        ({"signature_name": "other", "instances": [ROW]}, ("signature_name", "other")),
        ([ROW], ("json object",)),
    ],
)
def test_v1_bad_input_is_a_400_naming_the_problem(kserve_url: str, body: object, words: tuple) -> None:
    assert_error(post(kserve_url, "/v1/models/tabular:predict", body), 400, *words)


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_v1_non_finite_tokens_are_refused_as_such(kserve_url: str, token: bytes) -> None:
    body = b'{"instances": [[' + token + b"," + b",".join([b"1.0"] * 29) + b"]]}"
    message = assert_error(post(kserve_url, "/v1/models/tabular:predict", content=body), 400, "features", "contains non-finite values")
    assert token.decode().lstrip("-") in message


def test_v1_body_that_is_not_json(kserve_url: str) -> None:
    assert_error(post(kserve_url, "/v1/models/tabular:predict", content=b"{not json"), 400, "not valid json")
    assert_error(post(kserve_url, "/v1/models/tabular:predict", content=b"hello", headers={"Content-Type": "text/plain"}), 400, "not valid json")


def test_v1_wrong_integer_input(kserve_url: str) -> None:
    served(kserve_url, "pairwise")  # made by this module's fixture
    assert_error(post(kserve_url, "/v1/models/pairwise:predict", {"inputs": {"features": [[1, 2, 3, 4]], "tokens": [[1.5, 2, 3]]}}), 400, "tokens", "int64", "floats")
    assert_error(post(kserve_url, "/v1/models/pairwise:predict", {"instances": [[1, 2, 3, 4]]}), 400, "2 inputs")
    assert_error(post(kserve_url, "/v1/models/pairwise:predict", {"inputs": {"features": [[1, 2, 3, 4]] * 2, "tokens": [[1, 2, 3]]}}), 400, "same number of instances")


def v2(name: str = "features", datatype: str = "FP32", shape: list | None = None, data: list | None = None) -> dict:
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape or [1, 30], "data": data if data is not None else ROW}]}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (v2(shape=[1, 29], data=ROW[:29]), ("features", "shape", "[30]", "[1, 29]")),
        (v2(datatype="INT64", data=[1] * 30), ("features", "datatype", "FP32", "INT64")),
        (v2(data=["a"] * 30), ("features", "dtype", "strings")),
        (v2(name="x"), ("unknown input", "'x'")),
        ({"inputs": []}, ("missing input", "features")),
        (v2(shape=[0, 30], data=[]), ("empty",)),
        (v2(shape=[65, 30], data=ROW * 65), ("65", "limit", "64")),
        (v2(shape=[2, 30]), ("30 values", "60")),
        ({"inputs": [{"name": "features"}]}, ("unrecognized request format",)),
    ],
)
def test_v2_bad_input_is_a_400_naming_the_problem(kserve_url: str, body: dict, words: tuple) -> None:
    assert_error(post(kserve_url, "/v2/models/tabular/infer", body), 400, *words)


def test_v2_non_finite_and_not_json(kserve_url: str) -> None:
    body = b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 30], "data": [NaN' + b", 1.0" * 29 + b"]}]}"
    assert_error(post(kserve_url, "/v2/models/tabular/infer", content=body), 400, "features", "contains non-finite values", "NaN")
    assert_error(post(kserve_url, "/v2/models/tabular/infer", content=b"{not json"), 400, "not valid json")


def test_unknown_model_is_kserves_404(kserve_url: str) -> None:
    assert_error(post(kserve_url, "/v1/models/nope:predict", {"instances": [ROW]}), 404, "nope", "does not exist")
    assert_error(post(kserve_url, "/v2/models/nope/infer", v2()), 404, "nope")
    for path in ("/v1/models/nope", "/v2/models/nope", "/v2/models/nope/ready"):
        assert httpx.get(f"{kserve_url}{path}", timeout=10).status_code == 404, path


def test_a_listed_model_without_model_onnx_is_not_loaded(kserve_url: str) -> None:
    for path in ("/v1/models/ghost", "/v2/models/ghost/ready", "/v2/models/ghost"):
        assert_error(httpx.get(f"{kserve_url}{path}", timeout=10), 404, "ghost")
    assert "model ghost: not loaded" in server_log(kserve_url)
    assert "ghost" not in httpx.get(f"{kserve_url}/v2/models", timeout=10).json()["models"]


# ----------------------------------------------------------------------------------------------
# health, metadata, metrics, logs


def test_readiness_and_metadata(kserve_url: str) -> None:
    get = lambda path: httpx.get(f"{kserve_url}{path}", timeout=10)
    assert get("/v2/health/live").json() == {"live": True}
    assert get("/v2/health/ready").json() == {"ready": True}
    assert get("/v2/models/tabular/ready").json() == {"name": "tabular", "ready": True}
    assert get("/v1/models/tabular").json() == {"name": "tabular", "ready": True}
    meta = get("/v2/models/tabular").json()
    assert meta["name"] == "tabular" and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 30]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]
    if get("/v2/models/pairwise/ready").status_code != 200:
        return
    pair = get("/v2/models/pairwise").json()
    assert pair["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}, {"name": "tokens", "datatype": "INT64", "shape": [-1, 3]}]
    assert pair["outputs"][1] == {"name": "total", "datatype": "FP32", "shape": [-1]}


def test_metrics_count_requests_and_hold_no_payload(kserve_url: str) -> None:
    marker = 1234.5678
    assert post(kserve_url, "/v1/models/tabular:predict", {"instances": [[marker] + ROW[1:]]}).status_code == 200
    metrics = httpx.get(f"{kserve_url}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert 'request_predict_seconds_count{model_name="tabular"}' in metrics.text
    assert "1234.5678" not in metrics.text
    log = server_log(kserve_url)
    assert "1234.5678" not in log  # neither the access log nor anything else writes payloads
    assert "POST /v1/models/tabular:predict" in log  # the access log is on
    assert "Traceback" not in log  # bad input never logs a traceback


def test_the_server_binds_loopback_only(kserve_url: str) -> None:
    assert "Uvicorn running on http://127.0.0.1:" in server_log(kserve_url)
    assert "Starting gRPC server on 127.0.0.1:" in server_log(kserve_url)


# ----------------------------------------------------------------------------------------------
# the image model: encoded images in, decoded with Pillow, the graph once per image


def sample_images() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


def decoded(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)


def mobilenet_reference(images: list[np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(ONNX_DIR / "mobilenet" / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(["probabilities"], {name: p[None]})[0] for p in images])


def test_mobilenet_real_photos(kserve_url: str) -> None:
    served(kserve_url, "mobilenet")
    photos = [jpeg(img) for img in sample_images()]
    expected = mobilenet_reference([decoded(p) for p in photos])
    r = post(kserve_url, "/v1/models/mobilenet:predict", {"instances": [b64(p) for p in photos]})
    assert r.status_code == 200, r.text
    got = np.asarray(r.json()["predictions"], dtype=np.float32)
    assert got.shape == (2, 1000)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert abs(float(got[0].sum()) - 1.0) < 1e-3
    cols = post(kserve_url, "/v1/models/mobilenet:predict", {"inputs": {"image_bytes": [b64(photos[1])]}})
    np.testing.assert_allclose(np.asarray(cols.json()["outputs"], dtype=np.float32), expected[1:], rtol=0, atol=1e-6)
    body = {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": [b64(photos[0])]}]}
    v2r = post(kserve_url, "/v2/models/mobilenet/infer", body)
    assert v2r.status_code == 200, v2r.text
    np.testing.assert_allclose(np.asarray(v2r.json()["outputs"][0]["data"], dtype=np.float32), expected[0], rtol=0, atol=1e-6)


def test_mobilenet_refuses_what_the_other_stacks_refuse(kserve_url: str) -> None:
    served(kserve_url, "mobilenet")
    from PIL import Image

    photo = jpeg(sample_images()[0])
    path = "/v1/models/mobilenet:predict"
    assert_error(post(kserve_url, path, {"instances": [b64(photo), b64(photo[: len(photo) // 3])]}), 400, "image_bytes", "not a decodable image", "instance 1")
    assert_error(post(kserve_url, path, {"instances": [b64(b"definitely not an image")]}), 400, "image_bytes", "not a decodable image", "instance 0")
    bmp = io.BytesIO()
    Image.new("RGB", (8, 8)).save(bmp, "BMP")
    assert_error(post(kserve_url, path, {"instances": [b64(bmp.getvalue())]}), 400, "not a decodable image", "JPEG, PNG or GIF")
    gif = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(gif, "GIF", save_all=True, append_images=[Image.new("RGB", (8, 8), (0, 0, 255))])
    assert Image.open(io.BytesIO(gif.getvalue())).n_frames == 2
    assert_error(post(kserve_url, path, {"instances": [b64(gif.getvalue())]}), 400, "animated GIF", "instance 0")
    big = io.BytesIO()
    Image.new("L", (4097, 4097)).save(big, "PNG")
    assert_error(post(kserve_url, path, {"instances": [b64(big.getvalue())]}), 400, "too large an image", "4097x4097")
    assert_error(post(kserve_url, path, {"instances": [{"b64": "%%%"}]}), 400, "image_bytes", "base64")
    assert_error(post(kserve_url, path, {"instances": [{"b64": ""}]}), 400, "image_bytes", "not a decodable image")


def test_mobilenet_16_bit_grayscale_keeps_the_high_byte(kserve_url: str) -> None:
    served(kserve_url, "mobilenet")
    from PIL import Image

    gray = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 21).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, "PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")
    high = np.repeat((gray >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    r = post(kserve_url, "/v1/models/mobilenet:predict", {"instances": [b64(buf.getvalue())]})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.asarray(r.json()["predictions"], dtype=np.float32), mobilenet_reference([high]), rtol=0, atol=1e-6)
