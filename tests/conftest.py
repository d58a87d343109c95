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


# Hypothesis profiles: "ci" (default) keeps tests/reliability at a few minutes; "thorough" for a
# longer hunt (HYPOTHESIS_PROFILE=thorough pytest tests/reliability).
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,  # hangs are caught by the reliability tests' own alarm, not by timing
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.register_profile(
    "thorough", parent=settings.get_profile("ci"), max_examples=400, derandomize=False
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
