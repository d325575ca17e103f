"""The engine's fast path (DESIGN.md §4): advancing a stable decode batch many iterations at once.

A *pure decode step* is a decision in which every resident request is a decode (all its known
tokens but the newest are computed) and gets exactly 1 token, no waiting request is scheduled and
nothing is evicted. Run for k iterations, such a batch changes only by +1 KV token per request per
iteration, so everything the engine needs is a function of k:

- request i, holding ``h_i`` KV tokens at the boundary, holds ``h_i + k + 1`` after iteration k
  (0-based), under both KV conventions; in blocks, ``ceil((h_i + k + 1) / block_size)``;
- iteration k's batch is ``BatchStats(num_decode_seqs=B, decode_context_tokens=C0 + k·B)``;
- request i emits its last token in iteration ``r_i - 1`` (``r_i`` = output tokens still to come).

The policy contract (`PolicyTags.event_stable`) is documented in `kvsched.engine`; this module holds
the arithmetic, free of engine state, so it can be tested on its own.

Exactness. The engine's clock is a float accumulated one iteration at a time, and an arrival is seen
at the first boundary whose time is >= its arrival time, so a closed-form sum of the times (which
rounds differently) could see an arrival one iteration early or late. The fast path therefore
evaluates each iteration's duration with the same floating-point operations as
``cost.iteration_time`` (vectorised) and accumulates them left to right with ``np.add.accumulate``
(a sequential fold): times, busy time and KV token-seconds are bit-identical to the reference loop.
The arithmetic series of `LinearCost` is still what makes that cheap: durations are
``d0 + d1 · (C0 + k·B)``, one vector expression.

Cost models. ``decode_run_durations`` uses, in order: the model's own
``decode_run_durations(num_decode_seqs, decode_context_tokens, num_iterations)`` method if it has
one (the `DecodeRunCost` protocol — a calibrated model whose time depends on the decode sequences and
their context tokens should provide it, returning exactly what ``iteration_time`` would for each
iteration); built-in vector forms for `UnitTime` and `LinearCost`; otherwise a loop calling
``iteration_time`` once per iteration (still far cheaper than a policy call per iteration).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from .cost import BatchStats, CostModel, LinearCost, UnitTime


@runtime_checkable
class DecodeRunCost(Protocol):
    """A cost model that can price a run of pure decode iterations at once.

    ``decode_run_durations(B, C0, n)[k]`` must equal (bit for bit, for the fast path to stay exact)
    ``iteration_time(BatchStats(num_decode_seqs=B, decode_context_tokens=C0 + k * B))``.
    """

    def decode_run_durations(self, num_decode_seqs: int, decode_context_tokens: int,
                             num_iterations: int) -> np.ndarray: ...


def decode_run_durations(cost: CostModel, num_decode_seqs: int, decode_context_tokens: int,
                         num_iterations: int) -> np.ndarray:
    """Durations (float64, seconds) of `num_iterations` pure decode iterations.

    Iteration k has `num_decode_seqs` decodes attending to ``decode_context_tokens + k ·
    num_decode_seqs`` context tokens in total (each decode's context grows by one per iteration).
    """
    method = getattr(cost, "decode_run_durations", None)
    if method is not None:
        return np.asarray(method(num_decode_seqs, decode_context_tokens, num_iterations),
                          dtype=np.float64)
    if type(cost) is UnitTime:
        return np.ones(num_iterations)
    if type(cost) is LinearCost:
        # Same operations as LinearCost.iteration_time: d0 + d1 * float(kv_tokens).
        context = decode_context_tokens + num_decode_seqs * np.arange(num_iterations, dtype=np.int64)
        return cost.d0 + cost.d1 * context.astype(np.float64)
    return np.array([float(cost.iteration_time(BatchStats(
        num_decode_seqs=num_decode_seqs,
        decode_context_tokens=decode_context_tokens + k * num_decode_seqs)))
        for k in range(num_iterations)], dtype=np.float64)


def accumulate(start: float, values: np.ndarray) -> np.ndarray:
    """``[start, start + v0, (start + v0) + v1, ...]``: a left fold, as ``x += v`` in a loop."""
    out = np.empty(len(values) + 1, dtype=np.float64)
    out[0] = start
    out[1:] = values
    return np.add.accumulate(out)


def block_gaps(held_tokens: list[int], block_size: int) -> list[int]:
    """Free token slots in each request's last block, sorted (0 when the block is full)."""
    return sorted((-h) % block_size for h in held_tokens)


def first_overflow_iteration(sorted_gaps: list[int], num_free_blocks: int, block_size: int) -> int:
    """First iteration k (0-based) of a pure decode run whose KV would exceed the free blocks.

    Request i first needs a new block in iteration ``g_i`` (its gap), then every `block_size`
    iterations, so by iteration ``k = m · block_size + r`` (0 <= r < block_size) the batch needs
    ``m · B + #{g_i <= r}`` new blocks. The answer is the smallest k where that exceeds the free
    blocks: the (F + 1)-th smallest crossing time.
    """
    num_seqs = len(sorted_gaps)
    wanted = num_free_blocks + 1
    m = (wanted - 1) // num_seqs
    return m * block_size + sorted_gaps[wanted - m * num_seqs - 1]


def new_blocks_by_iteration(sorted_gaps: list[int], block_size: int, num_iterations: int) -> np.ndarray:
    """New blocks the batch holds after each iteration k < num_iterations (nondecreasing)."""
    k = np.arange(num_iterations, dtype=np.int64)
    m, r = np.divmod(k, block_size)
    return m * len(sorted_gaps) + np.searchsorted(np.asarray(sorted_gaps, dtype=np.int64), r,
                                                  side="right")
