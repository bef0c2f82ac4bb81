"""TorchServe's token authorisation keys, as it writes them to key_file.json in its working directory."""

from __future__ import annotations

import json
from pathlib import Path

KEY_FILE = "key_file.json"
KEY_REFUSED = b"InvalidKeyException"  # the error type in TorchServe's 400 answer to an expired or wrong key
TOKEN_PATH = "/token"  # management API: ?type=inference|management, authorised by the API key, writes a new key


def read_keys(path: str | Path) -> dict[str, str]:
    """{"management": key, "inference": key, "API": key}, or {} when the file is missing (token auth off)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return {kind: data[kind]["key"] for kind in ("management", "inference", "API") if isinstance(data.get(kind), dict) and "key" in data[kind]}
