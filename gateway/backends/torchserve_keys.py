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


def auth_header(path: str | Path, kind: str) -> dict[str, str]:
    key = read_keys(path).get(kind)
    return {"Authorization": f"Bearer {key}"} if key else {}


def renew(management_url: str, path: str | Path, kind: str, timeout: float = 5.0) -> bool:
    """Ask TorchServe for a new key of this kind (keys expire, 60 min by default); True when it wrote one."""
    import httpx

    api = read_keys(path).get("API")
    if not api:
        return False
    try:
        r = httpx.get(f"{management_url}{TOKEN_PATH}", params={"type": kind}, headers={"Authorization": f"Bearer {api}"}, timeout=timeout)
    except httpx.HTTPError:
        return False
    return r.status_code == 200
