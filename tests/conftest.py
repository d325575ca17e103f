"""Shared fixtures: tiny hand-written workloads and the Vidur data beside the repository."""

from __future__ import annotations

import os
import shutil
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


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a headless-capable Chromium, for the rendered-page tests (tests/report). Skipped
    when there is none, unless ``KVSCHED_REQUIRE_BROWSER=1`` (set by .ci/run after installing it),
    where a missing browser fails the tests instead."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("KVSCHED_REQUIRE_BROWSER") == "1":
        pytest.fail("KVSCHED_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
    pytest.skip("needs Chromium (apt-get install chromium); KVSCHED_REQUIRE_BROWSER=1 makes this a failure")


def pytest_collection_modifyitems(config, items):
    """Run the real-engine tests first. vLLM 0.32's Triton dispatcher scans every loaded module at
    engine start and crashes on llvmlite's objects ("'_lib_fn_wrapper' object has no attribute
    'get'") once numba has been imported in the same process, which the compiled-engine tests do."""
    items.sort(key=lambda item: item.get_closest_marker("engine") is None)
