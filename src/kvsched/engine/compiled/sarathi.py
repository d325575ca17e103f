"""`sarathi` (`kvsched.policies.sarathi.SarathiPolicy`) compiled: the fields its kernel
(`sarathi_kernel`) implements and their packing (as `kvsched.engine.compiled.vllm`)."""

from __future__ import annotations

import numpy as np

from .vllm import QUEUE_FIELDS

FIELDS = {**QUEUE_FIELDS, "chunk_size": (None, (16, 512))}


def fields(policy_id: str) -> dict:
    return FIELDS

_i = np.int64
PARAMS = np.dtype([("chunk_size", _i), ("max_num_seqs", _i),
                   ("reserve", _i)])     # the watermark in blocks (_waiting_queue.admission_reserve)


def pack(policy, cap_blocks: int) -> np.ndarray:
    pp = np.zeros(1, dtype=PARAMS)
    pp["chunk_size"], pp["max_num_seqs"] = policy.chunk_size, policy.max_num_seqs
    pp["reserve"] = int(policy.watermark * cap_blocks)
    return pp
