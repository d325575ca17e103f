"""The future-memory family compiled (`kvsched.policies._future_memory`: `mcsf`, `mc-benchmark`,
`amax`, `amin`, `hsf`) without an engine token budget: the fields its kernel (`future_kernel`)
implements, their packing and the first estimates (as `kvsched.engine.compiled.vllm`)."""

from __future__ import annotations

import math

import numpy as np


FIELDS = {
    "rule": (("stop", "skip"), ("stop", "skip")),
    "protection": (None, (0.0, 0.2)),
    "evict_victim": (None, None),              # every order in VICTIM_ORDERS (checked by the policy)
    "chunking": (None, ("budget-left", "over-budget")),   # used only under a token budget: Python
}
AMIN_FIELDS = {**FIELDS, "refine_rule": (("generated+1", "double", "multiply"), ("generated+1", "double", "multiply")),
               "refine_factor": (None, (1.0, 1.5))}

# evict_victim (VICTIM_ORDERS' order), A_min's refine_rule
LEAST_PROGRESS, MOST_PROGRESS, NEWEST, LARGEST = range(4)
NO_REFINE, REFINE_NEXT, REFINE_DOUBLE, REFINE_MULTIPLY = range(4)

_i = np.int64
PARAMS = np.dtype([
    ("fcfs", _i),      # mc-benchmark: FCFS instead of the shortest-predicted-first key
    ("skip", _i),      # rule == "skip"
    ("cap", _i),       # the protected capacity in blocks, as FutureMemoryPolicy._admit
    ("victim", _i), ("refine", _i), ("refine_factor", np.float64),
])


def fields(policy_id: str) -> dict:
    return AMIN_FIELDS if policy_id == "amin" else FIELDS


def pack(policy, cap_blocks: int) -> np.ndarray:
    from ...policies._future_memory import VICTIM_ORDERS
    pp = np.zeros(1, dtype=PARAMS)
    pp["fcfs"] = policy.name == "mc-benchmark"
    pp["skip"] = policy.rule == "skip"
    pp["cap"] = math.floor((1.0 - policy.protection) * cap_blocks)
    pp["victim"] = VICTIM_ORDERS.index(policy.evict_victim)
    if policy.name == "amin":
        pp["refine"] = 1 + ("generated+1", "double", "multiply").index(policy.refine_rule)
        pp["refine_factor"] = policy.refine_factor
    return pp


def estimates(policy, workload) -> np.ndarray | None:
    """Each request's first estimate õ, as the policy's `estimate` gives it (None: a prediction
    the policy needs is missing, and the Python engine reports that)."""
    if policy.name == "hsf":
        return np.asarray(workload.true_output_tokens, dtype=np.int64)
    column = {"amax": workload.predicted_hi, "amin": workload.predicted_lo}.get(
        policy.name, workload.predicted_output_tokens)
    if column is None or not np.all(np.isfinite(np.asarray(column, dtype=np.float64))):
        return None
    if policy.name in ("amax", "amin"):          # max(1, int(value))
        return np.maximum(1, np.asarray(column).astype(np.int64))
    return np.maximum(1, np.ceil(np.asarray(column, dtype=np.float64))).astype(np.int64)   # point_estimate
