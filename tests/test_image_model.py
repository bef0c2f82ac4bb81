"""The image model fed JPEG bytes the way each project's example does: raw bytes to TorchServe,
{"b64": ...} to TF Serving, both forms (and V2 BYTES) to the gateway; the same answers from both
stacks; bytes that are no image, or an image too large, refused cleanly without a worker restart."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from models.samples import jpeg_photos

MODEL = "mobilenet"
BACKENDS = ("torchserve", "tfserving")


@pytest.fixture(scope="module")
def photos(build_dir: Path) -> tuple[list[bytes], np.ndarray]:
    """Four real photos (two bundled, two varied) and the SavedModel's own answer for them, in process."""
    from models.export import Artifacts, load_savedmodel
    from models.spec import SPECS

    images = list(jpeg_photos(20261125)[:4])
    spec = SPECS[MODEL]
    expected = load_savedmodel(Artifacts(build_dir, MODEL).savedmodel, spec)(np.array(images, dtype=object))
    return images, expected


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_gateway_takes_b64_rows_raw_bytes_and_v2_bytes(urls: dict, photos: tuple, backend: str) -> None:
    images, expected = photos
    g = urls["gateway"]
    r = httpx.post(f"{g}/v1/models/{MODEL}:predict", params={"backend": backend}, json={"instances": [b64(i) for i in images]}, timeout=60)
    assert r.status_code == 200 and r.headers["x-backend"] == backend, r.text
    got = np.asarray(r.json()["predictions"])
    assert got.shape == (4, 1000)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert (got.argmax(-1) == expected.argmax(-1)).all()

    r = httpx.post(f"{g}/v1/models/{MODEL}:predict", params={"backend": backend}, content=images[0], headers={"Content-Type": "image/jpeg"}, timeout=60)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], expected[:1], atol=1e-4)

    body = {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [2], "data": [base64.b64encode(i).decode() for i in images[:2]]}]}
    r = httpx.post(f"{g}/v2/models/{MODEL}/infer", params={"backend": backend}, json=body, timeout=60)
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["shape"] == [2, 1000] and out["datatype"] == "FP32"
    np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), expected[:2], atol=1e-4)


def test_each_stack_takes_its_own_projects_convention(urls: dict, photos: tuple) -> None:
    """TorchServe: the image as the raw body (its image classifier's convention); TF Serving:
    {"instances": [{"b64": ...}]} decoded inside the SavedModel."""
    images, expected = photos
    r = httpx.post(f"{urls['torchserve']}/predictions/{MODEL}", content=images[1], timeout=60)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], expected[1:2], atol=1e-4)
    r = httpx.post(f"{urls['tfserving']}/v1/models/{MODEL}:predict", json={"instances": [b64(images[1])]}, timeout=60)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], expected[1:2], atol=1e-4)


def test_compare_agrees_on_the_photos(urls: dict, photos: tuple) -> None:
    images, _ = photos
    cmp = httpx.post(f"{urls['gateway']}/v1/models/{MODEL}:compare", json={"instances": [b64(i) for i in images]}, timeout=60).json()
    assert cmp["max_abs_diff"] <= 1e-4 and cmp["classes_agree"] is True


def png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, format="PNG")  # compresses to a few KB: only its header is big
    return buf.getvalue()


@pytest.mark.parametrize(
    "body, status, kind",
    [
        ({"instances": [b64(b"this is not an image")]}, 400, "invalid_image"),
        ({"instances": [{"b64": "%%% not base64"}]}, 400, "invalid_base64"),
        ({"instances": [[1.0, 2.0]]}, 400, "invalid_dtype"),
        ({"instances": [b64(png(5000, 4000))]}, 413, "image_too_large"),
    ],
)
def test_the_gateway_refuses_bad_images_before_any_stack(urls: dict, body: dict, status: int, kind: str) -> None:
    r = httpx.post(f"{urls['gateway']}/v1/models/{MODEL}:predict", json=body, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()
    assert error["type"] == kind and "image_bytes" in error["error"]


def test_oversized_bytes_are_413_before_decoding(urls: dict) -> None:
    big = b"\xff\xd8" + bytes(9 * 1024 * 1024)  # over the input's max_bytes (8 MiB)
    r = httpx.post(f"{urls['gateway']}/v1/models/{MODEL}:predict", content=big, headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert r.status_code == 413, r.text


def worker_pids(urls: dict) -> list[int]:
    workers = httpx.get(f"{urls['management']}/models/{MODEL}", timeout=10).json()[0]["workers"]
    return sorted(int(w["pid"]) for w in workers)


def test_the_stacks_refuse_a_non_image_with_a_4xx_and_serve_its_neighbours(urls: dict, photos: tuple) -> None:
    """Straight to each stack, eight at once so they share server-side batches: the non-image gets a
    clean 400, every photo its own answer, and TorchServe's worker is the same process after."""
    images, expected = photos
    before = worker_pids(urls)
    sends = [(i % 4, images[i % 4]) for i in range(7)] + [(-1, b"GIF89a but not really")]
    ts = f"{urls['torchserve']}/predictions/{MODEL}"
    tf = f"{urls['tfserving']}/v1/models/{MODEL}:predict"

    def one(stack: str, index: int, data: bytes) -> tuple[int, int, dict]:
        if stack == "torchserve":
            r = httpx.post(ts, content=data, timeout=60)
        else:
            r = httpx.post(tf, json={"instances": [b64(data)]}, timeout=60)
        return index, r.status_code, r.json()

    for stack in BACKENDS:
        with ThreadPoolExecutor(len(sends)) as pool:
            results = list(pool.map(lambda s: one(stack, *s), sends))
        for index, status, body in results:
            if index < 0:
                assert status == 400, (stack, body)
                assert "image" in body["error"].lower() and "Traceback" not in body["error"] and "node" not in body["error"], body
            else:
                assert status == 200, (stack, body)
                np.testing.assert_allclose(body["predictions"], expected[index : index + 1], atol=1e-4)
    assert worker_pids(urls) == before
