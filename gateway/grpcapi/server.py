"""The gateway's gRPC port: gRPC's counterpart of gateway/core.py.

One grpc.aio server, on the same event loop as the HTTP front end (started and stopped by the
application's lifespan), hosts every service the protocol modules declare (KServe V2's
GRPCInferenceService in gateway/protocols/v2_grpc.py, TF Serving's PredictionService and
ModelService in gateway/protocols/tfs_grpc.py). Their handlers call the same data plane as the
REST routes, so routing, failover, the breaker, the in-flight limit and the statistics are theirs.

What every call needs happens here, as core.py does it for HTTP: the API key (metadata `x-api-key`
or `authorization: Bearer`), the request ID (`x-request-id`, answered in the initial metadata), the
backend override (`x-backend`), the message size limit (the HTTP body limit, enforced by gRPC
as RESOURCE_EXHAUSTED `body_too_large`), the metrics and the access log (labelled with the HTTP status the
same failure gets over REST, so one dashboard reads both), and the error shape: a GatewayError
becomes the gRPC status its HTTP status stands for (STATUS_CODES), its message the details, its
type in the trailing metadata `x-error-type`; an unexpected exception is INTERNAL without a
traceback. Requests are parsed in the handler, not by gRPC, so a malformed message is
INVALID_ARGUMENT naming the message, not gRPC's generic deserialisation failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError, Message

from gateway.dataplane import DataPlane, Served
from gateway.errors import GatewayError, internal_error
from gateway.grpcapi.schema import message
from gateway.http import Outcome, check_api_key, request_id, served_headers, too_large
from gateway.logs import AccessLog
from gateway.settings import GatewaySettings

log = logging.getLogger("twinserve.gateway")

# the HTTP status of a GatewayError -> the gRPC status TF Serving and Triton answer for that failure
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
WANTED = frozenset({"x-request-id", "x-backend", "x-api-key", "authorization"})


@dataclass
class Rpc:
    """One call as a handler sees it: the request ID, the backend asked for, the metrics outcome, and
    the initial metadata to answer with (a handler adds who served)."""

    rid: str
    override: str | None
    outcome: Outcome
    answer: dict[str, str] = field(default_factory=dict)

    def served(self, served: Served) -> None:
        """Who answered, in the initial metadata: the headers REST answers (gateway/http.py), lower-case."""
        self.outcome.backend = served.result.backend
        self.answer.update({k.lower(): v for k, v in served_headers(served.result.backend, served.result.seconds, served.failover_from).items()})


Handler = Callable[[DataPlane, Any, Rpc], Awaitable[Message]]


@dataclass(frozen=True)
class Method:
    """An RPC: its request and response messages (full names; None: the handler is given the raw
    bytes, for RPCs refused whatever they carry), the handler, the metrics label, and whether it
    answers without an API key (liveness and readiness, like /v2/health/* over HTTP)."""

    request: str | None
    response: str | None
    handler: Handler
    endpoint: str
    open: bool = False


Services = dict[str, dict[str, Method]]  # service full name -> method name -> Method


class GrpcFrontEnd:
    def __init__(self, plane: DataPlane, services: Services, keys: list[bytes], access: AccessLog, limit: int) -> None:
        self.plane = plane
        self.services = services
        self.keys = keys
        self.access = access
        self.limit = limit

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        return [
            grpc.method_handlers_generic_handler(service, {name: self._unary(f"/{service}/{name}", m) for name, m in methods.items()})
            for service, methods in self.services.items()
        ]

    def _unary(self, path: str, method: Method) -> grpc.RpcMethodHandler:
        request_type = message(method.request) if method.request else None
        if method.response:
            message(method.response)  # a name missing from the schema fails at start, not on a call

        async def behaviour(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self.serve(path, method, request_type, raw, context)

        # bytes in and out: the handler parses, so a malformed message gets a clear INVALID_ARGUMENT
        return grpc.unary_unary_rpc_method_handler(behaviour)

    async def serve(self, path: str, method: Method, request_type: type[Message] | None, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        headers = {k: v for k, v in (context.invocation_metadata() or ()) if k in WANTED and isinstance(v, str)}
        rid = request_id(headers)
        outcome = Outcome(method.endpoint)
        rpc = Rpc(rid, None, outcome, {"x-request-id": rid})
        try:
            if self.keys and not method.open:
                check_api_key(headers, self.keys)
            rpc.override = self.plane.check_backend(headers.get("x-backend"))
            if len(raw) > self.limit:
                raise too_large(f"request message of {len(raw)} bytes", self.limit)
            try:
                request = request_type.FromString(raw) if request_type else raw
            except DecodeError:
                raise GatewayError(400, "malformed_message", f"the request is not a valid {method.request} message") from None
            response = await method.handler(self.plane, request, rpc)
            outcome.status = 200
        except GatewayError as exc:
            outcome.status = exc.status
            if outcome.backend == "none":
                outcome.backend = exc.backend or "none"
            self._finish(rid, path, outcome)
            trailing = [("x-request-id", rid), ("x-error-type", exc.type), *([("x-backend", exc.backend)] if exc.backend else [])]
            await context.abort(STATUS_CODES.get(exc.status, grpc.StatusCode.UNKNOWN), exc.message, trailing_metadata=tuple(trailing))
        except asyncio.CancelledError:  # the client's deadline passed, it cancelled, or the server is stopping
            outcome.status = 499
            self._finish(rid, path, outcome)
            raise
        except Exception:
            log.exception("unhandled error on %s (request %s)", path, rid)
            outcome.status = 500
            self._finish(rid, path, outcome)
            exc = internal_error()
            await context.abort(grpc.StatusCode.INTERNAL, exc.message, trailing_metadata=(("x-request-id", rid), ("x-error-type", exc.type)))
        self._finish(rid, path, outcome)
        await context.send_initial_metadata(tuple(rpc.answer.items()))
        return response.SerializeToString()

    def _finish(self, rid: str, path: str, outcome: Outcome) -> None:
        outcome.record()
        self.access.record(rid, "GRPC", path, outcome.status, outcome.backend, time.perf_counter() - outcome.started)


async def start(settings: GatewaySettings, plane: DataPlane, services: Services, keys: list[bytes], access: AccessLog) -> grpc.aio.Server:
    """The gRPC server on settings.host:settings.grpc_port, started. Several uvicorn workers each start
    one on the same port (SO_REUSEPORT, the kernel spreads the connections); a single worker binds
    it alone, so a port already taken fails the start instead of being shared."""
    server = grpc.aio.server(options=[
        # the limit itself is checked per call (a clear body_too_large like REST's 413); gRPC's own
        # check, at twice the limit (an int32 option), only stops a far larger message before it is
        # read whole, with gRPC's RESOURCE_EXHAUSTED and its own message
        ("grpc.max_receive_message_length", min(2 * settings.max_body_bytes, 2**31 - 1)),
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ])
    server.add_generic_rpc_handlers(GrpcFrontEnd(plane, services, keys, access, settings.max_body_bytes).handlers())
    address = f"[{settings.host}]:{settings.grpc_port}" if ":" in settings.host else f"{settings.host}:{settings.grpc_port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise RuntimeError(f"cannot bind the gRPC port {address} (in use?); set TWINSERVE_GATEWAY_GRPC_PORT, or 0 to turn gRPC off")
    await server.start()
    return server
