"""`vllm` (`kvsched.policies.vllm.VLLMPolicy`) compiled: the fields its kernel (`vllm_kernel`)
implements and their packing. numpy only: the declaration is read before numba is imported.

`FIELDS` declares every dataclass field of `VLLMPolicy` the kernel implements, with the values it
covers (None: any value of the field's type) and the values the generated equality tests try
(tests/engine/test_compiled.py); `pack` turns a policy into `PARAMS`. A field missing here, or a
value outside its set, sends the run to Python (`kvsched.engine.compiled.uncovered_field`).
"""

from __future__ import annotations

import numpy as np


QUEUE_FIELDS = {"max_num_seqs": (None, (1, 3, 256)), "watermark": (None, (0.0, 0.05))}
FIELDS = {**QUEUE_FIELDS, "max_num_batched_tokens": (None, (8, 64, 8192)),
          "full_prompt_must_fit": (None, (True, False)), "continue_on_block": (None, (False, True)),
          "enable_chunked_prefill": (None, (True, False)), "prefill_first": (None, (False, True)),
          "padded_prefill_budget": (None, (False, True)),
          "preempt_victim": (("last_admitted", "last_arrived"), ("last_admitted", "last_arrived")),
          "decode_needs_free_block": (None, (False, True))}


def fields(policy_id: str) -> dict:
    return FIELDS

_i = np.int64
PARAMS = np.dtype([
    ("budget", _i), ("max_num_seqs", _i),
    ("reserve", _i),               # the watermark in blocks (_waiting_queue.admission_reserve)
    ("full_prompt_must_fit", _i), ("continue_on_block", _i), ("chunked", _i), ("prefill_first", _i),
    ("padded", _i), ("last_arrived", _i), ("decode_needs_free_block", _i),
])


def pack(policy, cap_blocks: int) -> np.ndarray:
    pp = np.zeros(1, dtype=PARAMS)
    pp["budget"], pp["max_num_seqs"] = policy.max_num_batched_tokens, policy.max_num_seqs
    pp["reserve"] = int(policy.watermark * cap_blocks)
    pp["full_prompt_must_fit"], pp["continue_on_block"] = policy.full_prompt_must_fit, policy.continue_on_block
    pp["chunked"], pp["prefill_first"] = policy.enable_chunked_prefill, policy.prefill_first
    pp["padded"], pp["last_arrived"] = policy.padded_prefill_budget, policy.preempt_victim == "last_arrived"
    pp["decode_needs_free_block"] = policy.decode_needs_free_block
    return pp
