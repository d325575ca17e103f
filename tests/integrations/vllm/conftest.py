"""Fixtures for the real-engine tests (they need the ``vllm`` extra: see .ci/vllm.sh).

Without vLLM installed the engine tests are skipped, unless ``KVSCHED_REQUIRE_ENGINE=1`` (set by
.ci/vllm.sh), where a missing or broken vLLM is an error.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny random-weight Llama saved locally (built once per session, no download)."""
    if os.environ.get("KVSCHED_REQUIRE_ENGINE") == "1":
        import vllm  # noqa: F401
    else:
        pytest.importorskip("vllm", reason="needs the vllm extra (pip install 'kvsched[vllm]')")
    for key, value in (("VLLM_ENABLE_V1_MULTIPROCESSING", "0"), ("HF_HUB_OFFLINE", "1"),
                       ("VLLM_NO_USAGE_STATS", "1"), ("DO_NOT_TRACK", "1")):
        os.environ.setdefault(key, value)
    from kvsched.integrations.vllm.tiny_model import build_tiny_llama
    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))
