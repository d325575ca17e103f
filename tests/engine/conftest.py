"""Fixtures for the real-engine tests (they need the ``vllm`` extra: see .ci/vllm.sh)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny random-weight Llama saved locally (built once per session, no download)."""
    pytest.importorskip("vllm", reason="needs the vllm extra (pip install 'kvsched[vllm]')")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from kvsched.integrations.tiny_model import build_tiny_llama
    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))
