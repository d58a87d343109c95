"""Fixtures shared by all tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sagefm._constants import DATA_ENV


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real data folder: ``$SAGEFM_DATA``, else ``<repo>/../shared/data``."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    path = Path(os.environ.get(DATA_ENV, default))
    if not path.is_dir():
        pytest.skip(f"shared real data not found at {path}; set {DATA_ENV} to its folder")
    return path
