"""One `kserve.Model` per served model: an ONNX Runtime session on `<model_dir>/<name>/model.onnx`.

KServe calls `preprocess -> predict -> postprocess` for every request, V1 and V2 alike (and times each
stage in its Prometheus histograms `request_{preprocess,predict,postprocess}_seconds`):

- preprocess: decodes and checks the payload. A V1 request arrives as the decoded JSON body (a dict;
  bytes when it was sent without a JSON content type), a V2 request (REST or gRPC) as KServe's
  `InferRequest`. Both become the same named input batches (codec.py); anything wrong raises
  `InvalidInput` (400 / INVALID_ARGUMENT).
- predict: runs the graph in a thread pool (ONNX Runtime releases the GIL; the event loop keeps
  answering health checks and other requests meanwhile). An image model decodes its images there too.
- postprocess: TF Serving's JSON for V1 (`predictions` / `outputs`), an `InferResponse` for V2.

The image model (a spec with one "bytes" input whose graph takes one uint8 [1, H, W, 3] input) is
fed one decoded RGB image per run; the outputs are concatenated in order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
from kserve import Model
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from services.kserve.codec import Spec, decode_image, encode_v1, parse_v1, parse_v2

log = logging.getLogger("kserve")  # KServe's own logger: its handlers and format

# ONNX Runtime's type strings -> spec.json dtypes
ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "bytes",
}

_executor: concurrent.futures.ThreadPoolExecutor | None = None


def executor(runs: int) -> concurrent.futures.ThreadPoolExecutor:
    """The process's inference threads (made on first use, so each uvicorn worker process has its own).
    `runs` (--parallel_runs) of them, 1 by default: the other stacks run one inference at a time per
    model (one TorchServe worker, one TF batch thread), and a comparison gives each the same engine
    concurrency; more threads let this stack use more cores than they do."""
    global _executor
    if _executor is None:
        _executor = concurrent.futures.ThreadPoolExecutor(max_workers=runs, thread_name_prefix="onnx")
    return _executor


class ModelMissing(Exception):
    """The folder has no model.onnx: the export could not make one."""


@dataclass
class Batch:
    tensors: dict[str, Any]
    kind: str  # "rows" (V1 instances), "columns" (V1 inputs), "v2"
    request: InferRequest | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


class OnnxModel(Model):
    def __init__(self, name: str, model_dir: str, threads: int = 1, parallel_runs: int = 1) -> None:
        super().__init__(name)
        self.folder = os.path.join(model_dir, name)
        self.threads = threads
        self.parallel_runs = parallel_runs
        self.spec: Spec | None = None
        self.session: ort.InferenceSession | None = None
        self.image = False  # one bytes input decoded to uint8 [1, H, W, 3] pixels
        self.output_names: list[str] = []

    # ------------------------------------------------------------------------------------------
    # loading

    def load(self) -> bool:
        path = os.path.join(self.folder, "model.onnx")
        if not os.path.isfile(path):
            raise ModelMissing(f"{path} does not exist")
        spec = Spec.load(os.path.join(self.folder, "spec.json"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only
        session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self.image = self._check_graph(spec, session)
        self.spec, self.session = spec, session
        self.output_names = [t.name for t in spec.outputs]
        self.ready = True
        return self.ready

    @staticmethod
    def _check_graph(spec: Spec, session: ort.InferenceSession) -> bool:
        """The graph against the spec (names and dtypes); True for an image model."""
        graph_in = {i.name: i for i in session.get_inputs()}
        graph_out = {o.name for o in session.get_outputs()}
        missing_out = [t.name for t in spec.outputs if t.name not in graph_out]
        if missing_out:
            raise ValueError(f"the graph has no output {missing_out[0]!r} (it has {sorted(graph_out)})")
        if len(spec.inputs) == 1 and spec.inputs[0].is_bytes and len(graph_in) == 1:
            only = next(iter(graph_in.values()))
            if only.type == "tensor(uint8)" and len(only.shape) == 4:
                return True  # encoded images in, decoded pixels to the graph
        for t in spec.inputs:
            g = graph_in.get(t.name)
            if g is None:
                raise ValueError(f"the graph has no input {t.name!r} (it has {sorted(graph_in)})")
            if ORT_TYPES.get(g.type) != t.dtype:
                raise ValueError(f"graph input {t.name!r} is {g.type}; the spec says {t.dtype}")
        extra = sorted(set(graph_in) - {t.name for t in spec.inputs})
        if extra:
            raise ValueError(f"the graph takes input {extra[0]!r}, which the spec does not name")
        return False

    def __getstate__(self) -> dict:
        """With --workers > 1 KServe pickles the models into each uvicorn worker process (spawn):
        the session does not pickle, so each worker loads its own."""
        state = self.__dict__.copy()
        state["session"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.ready:
            self.load()

    # ------------------------------------------------------------------------------------------
    # metadata (GET /v2/models/<name>)

    def get_input_types(self) -> list[dict]:
        return [t.metadata() for t in self.spec.inputs] if self.spec else []

    def get_output_types(self) -> list[dict]:
        return [t.metadata() for t in self.spec.outputs] if self.spec else []

    # ------------------------------------------------------------------------------------------
    # a request

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Batch:
        if isinstance(payload, InferRequest):
            return Batch(parse_v2(payload, self.spec), "v2", payload)
        tensors, row_format = parse_v1(payload, self.spec)
        return Batch(tensors, "rows" if row_format else "columns")

    async def predict(self, payload: Batch, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None) -> Batch:
        loop = asyncio.get_running_loop()
        payload.outputs = await loop.run_in_executor(executor(self.parallel_runs), self.run, payload.tensors)
        return payload

    async def postprocess(self, result: Batch, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None) -> Any:
        if result.kind != "v2":
            return encode_v1(result.outputs, result.kind == "rows")
        request = result.request
        wanted = request.request_outputs
        if wanted:
            unknown = [o.name for o in wanted if o.name not in result.outputs]
            if unknown:
                raise InvalidInput(f"unknown output {unknown[0]!r}; this model has {self.output_names}")
        outputs = [InferOutput(name=n, shape=list(a.shape), datatype=t.datatype, data=a) for (n, a), t in zip(result.outputs.items(), self.spec.outputs)]
        if request.from_grpc:
            # gRPC answers as it was asked: raw_output_contents for raw_input_contents, typed contents
            # otherwise (KServe's to_grpc would send every numpy output raw, and fails on numpy data
            # when the inputs were raw)
            for out in outputs:
                out.set_data_from_numpy(out.data, binary_data=request.use_binary_outputs)
        return InferResponse(
            response_id=request.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=wanted,
        )

    def run(self, tensors: dict[str, Any]) -> dict[str, np.ndarray]:
        """The graph on one checked batch (in the executor): named outputs in the spec's order."""
        try:
            if self.image:
                info = self.spec.inputs[0]
                graph_input = self.session.get_inputs()[0].name
                parts = []
                for i, data in enumerate(tensors[info.name]):
                    pixels = decode_image(data, info.name, i, info.max_pixels)
                    parts.append(self.session.run(self.output_names, {graph_input: pixels[None]}))
                values = [np.concatenate([p[k] for p in parts]) for k in range(len(self.output_names))]
            else:
                feeds = {t.name: (np.array(tensors[t.name], dtype=object) if t.is_bytes else np.ascontiguousarray(tensors[t.name])) for t in self.spec.inputs}
                values = self.session.run(self.output_names, feeds)
        except InvalidInput:
            raise
        except ort.capi.onnxruntime_pybind11_state.InvalidArgument as exc:  # values the graph refuses (an index out of range, ...)
            raise InvalidInput(f"the model refused the input values: {str(exc).splitlines()[0]}") from None
        except Exception as exc:  # a fault of the model, not of the request: 500 with no traceback in the body
            log.exception("model %s: inference failed", self.name)
            raise InferenceError(f"prediction failed: {type(exc).__name__}") from None
        return dict(zip(self.output_names, values))
