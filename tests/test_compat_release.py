"""The compatible server refuses a SavedModel written by a newer TensorFlow than its own (issue #20).

A copy of the exported `tabular` SavedModel has its writer rewritten (`meta_info_def.tensorflow_version`
"2.99.0", or an empty version with a GraphDef producer beyond the runtime's). As a version published
while the server runs, it is refused as TF Serving reports a version that failed to load: END with the
error in the model status (REST and gRPC), one line in the log, the serving version and the other
models untouched. At start-up, as TF Serving does, the server does not start and says which version
was refused and why. `twinserve export` records the writer and refuses a too-new imported SavedModel.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

FUTURE = "2.99.0"


def _rewrite_writer(path: Path, version: str | None = None, producer: int | None = None) -> None:
    """Change what saved_model.pb says about the TensorFlow that wrote it (the "serve" meta graph)."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = path / "saved_model.pb"
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString(pb.read_bytes())
    for mg in sm.meta_graphs:
        if "serve" in mg.meta_info_def.tags:
            if version is not None:
                mg.meta_info_def.tensorflow_version = version
            if producer is not None:
                mg.graph_def.versions.producer = producer
    pb.write_bytes(sm.SerializeToString())


@pytest.fixture(scope="module")
def copies(build_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The exported tabular SavedModel as written, and two too-new copies of it."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("tf-release")
    good = build_dir / "tfserving" / "tabular" / "1"
    future, producer = root / "future", root / "producer"
    shutil.copytree(good, future)
    _rewrite_writer(future, version=FUTURE)
    shutil.copytree(good, producer)
    _rewrite_writer(producer, version="", producer=tf.version.GRAPH_DEF_VERSION + 1)
    return {"root": root, "good": good, "future": future, "producer": producer}


def test_export_records_the_writing_tensorflow(build_dir: Path) -> None:
    import tensorflow as tf

    for name in ("tabular", "mobilenet"):
        parity = json.loads((build_dir / name / "parity.json").read_text())
        manifest = json.loads((build_dir / name / "manifest.json").read_text())
        assert parity["savedmodel_written_by"] == {"tensorflow": tf.__version__, "graph_def_producer": tf.version.GRAPH_DEF_VERSION}
        assert manifest["versions"]["savedmodel_tensorflow"] == tf.__version__
        assert manifest["parity"]["savedmodel_written_by"]["tensorflow"] == tf.__version__


def test_the_check_reads_the_writer_and_refuses_newer_ones(copies: dict[str, Path]) -> None:
    import tensorflow as tf

    from services.tfserving.compat.registry import SavedModelTooNew, check_writer, read_meta_graph

    check_writer("tabular", 1, read_meta_graph(copies["good"]))  # the project's own export loads
    check_writer("tabular", 1, read_meta_graph(copies["good"]), runtime="2.20.7")  # a patch release apart: same series
    with pytest.raises(SavedModelTooNew) as err:
        check_writer("tabular", 3, read_meta_graph(copies["future"]))
    message = str(err.value)
    assert "\n" not in message
    assert f"model 'tabular' version 3 refused: written by TensorFlow {FUTURE}, newer than this server's TensorFlow {tf.__version__}" in message
    assert "twinserve export" in message
    with pytest.raises(SavedModelTooNew, match=rf"GraphDef version {tf.version.GRAPH_DEF_VERSION + 1} .* newer than this server's"):
        check_writer("tabular", 1, read_meta_graph(copies["producer"]))
    # an older server refuses today's export: 2.20's SavedModel on a 2.19 runtime
    with pytest.raises(SavedModelTooNew, match=rf"written by TensorFlow {tf.__version__}, newer than this server's TensorFlow 2.19.0"):
        check_writer("tabular", 1, read_meta_graph(copies["good"]), runtime="2.19.0", graph_def_version=10**6)


def test_export_refuses_an_imported_savedmodel_from_a_newer_tensorflow(copies: dict[str, Path]) -> None:
    from models.export import ExportError, check_writer, savedmodel_writer

    writer = savedmodel_writer(copies["future"])
    assert writer["tensorflow"] == FUTURE
    with pytest.raises(ExportError, match=rf"written by TensorFlow {FUTURE}.*Save it again with TensorFlow"):
        check_writer("mine", writer)
    check_writer("mine", savedmodel_writer(copies["good"]))


@pytest.mark.parametrize("writer", ["2.20.0", "2.20.9", "2.21.0", "2.21.0-rc1", "2.21rc0", "v2.21.0", "3.0.0", "2.19.1", "", "nightly"])
def test_export_and_server_apply_one_rule(writer: str) -> None:
    """The rule is stated in models/ and in services/ (neither layer may import the other): both
    refuse exactly the same writers."""
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2

    from models.export import ExportError, check_writer as export_check
    from services.tfserving.compat.registry import SavedModelTooNew, check_writer as server_check

    meta_graph = meta_graph_pb2.MetaGraphDef()
    meta_graph.meta_info_def.tensorflow_version = writer
    meta_graph.graph_def.versions.producer = tf.version.GRAPH_DEF_VERSION
    verdicts = []
    for check, refused in ((lambda: export_check("m", {"tensorflow": writer, "graph_def_producer": tf.version.GRAPH_DEF_VERSION}), ExportError), (lambda: server_check("m", 1, meta_graph), SavedModelTooNew)):
        try:
            check()
            verdicts.append("loads")
        except refused:
            verdicts.append("refused")
    assert verdicts[0] == verdicts[1], (writer, verdicts)
    assert verdicts[0] == ("refused" if writer in ("2.21.0", "2.21.0-rc1", "2.21rc0", "v2.21.0", "3.0.0") else "loads")


def test_start_up_refuses_only_the_too_new_version_and_names_it(copies: dict[str, Path]) -> None:
    """Every configured model is tried; the server then exits, as TF Serving does, with one line per
    refused version (here without starting a process: the registry the server runs)."""
    from services.tfserving.compat.registry import ModelConfig, Registry

    base = copies["root"] / "startup"
    shutil.copytree(copies["good"], base / "tabular" / "1")
    shutil.copytree(copies["future"], base / "future" / "1")
    registry = Registry([ModelConfig("future", str(base / "future")), ModelConfig("tabular", str(base / "tabular"))])
    with pytest.raises(SystemExit) as err:
        registry.load_all()
    message = str(err.value.code)
    assert message.startswith("Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available")
    assert f"{{name: future version: 1}} due to error: model 'future' version 1 refused: written by TensorFlow {FUTURE}" in message
    assert list(registry.servables["tabular"]) == [1]  # the good model alongside loaded


@pytest.fixture(scope="module")
def server(copies: dict[str, Path]):  # type: ignore[no-untyped-def]
    """The compatible server, started by the project's launcher, serving `tabular` and `future` (both
    the good export as version 1)."""
    from conftest import group_members, stack_settings
    from twinserve import stack as native

    build = copies["root"] / "served"
    for name in ("tabular", "future"):
        shutil.copytree(copies["good"], build / "tfserving" / name / "1")
    settings = stack_settings(copies["root"] / "run", build, models="tabular,future", tf_backend="compat")
    started = native.up(settings, ("tfserving",))
    pgids = [svc.pgid for svc in started.values()]
    try:
        yield {
            "rest": f"http://127.0.0.1:{settings.tfserving_rest_port}",
            "grpc": f"127.0.0.1:{settings.tfserving_grpc_port}",
            "base": build / "tfserving",
            "log": Path(started["tfserving"].log),
        }
    finally:
        native.down(settings)
        leftover = group_members(pgids)
        assert not leftover, f"processes left behind after down: {leftover}"


def test_a_published_too_new_version_is_refused_and_the_rest_keeps_serving(server: dict, copies: dict[str, Path], samples: dict) -> None:
    import tensorflow as tf

    url = f"{server['rest']}/v1/models/future"
    staging = copies["root"] / "staging-2"
    shutil.copytree(copies["future"], staging)
    staging.rename(server["base"] / "future" / "2")  # appears whole, as a deploy tool would publish it

    deadline = time.monotonic() + 60
    while True:
        versions = {s["version"]: s for s in httpx.get(url, timeout=5).json()["model_version_status"]}
        if versions.get("2", {}).get("state") == "END":
            break
        assert time.monotonic() < deadline, f"version 2 was never reported: {versions}"
        time.sleep(0.2)
    assert versions["1"]["state"] == "AVAILABLE"
    error = versions["2"]["status"]
    assert error["error_code"] != "OK"
    expected = f"model 'future' version 2 refused: written by TensorFlow {FUTURE}, newer than this server's TensorFlow {tf.__version__}"
    assert error["error_message"].startswith(expected) and "`twinserve export`" in error["error_message"], error

    # version 1 goes on serving, and so does the other model
    x, want = samples["tabular"]
    body = orjson.dumps({"instances": x[:4]}, option=orjson.OPT_SERIALIZE_NUMPY)
    for name in ("future", "tabular"):
        r = httpx.post(f"{server['rest']}/v1/models/{name}:predict", content=body, timeout=30)
        assert r.status_code == 200, r.text
        assert np.abs(np.asarray(r.json()["predictions"]) - want[:4]).max() <= 1e-4
    assert httpx.get(f"{url}/metadata", timeout=5).json()["model_spec"]["version"] == "1"

    # gRPC's GetModelStatus lists the refused version the same way
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    with grpc.insecure_channel(server["grpc"]) as channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "future"
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
    states = {s.version: s for s in status.model_version_status}
    assert get_model_status_pb2.ModelVersionStatus.State.Name(states[1].state) == "AVAILABLE"
    assert get_model_status_pb2.ModelVersionStatus.State.Name(states[2].state) == "END"
    assert states[2].status.error_message.startswith(expected)

    # and the server's log says it once, on one line
    log = server["log"].read_text()
    assert log.count(f"future version 2 failed: {expected}") == 1, log[-2000:]


def test_a_server_started_on_a_too_new_savedmodel_says_why_it_did_not_start(copies: dict[str, Path]) -> None:
    from conftest import stack_settings
    from twinserve import stack as native
    from twinserve.supervisor import SupervisorError

    build = copies["root"] / "stale"
    shutil.copytree(copies["future"], build / "tfserving" / "tabular" / "1")
    settings = stack_settings(copies["root"] / "run-stale", build, models="tabular", tf_backend="compat")
    try:
        with pytest.raises(SupervisorError) as err:
            native.up(settings, ("tfserving",))
    finally:
        native.down(settings)
    message = str(err.value)
    assert "tfserving exited with code 1 while starting" in message, message
    assert f"{{name: tabular version: 1}} due to error: model 'tabular' version 1 refused: written by TensorFlow {FUTURE}" in message, message
    assert "Traceback" not in message, message
