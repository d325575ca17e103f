"""Sweep test helpers: a tiny sweep spec and a writer for spec files."""

from __future__ import annotations

from pathlib import Path

SPEC = """
name = "tiny"
seeds = [0, 1]
num_requests = 60
per_request = true

[workload]
kind = "default"
rates = [2.0, 8.0]

[engine]
cost = "linear:d0=0.01,d1=2e-7"
kv_capacity = 6000
block_size = 16

[[policy]]
id = "vllm"
params = { watermark = [0.0, 0.05] }

[[policy]]
id = "sarathi"
"""


def _write(tmp_path: Path, text: str = SPEC, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path
