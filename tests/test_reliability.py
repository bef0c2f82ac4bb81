"""Faults under load, overload and a short soak, each on a private native stack (twinserve/reliability.py)."""

from __future__ import annotations

import json
from pathlib import Path

from twinserve import reliability


def test_faults_under_load_lose_nothing(tmp_path: Path) -> None:
    """A TorchServe worker killed, the TF backend killed and restarted, the KServe stack SIGKILLed and
    restarted, the TF backend hung, all under locust load split over the three stacks, failover on."""
    result = reliability.faults(tmp_path, seconds=45)
    (tmp_path / "faults.json").write_text(json.dumps(result, indent=2))
    assert result["requests"] > 1000
    assert result["lost_or_wrong"] == 0, result
    assert result["served"] + sum(result["clear_5xx_by_cause"].values()) == result["requests"]
    assert sum(v for k, v in result["failovers"].items() if k.startswith("tfserving->")) > 0  # the TF backend's outage was absorbed
    assert result["circuit_opened"]["tfserving"] >= 1 and result["circuit_closed_again"]["tfserving"] >= 1
    assert sum(v for k, v in result["failovers"].items() if k.startswith("kserve->")) > 0  # the KServe stack's death was absorbed
    assert result["circuit_opened"]["kserve"] >= 1 and result["circuit_closed_again"]["kserve"] >= 1  # ...and it served again
    assert result["torchserve_worker_restarted"] is True
    assert [e["event"].split(" (")[0] for e in result["events"]] == [
        "kill a TorchServe worker", "kill the KServe stack", "restart the KServe stack", "kill the TF backend", "restart the TF backend",
        "hang the TF backend", "resume the TF backend",
    ]


def test_overload_sheds_with_429_stays_healthy_and_recovers(tmp_path: Path) -> None:
    result = reliability.overload(tmp_path, seconds=10, users=48, max_in_flight=4)
    assert result["shed_429"] > 0 and result["served"] > 0
    assert result["lost_or_wrong"] == 0, result
    assert result["health_probes"] > 5 and result["health_ok"] == result["health_probes"]
    assert result["recovered"] is True


def test_short_soak_has_no_errors_and_flat_memory(tmp_path: Path) -> None:
    result = reliability.soak(tmp_path, seconds=20, rate=150)
    assert result["requests"] > 1000
    assert result["served"] == result["requests"]
    # memory bound: the gateway may settle after warm-up, but must not keep growing
    assert result["gateway_rss_mb_max"] - result["gateway_rss_mb_after_warmup"] < 25, result["rss_samples"]
