"""TorchServe's token authorisation keys, as it writes them to key_file.json in its working directory."""

from __future__ import annotations

import json
from pathlib import Path

KEY_FILE = "key_file.json"


def read_keys(path: str | Path) -> dict[str, str]:
    """{"management": key, "inference": key}, or {} when the file is missing (token auth off)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return {kind: data[kind]["key"] for kind in ("management", "inference") if isinstance(data.get(kind), dict) and "key" in data[kind]}


def auth_header(path: str | Path, kind: str) -> dict[str, str]:
    key = read_keys(path).get(kind)
    return {"Authorization": f"Bearer {key}"} if key else {}
