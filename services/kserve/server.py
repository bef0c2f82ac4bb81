"""twinserve's third stack: ONNX Runtime behind KServe's Python model server (kserve 0.21).

    .venv-kserve/bin/python -m services.kserve.server --model_dir <build>/onnx --models digits,tabular \\
        --http_port 8090 --grpc_port 8091 [--host 127.0.0.1] [--workers 1] [--threads 1]

Run from the repository root (or any folder holding `services/`). It imports kserve, ONNX Runtime,
numpy, Pillow and orjson, and nothing else of the project (no torch, no TensorFlow).

Flags (ours):
  --model_dir DIR    the ONNX artifacts: DIR/<name>/model.onnx and DIR/<name>/spec.json (required)
  --models A,B,...   the models to serve (default: every folder of DIR with a spec.json). A listed
                     model without model.onnx (the export could not make one), or whose graph does
                     not match its spec, is not loaded: one log line says why and the rest are served;
                     its endpoints answer KServe's 404 "Model with name <name> does not exist." The
                     server exits with status 2 when no listed model loads.
  --host ADDR        the address both ports bind (default 127.0.0.1; the image passes 0.0.0.0).
                     KServe 0.21 hard-codes 0.0.0.0 (REST) and [::] (gRPC): this module binds ADDR instead.
  --threads N        ONNX Runtime intra-op threads per session (default 1); inter-op 1, sequential execution.
  --parallel_runs N  inferences run at once per process (default 1, like one TorchServe worker or one TF
                     batch thread); requests beyond it wait in the pool's queue.
KServe's own flags (its `kserve.model_server.parser`, the parent of ours), the ones that matter here:
  --http_port P      REST port, V1 and V2 (KServe's default 8080)
  --grpc_port P      V2 gRPC port (KServe's default 8081); --enable_grpc false turns gRPC off
  --workers N        uvicorn worker processes for REST (default 1; see below)
  --max_threads N    gRPC server threads (KServe's default 4)
  --enable_latency_logging BOOL   per-request timing lines on the `kserve.trace` logger: KServe's request
                     latency line and its TimingMiddleware lines. Default false HERE (KServe: true);
                     true restores both.
  --access_log_format FMT, --log_config_file FILE, --configure_logging BOOL: KServe's logging options.

Endpoints (KServe's own): REST `/v1/models/<name>` (ready), `POST /v1/models/<name>:predict` (TF
Serving's JSON: `instances` -> `predictions`, `inputs` -> `outputs`), `/v2/health/live`,
`/v2/health/ready`, `/v2/models/<name>` (metadata: inputs and outputs with V2 datatypes, batch
dimension -1; platform "onnxruntime_onnx"), `/v2/models/<name>/ready`,
`POST /v2/models/<name>/infer` (JSON and the binary tensor extension), `/metrics` (Prometheus:
KServe's per-model pre/predict/post-process histograms and the process collectors; no payloads);
gRPC `inference.GRPCInferenceService`. Bad input answers 400 `{"error": "<message>"}` (gRPC
INVALID_ARGUMENT); an unknown model 404; a fault of the model 500 `{"error": "prediction failed: <type>"}`.

Logging: payloads are never logged. The access log (uvicorn.access, stdout) writes client, method,
path and status; a refused request writes one WARNING line with the message (an unknown model one
INFO line), no traceback (KServe logs a traceback for every 400 and 404); gRPC calls log their method name.

What kserve 0.21's Python server has and lacks (read from its source):
- No request batching: each request runs alone (KServe's batcher lives in its agent sidecar on
  Kubernetes, not in this server; the other two stacks batch server-side, this one does not).
- Workers: `--workers N > 1` starts N uvicorn REST processes (spawn) sharing the port; each loads
  its own sessions (the models are pickled into them without their sessions). gRPC is served by the
  parent process only, and `/metrics` is per process (the Prometheus registry is not shared).
- Host binding: none (0.0.0.0 and [::] hard-coded); `--host` here replaces both.
- gRPC: V2 only (no TF Serving gRPC API), on the same asyncio loop as REST with `--workers 1`.
- Threads: requests are asyncio tasks; inference runs in a thread pool of this module (ONNX Runtime
  releases the GIL), so one worker uses several cores when requests overlap.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

import kserve.model_server as kms
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from grpc import StatusCode, aio
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.errors import InvalidInput, ModelNotFound
from kserve.protocol.dataplane import JSON_HEADERS, DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import (
    ExceptionToStatusInterceptor,
    LoggingInterceptor,
)
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.rest.multiprocess.server import RESTServerMultiProcess
from kserve.protocol.rest.server import RESTServer

from services.kserve.codec import loads
from services.kserve.model import ModelMissing, OnnxModel

log = logging.getLogger("kserve")
PLATFORM = "onnxruntime_onnx"


def str2bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if value.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {value!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.kserve.server",
        description="ONNX Runtime behind KServe's model server (V1 and V2 REST, V2 gRPC).",
        parents=[kms.parser],
        conflict_handler="resolve",
    )
    parser.add_argument("--model_dir", required=True, help="folder of <name>/model.onnx and <name>/spec.json")
    parser.add_argument("--models", default="", help="comma-separated model names (default: every folder of --model_dir with a spec.json)")
    parser.add_argument("--host", default="127.0.0.1", help="address the REST and gRPC ports bind")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per session")
    parser.add_argument("--parallel_runs", type=int, default=1, help="inferences run at once per process (the inference thread pool)")
    parser.add_argument("--enable_latency_logging", type=str2bool, default=False, help="per-request timing lines on the kserve.trace logger")
    return parser


# ----------------------------------------------------------------------------------------------
# KServe's classes, with a bind address and quieter, payload-free error logging


class TwinDataPlane(DataPlane):
    def decode(self, body: Any, headers: Any, protocol_version: str = "v1", model_name: str | None = None) -> Any:
        """V1 JSON bodies as the other stacks read them: orjson, then the standard library's parser
        for the NaN / Infinity tokens (KServe's own decode answers those "Unrecognized request
        format"), so they get the non-finite 400 from the model."""
        if type(body) is bytes and protocol_version.lower() == "v1" and headers is not None and not any(k.startswith("ce-") for k in headers):
            content_type = headers.get("content-type")
            if content_type is None or content_type in JSON_HEADERS:
                try:
                    body = loads(body)
                except ValueError as exc:
                    raise InvalidInput(f"Unrecognized request format: {exc}") from None
        return super().decode(body, headers, protocol_version, model_name)

    async def model_metadata(self, model_name: str) -> dict:
        metadata = await super().model_metadata(model_name)
        metadata["platform"] = PLATFORM
        return metadata


async def invalid_input_handler(request: Any, exc: Exception) -> JSONResponse:
    log.warning("400 %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(status_code=400, content={"error": str(exc)})


async def not_found_handler(request: Any, exc: Exception) -> JSONResponse:
    log.info("404 %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(status_code=404, content={"error": str(exc)})


async def validation_error_handler(request: Any, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 for a V2 body that is no InferenceRequest, as KServe's error shape: 400
    {"error": "..."} (locations and messages only: the offending values are not echoed)."""
    problems = []
    for error in exc.errors()[:3]:
        if error.get("type") == "json_invalid":
            problems.append(f"the body is not valid JSON ({(error.get('ctx') or {}).get('error', 'JSON decode error')})")
            continue
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        problems.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    message = "Unrecognized request format: " + "; ".join(problems)
    log.warning("400 %s %s: %s", request.method, request.url.path, message)
    return JSONResponse(status_code=400, content={"error": message})


class TwinRESTServer(RESTServer):
    def __init__(self, *args: Any, host: str, latency_logging: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.host = host  # KServe passes 0.0.0.0 to uvicorn.Config
        self.latency_logging = latency_logging

    def _add_middlewares(self, app: Any) -> None:
        if self.latency_logging:
            super()._add_middlewares(app)
        elif self.access_log_format:  # KServe's access-log option without its per-request timing middleware
            from asgi_logger import AccessLoggerMiddleware

            logging.getLogger("uvicorn.access").handlers = []
            app.add_middleware(AccessLoggerMiddleware, format=self.access_log_format)
            logging.getLogger("access").propagate = False

    def _add_exception_handlers(self, app: Any) -> None:
        super()._add_exception_handlers(app)
        app.add_exception_handler(InvalidInput, invalid_input_handler)
        app.add_exception_handler(ModelNotFound, not_found_handler)
        app.add_exception_handler(RequestValidationError, validation_error_handler)


class QuietExceptionInterceptor(ExceptionToStatusInterceptor):
    async def handle_exception(self, ex: Exception, request_or_iterator: Any, context: Any, method_name: str) -> None:
        if isinstance(ex, InvalidInput):
            log.warning("INVALID_ARGUMENT %s: %s", method_name, ex)
            await context.abort(StatusCode.INVALID_ARGUMENT, ex.reason)
        if isinstance(ex, ModelNotFound):
            log.info("NOT_FOUND %s: %s", method_name, ex)
            await context.abort(StatusCode.NOT_FOUND, ex.reason)
        await super().handle_exception(ex, request_or_iterator, context, method_name)


class TwinGRPCServer(GRPCServer):
    """KServe's GRPCServer.start, binding `host` rather than [::]."""

    def __init__(self, *args: Any, host: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._host = host

    async def start(self, max_workers: int) -> None:
        import concurrent.futures

        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        self._server = aio.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), QuietExceptionInterceptor()),
            options=[
                ("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                ("grpc.max_receive_message_length", self._kwargs.get("grpc_max_receive_message_length")),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        host = f"[{self._host}]" if ":" in self._host and not self._host.startswith("[") else self._host
        address = f"{host}:{self._port}"
        if not self._server.add_insecure_port(address):
            raise RuntimeError(f"gRPC: cannot bind {address}")
        log.info("Starting gRPC server on %s with %d threads", address, max_workers)
        await self._server.start()
        await self._server.wait_for_termination()


class TwinModelServer(kms.ModelServer):
    def __init__(self, *, host: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host = host
        self.dataplane = TwinDataPlane(model_registry=self.registered_models)

    def start(self, models: list) -> None:
        """KServe's ModelServer.start with the REST and gRPC servers above."""
        self._register_and_check_atleast_one_model_is_ready(models)
        common: dict[str, Any] = {
            "access_log_format": self.access_log_format,
            "workers": self.workers,
            "grace_period": self.grace_period,
            "event_loop": self.event_loop,
            "timeout_keep_alive": self.timeout_keep_alive,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        rest = TwinRESTServer(
            FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension, self.http_port,
            host=self.host, latency_logging=self.enable_latency_logging, **common,
        )
        if self.workers > 1:
            self._rest_multiprocess_server = RESTServerMultiProcess(
                FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension, self.http_port,
                log_config_file=kms.args.log_config_file, **common,
            )
            self._rest_multiprocess_server._rest_server = rest  # the same server, run in each worker process
            self.servers.append(self._rest_multiprocess_server.start())
        else:
            self._rest_server = rest
            self.servers.append(rest.start())
        if self.enable_grpc:
            self._grpc_server = TwinGRPCServer(
                self.grpc_port, self.dataplane, self.model_repository_extension,
                kwargs=vars(kms.args), grace_period=self.grace_period, host=self.host,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


# ----------------------------------------------------------------------------------------------


def model_names(model_dir: str, models: str) -> list[str]:
    if models.strip():
        return [m.strip() for m in models.split(",") if m.strip()]
    return sorted(d for d in os.listdir(model_dir) if os.path.isfile(os.path.join(model_dir, d, "spec.json")))


def load_models(model_dir: str, names: list[str], threads: int, parallel_runs: int = 1) -> list[OnnxModel]:
    loaded = []
    for name in names:
        model = OnnxModel(name, model_dir, threads, parallel_runs)
        try:
            model.load()
        except ModelMissing as exc:
            log.warning("model %s: not loaded: %s (the export could not make one); serving the others", name, exc)
            continue
        except (OSError, ValueError, KeyError, json.JSONDecodeError, RuntimeError) as exc:
            log.error("model %s: not loaded: %s: %s", name, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            continue
        inputs = ", ".join(f"{t.name} {t.dtype}{list(t.shape)}" for t in model.spec.inputs)
        log.info("model %s: loaded (%s; max_batch %d; %d intra-op thread(s)%s)", name, inputs, model.spec.max_batch, threads, "; images decoded to uint8 pixels" if model.image else "")
        loaded.append(model)
    return loaded


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads < 1 or args.parallel_runs < 1:
        raise SystemExit("--threads and --parallel_runs must be at least 1")
    if not os.path.isdir(args.model_dir):
        raise SystemExit(f"--model_dir {args.model_dir}: no such folder")
    server = TwinModelServer(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging,
        access_log_format=args.access_log_format,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
    )  # configures KServe's logging
    names = model_names(args.model_dir, args.models)
    models = load_models(args.model_dir, names, args.threads, args.parallel_runs)
    if not models:
        log.error("no model to serve: none of %s loaded from %s", names, args.model_dir)
        return 2
    log.info("serving %s on %s (REST %d, gRPC %s, %d worker(s))", [m.name for m in models], args.host, args.http_port, args.grpc_port if args.enable_grpc else "off", args.workers)
    server.start(models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
