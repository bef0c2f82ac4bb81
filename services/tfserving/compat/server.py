"""Entry point of the TF-Serving-compatible server: `python -m services.tfserving.compat.server <tensorflow_model_server flags>`.

twinserve's stand-in where the real `tensorflow_model_server` binary is not on
PATH. It runs the same SavedModels on the TensorFlow runtime and speaks the same
REST and gRPC APIs, but it is not TensorFlow Serving: every response carries an
`X-TF-Serving-Implementation` header saying so, and reports name it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    from services.tfserving.compat import flags

    args = flags.parse(argv)

    from services.tfserving.compat.cuda_noise import quiet_cuda_noise

    with quiet_cuda_noise():  # the expected CUDA lines of a CPU-only machine; real errors pass
        import tensorflow as tf

        if args.tensorflow_intra_op_parallelism:
            tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
        if args.tensorflow_inter_op_parallelism:
            tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
        tf.config.list_physical_devices()  # the first device listing is where cuInit is tried

    import uvicorn

    from services.tfserving.compat import grpc_service, textproto
    from services.tfserving.compat.batching import BatchingParameters
    from services.tfserving.compat.engine import Engine
    from services.tfserving.compat.registry import Registry, read_model_configs
    from services.tfserving.compat.rest import RestApp

    registry = Registry(read_model_configs(args.model_config_file, args.model_name, args.model_base_path))
    registry.load_all()
    batching = None
    if args.enable_batching:
        params = textproto.parse(Path(args.batching_parameters_file).read_text()) if args.batching_parameters_file else {}
        batching = BatchingParameters.from_textproto(params)
    monitoring_path = None
    if args.monitoring_config_file:
        prom = textproto.parse(Path(args.monitoring_config_file).read_text()).get("prometheus_config", {})
        if prom.get("enable"):
            monitoring_path = prom.get("path") or "/monitoring/prometheus/metrics"

    engine = Engine(registry, batching)
    refreeze()
    loaded = ", ".join(f"{n} (v{','.join(map(str, vs))})" for n, vs in ((n, sorted(v)) for n, v in registry.servables.items()))
    print(f"twinserve-tf-compat: tensorflow {tf.__version__}; models {loaded}; batching {batching}", flush=True)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        if args.file_system_poll_wait_seconds > 0:
            poller = loop.create_task(watch_versions(registry, args.file_system_poll_wait_seconds))  # noqa: F841  (a reference: asyncio holds tasks weakly)
        grpc_server = grpc_service.start(engine, loop, args.grpc_host, args.port) if args.port else None
        if grpc_server is not None:
            print(f"twinserve-tf-compat: gRPC on {args.grpc_host}:{args.port}", flush=True)
        if args.rest_api_port:
            config = uvicorn.Config(
                RestApp(engine, monitoring_path),
                host=args.rest_api_host,
                port=args.rest_api_port,
                loop="uvloop",
                http="httptools",
                lifespan="off",
                access_log=False,
                log_level="warning",
                backlog=2048,
                server_header=False,
            )
            server = uvicorn.Server(config)
            print(f"twinserve-tf-compat: REST on {args.rest_api_host}:{args.rest_api_port}", flush=True)
            await server.serve()
        else:
            stop = asyncio.Event()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            loop.add_signal_handler(signal.SIGINT, stop.set)
            await stop.wait()
        if grpc_server is not None:
            grpc_server.stop(grace=1)

    import uvloop

    uvloop.run(serve())
    engine.pool.shutdown(wait=False, cancel_futures=True)
    return 0


async def watch_versions(registry, interval: float) -> None:  # type: ignore[no-untyped-def]
    """TF Serving's file-system polling: versions load off the event loop (requests keep flowing),
    the servables that left service finish their queued batches, then the heap is frozen again."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        try:
            events, retired = await loop.run_in_executor(None, registry.reconcile)
        except Exception as exc:  # a poll must never take the server down
            print(f"twinserve-tf-compat: version poll failed: {exc}", file=sys.stderr, flush=True)
            continue
        for e in events:
            print(f"twinserve-tf-compat: {e.name} version {e.version} {e.action}" + (f": {e.detail}" if e.detail else ""), flush=True)
        draining = [t for servable in retired for b in servable.batchers.values() if (t := b.retire()) is not None]
        if draining:
            await asyncio.wait(draining, timeout=60)
        del retired, draining
        if events:
            # unloaded models are garbage only once unfrozen (a frozen object is never collected);
            # one full pass per change of versions, then the new heap is frozen again
            await loop.run_in_executor(None, refreeze)


def refreeze() -> None:
    """With TensorFlow loaded a full GC pass walks ~375,000 objects (about 170 ms here); the lists that
    parsing JSON requests allocates set such passes off, and every request in flight waits: this was
    the 100-300 ms latency tail. What is loaded lives until its version is unloaded, so freeze it."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
