"""Session fixtures: artifacts are exported once, each server starts once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from models.export import DEFAULT_BUILD, export_model  # noqa: E402
from models.spec import MODEL_NAMES  # noqa: E402


@pytest.fixture(scope="session")
def build_dir() -> Path:
    """The default build folder with every model exported (a cache hit when up to date)."""
    for name in MODEL_NAMES:
        export_model(name, DEFAULT_BUILD)
    return DEFAULT_BUILD
