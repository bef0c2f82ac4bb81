"""`twinserve up / status / down` as a user runs them: nothing left behind, clear failures."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from conftest import group_members, stack_settings

from twinserve.supervisor import port_in_use

CLI = [sys.executable, "-m", "twinserve.cli"]


def env_for(settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = dict(os.environ)
    for field in ("torchserve_inference_port", "torchserve_management_port", "torchserve_metrics_port", "torchserve_grpc_inference_port", "torchserve_grpc_management_port", "tfserving_grpc_port", "tfserving_rest_port", "kserve_http_port", "kserve_grpc_port", "gateway_port", "gateway_grpc_port", "run_dir", "build_dir", "models"):
        env[f"TWINSERVE_{field.upper()}"] = str(getattr(settings, field))
    return env


def test_up_status_down_leaves_nothing_behind(build_dir: Path, tmp_path: Path) -> None:
    settings = stack_settings(tmp_path / "run", build_dir, models="tabular")
    env = env_for(settings)
    up = subprocess.run([*CLI, "up", "--no-export"], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((settings.run_dir / "state.json").read_text())["services"]
        assert set(state) == {"torchserve", "tfserving", "kserve", "gateway"}
        pgids = [s["pgid"] for s in state.values()]
        assert group_members(pgids)
        status = subprocess.run([*CLI, "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
        rows = {r["service"]: r for r in json.loads(status.stdout)}
        assert all(r["running"] for r in rows.values())
        assert rows["tfserving"]["implementation"].startswith("twinserve TF-Serving-compatible server (NOT TensorFlow Serving)")
        assert rows["torchserve"]["models"] == {"tabular": "READY"}
        assert rows["tfserving"]["models"] == {"tabular": "READY"}
        assert rows["kserve"]["implementation"].startswith("KServe model server + ONNX Runtime")
        assert rows["kserve"]["models"] == {"tabular": "READY"}
    finally:
        down = subprocess.run([*CLI, "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0
    assert not group_members(pgids), "a process of the stack survived `twinserve down`"
    assert not (settings.run_dir / "state.json").exists()
    ports = [settings.torchserve_inference_port, settings.torchserve_management_port, settings.tfserving_rest_port, settings.kserve_http_port, settings.kserve_grpc_port, settings.gateway_port]
    assert not any(port_in_use("127.0.0.1", p) for p in ports)
    tmp = settings.run_dir / "torchserve" / "tmp"
    assert not list(tmp.glob(".model_server.pid*")) and not list(tmp.glob(".ts.sock*"))
    java = subprocess.run(["pgrep", "-f", f"{settings.torchserve_inference_port}"], capture_output=True, text=True)
    assert java.stdout.strip() == ""


def test_failed_start_is_clear_and_stops_what_it_started(build_dir: Path, tmp_path: Path) -> None:
    settings = stack_settings(tmp_path / "run", build_dir, models="tabular")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", settings.gateway_port))
        blocker.listen(1)
        up = subprocess.run([*CLI, "up", "--no-export"], env=env_for(settings), capture_output=True, text=True, timeout=300)
    assert up.returncode != 0
    assert "already in use" in up.stdout + up.stderr
    assert not (settings.run_dir / "state.json").exists()
    assert not port_in_use("127.0.0.1", settings.torchserve_inference_port)


def test_missing_artifact_fails_clearly(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path / "run", tmp_path / "empty-build", models="tabular")
    up = subprocess.run([*CLI, "up", "--no-export"], env=env_for(settings), capture_output=True, text=True, timeout=120)
    assert up.returncode != 0
    assert "twinserve export" in up.stdout + up.stderr


def test_ports_held_by_any_socket_count_as_taken_and_chosen_ports_avoid_the_ephemeral_range() -> None:
    from twinserve.supervisor import free_port, port_bindable

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    chosen = [free_port() for _ in range(20)]
    assert len(set(chosen)) == 20 and all(p < low for p in chosen)
    with socket.socket() as holder:  # bound, not listening: what an outgoing client socket looks like to a server
        holder.bind(("127.0.0.1", chosen[0]))
        assert not port_in_use("127.0.0.1", chosen[0])  # a connect test would call it free
        assert not port_bindable("127.0.0.1", chosen[0])
    assert port_bindable("127.0.0.1", chosen[0])
