"""The gateway application: built once per process, backends and data plane created at start-up.

`create_app` gives the ASGI entry point (gateway/core.py) in front of the FastAPI application:
the core serves the inference routes, FastAPI the administrative ones and the OpenAPI document.
Run with `python -m gateway.serve` (what `twinserve up` and `twinserve gateway` do).
"""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import PlainTextResponse, Response

from gateway import backends as registry
from gateway import logs, metrics
from gateway.core import Core, Route
from gateway.dataplane import DataPlane, stack_states
from gateway.errors import GatewayError, internal_error
from gateway.grpcapi import server as grpcapi
from gateway.protocols import tfs_grpc, v1, v2, v2_grpc
from gateway.schemas import Health, Readiness, model_parameter_enum, request_components
from gateway.settings import GatewaySettings

log = logging.getLogger("twinserve.gateway")


def create_app(settings: GatewaySettings | None = None) -> Core:
    """The gateway: the inference core in front of the FastAPI application."""
    settings = settings or GatewaySettings()
    logs.configure()
    keys = [k.strip().encode() for k in settings.api_keys.split(",") if k.strip()]
    routes = v1.routes(settings.backend_list) + v2.routes(settings.backend_list)
    access = logs.AccessLog(settings.access_log_sample)
    return Core(create_fastapi(settings, routes, keys, access), routes, keys, settings.max_body_bytes, access)


def create_fastapi(settings: GatewaySettings, routes: list[Route], keys: list[bytes], access: logs.AccessLog) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        plane = app.state.plane = DataPlane(settings, registry.create(settings))
        plane.start()
        server = None
        if settings.grpc_port:  # the gRPC port, on this event loop and over the same data plane
            services = {**v2_grpc.services(), **tfs_grpc.services()}
            server = await grpcapi.start(settings, plane, services, keys, access)
        logs.started(settings)
        # keep the long-lived start-up objects (~70,000; a full GC pass over them took 30 ms here)
        # out of the collections that request handling sets off
        gc.collect()
        gc.freeze()
        yield
        if server is not None:
            await server.stop(grace=1.0)
        await plane.aclose()
        metrics.worker_stopped()

    app = FastAPI(
        title="twinserve gateway",
        version=v2.VERSION,
        description="One REST API in front of TorchServe and TensorFlow Serving: route, split, mirror, compare and fail over.",
        lifespan=lifespan,
    )
    app.include_router(v1.router)  # API keys are checked for these in gateway/core.py, like every route
    app.include_router(v2.router)

    @app.get("/healthz", tags=["health"], summary="The gateway process is alive", response_model=Health)
    async def healthz() -> Response:
        return Response(b'{"status":"alive"}', media_type="application/json")

    @app.get("/readyz", tags=["health"], summary="Every model is served by at least one backend", response_model=Readiness, responses={503: {"model": Readiness, "description": "some model has no ready backend"}})
    async def readyz(request: Request) -> Response:
        plane: DataPlane = request.app.state.plane
        replicas = await plane.replica_states()
        states = stack_states(replicas)
        ok = all(any(s == "READY" for s in b.values()) for b in states.values())
        body = {
            "ready": ok,
            "models": states,
            "replicas": replicas,
            "load": plane.replica_load(),
            "circuits": plane.circuits(),
            "routing": {"policy": settings.routing, "primary": settings.primary, "weights": settings.weight_map, "failover": settings.failover},
            "implementations": plane.implementations(),
        }
        return Response(orjson.dumps(body), status_code=200 if ok else 503, media_type="application/json")

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=PlainTextResponse, responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> Response:
        return exc.response(request.headers.get("x-request-id"))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return GatewayError(400, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}").response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
        return GatewayError(exc.status_code, kind, message).response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return internal_error().response(request.headers.get("x-request-id"))

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes + documented(routes))
            schema.setdefault("components", {}).setdefault("schemas", {}).update(request_components())
            model_parameter_enum(schema, settings.model_list)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def documented(routes: list[Route]) -> list:
    """FastAPI route objects for the core's inference routes, used only to write the OpenAPI document:
    they are never mounted, so the one implementation of each route stays in its protocol module."""
    docs = APIRouter()
    for route in routes:

        async def endpoint(model: str) -> None:  # the signature documents the path parameter
            raise AssertionError("documentation only")

        docs.add_api_route(route.path, endpoint, methods=[route.method], name=route.endpoint, **route.doc)
    return docs.routes
