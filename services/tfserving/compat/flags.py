"""The tensorflow_model_server command-line flags this server honours, spelt the same way."""

from __future__ import annotations

import argparse
import sys


def _bool(value: str) -> bool:
    return value.lower() in ("1", "true", "yes", "")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="twinserve-tf-compat",
        description="TF-Serving-compatible model server (twinserve's stand-in for tensorflow_model_server).",
    )
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0 disables gRPC)")
    p.add_argument("--grpc_socket_path", default="")
    p.add_argument("--rest_api_port", type=int, default=0, help="REST port (0 disables REST, as in TF Serving)")
    p.add_argument("--rest_api_num_threads", type=int, default=0)
    p.add_argument("--rest_api_timeout_in_ms", type=int, default=30000)
    p.add_argument("--model_config_file", default="")
    p.add_argument("--model_config_file_poll_wait_seconds", type=int, default=0)
    p.add_argument("--model_name", default="default")
    p.add_argument("--model_base_path", default="")
    p.add_argument("--enable_batching", type=_bool, nargs="?", const=True, default=False)
    p.add_argument("--batching_parameters_file", default="")
    p.add_argument("--monitoring_config_file", default="")
    p.add_argument("--file_system_poll_wait_seconds", type=int, default=1)
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0)
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0)
    p.add_argument("--rest_api_host", default="0.0.0.0", help="(twinserve extension) REST bind address")
    p.add_argument("--grpc_host", default="0.0.0.0", help="(twinserve extension) gRPC bind address")
    args, unknown = p.parse_known_args(argv)
    for flag in unknown:
        print(f"twinserve-tf-compat: ignoring unsupported flag {flag}", file=sys.stderr)
    return args
