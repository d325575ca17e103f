"""Shared fixtures: tiny hand-written workloads and the Vidur data beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim_helpers import tiny

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def make_workload():
    """Builder of tiny workloads: make_workload((arrival, prompt, output), ...)."""
    return tiny


@pytest.fixture
def shared_data() -> Path:
    """The read-only Vidur data beside the repository (skips only when it is absent)."""
    path = REPO_ROOT.parent / "shared" / "data" / "vidur"
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path
