"""The compiled engine's state, as numpy structured arrays with named fields (numpy only).

Every kernel reads and writes these records by name (``rq[r].computed``, ``e.now``), so the state
of a run is plain data that can stop after a number of iterations and resume (progress reports).

- `REQUEST`: one record per request (the workload's columns, then `kvsched.state.RequestState`'s
  counters, then the policies' per-request state, then the times; NaN = unset).
- `ENGINE`: the engine's counters and clock (one record).
- `SETTINGS`: the engine's settings (one record).

Request ids are the workload's row indices; the workload is sorted by arrival, so FCFS order
((arrival time, id)) is id order.
"""

from __future__ import annotations

import numpy as np

from ..result import token_gap_offsets

# request status (kvsched.state.Status)
NOT_ARRIVED, WAITING, RUNNING, FINISHED, REJECTED = 0, 1, 2, 3, 4
# kernel return codes: done, paused at the iteration limit, the Python engine would raise
# StalledError, a decision the Python engine would refuse (never expected)
DONE, PAUSED, STALLED, INVALID = 0, 1, 2, 3
# cost kinds
UNIT, LINEAR, CALIBRATED = 0, 1, 2

_i, _f = np.int64, np.float64
REQUEST = np.dtype([
    ("arrival", _f), ("prompt", _i), ("true_output", _i),
    ("status", _i), ("computed", _i), ("outputs", _i), ("total", _i), ("high_water", _i),
    ("recomputed", _i), ("evictions", _i),
    ("held", _i),          # KV blocks held
    ("seq", _i),           # admission sequence number
    ("evicting", _i),      # chosen as a victim in the decision being built
    ("estimate", _i), ("key_estimate", _i), ("size", _i),   # the future-memory policies' keys
    ("in_memory", _i), ("memory_base", _i), ("memory_end", _i),   # ... and their timeline entry
    ("gap_offset", _i),    # first slot of its token gaps in the gaps array (-1: none recorded)
    ("scheduled", _f), ("first_token", _f), ("finish", _f), ("last_token", _f),
])
ENGINE = np.dtype([
    ("next_arrival", _i), ("done", _i), ("iteration", _i), ("used", _i), ("peak", _i),
    ("num_running", _i), ("num_front", _i), ("queue_head", _i), ("queue_len", _i),
    ("queue_alive", _i), ("admit_seq", _i), ("pq_len", _i), ("num_entries", _i),
    ("now", _f), ("busy", _f), ("token_seconds", _f),
])
SETTINGS = np.dtype([
    ("cap_blocks", _i), ("block_size", _i),
    ("emitted", _i),          # 1 under KVConvention.EMITTED (the emitted token's KV counts)
    ("engine_budget", _i),    # -1: no engine token budget
    ("record_gaps", _i),
])


def requests(workload, record_gaps: bool) -> np.ndarray:
    """The `REQUEST` records of `workload` before the run (gap offsets when recording gaps)."""
    n = len(workload)
    rq = np.zeros(n, dtype=REQUEST)
    rq["arrival"] = workload.arrival_time
    rq["prompt"] = workload.num_prompt_tokens
    rq["true_output"] = workload.true_output_tokens
    for name in ("scheduled", "first_token", "finish", "last_token"):
        rq[name] = np.nan
    rq["gap_offset"] = token_gap_offsets(workload.true_output_tokens) if record_gaps else -1
    return rq
