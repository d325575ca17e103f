"""The engine's fast path (DESIGN.md §4): advancing a stable decode batch many iterations at once.

A *pure decode step* is a decision in which every resident request is a decode (all its known
tokens but the newest are computed) and gets exactly 1 token, no waiting request is scheduled and
nothing is evicted. Run for k iterations, such a batch changes only by +1 KV token per request per
iteration, so everything the engine needs is a function of k:

- request i, holding ``h_i`` KV tokens at the boundary, holds ``h_i + k + 1`` after iteration k
  (0-based), under both KV conventions; in blocks, ``ceil((h_i + k + 1) / block_size)``;
- iteration k's batch is ``BatchStats(num_decode_seqs=B, decode_context_tokens=C0 + k·B)``;
- request i emits its last token in iteration ``r_i - 1`` (``r_i`` = output tokens still to come).

The policy contract (`PolicyTags.event_stable`) is documented in `kvsched.engine.simulator`; this module holds
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
one (the `DecodeRunCost` protocol: a cost model whose decode time depends on the decode sequences
and their context tokens provides it, returning exactly what ``iteration_time`` would for each
iteration; `CalibratedCost` does); built-in vector forms for `UnitTime` and `LinearCost`; otherwise
a loop calling ``iteration_time`` once per iteration (still far cheaper than a policy call per
iteration). Short runs are priced one iteration at a time, with the model's
``decode_iteration_time(num_decode_seqs, decode_context_tokens)`` where it has one. The engine
prices runs through a `DecodeRunPricer`, which spot-checks any model-provided form against
``iteration_time`` and falls back to the loop on a difference.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..cost.models import BatchStats, CostModel, LinearCost, UnitTime
from .memory import block_gaps, first_overflow_iteration, new_blocks_by_iteration  # noqa: F401


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
    return loop_durations(cost, num_decode_seqs, decode_context_tokens, num_iterations)


def loop_durations(cost: CostModel, num_decode_seqs: int, decode_context_tokens: int,
                   num_iterations: int) -> np.ndarray:
    """`decode_run_durations` by calling ``cost.iteration_time`` once per iteration."""
    return np.array([float(cost.iteration_time(BatchStats(
        num_decode_seqs=num_decode_seqs,
        decode_context_tokens=decode_context_tokens + k * num_decode_seqs)))
        for k in range(num_iterations)], dtype=np.float64)


class DecodeRunPricer:
    """Prices runs of pure decode iterations for one simulation.

    `UnitTime` and `LinearCost` are exact by construction (and tested). A model's own forms
    (``decode_run_durations``, ``decode_iteration_time``) are spot-checked against
    ``iteration_time``: the first and last iteration of the first `num_checks` runs, and the
    first `num_checks` single iterations; on any difference the pricer falls back to the
    per-iteration loop for the rest of the simulation, so the fast path never trades exactness for
    speed.
    """

    def __init__(self, cost: CostModel, num_checks: int = 16) -> None:
        self.cost = cost
        exact = type(cost) in (UnitTime, LinearCost) and not hasattr(cost, "decode_run_durations")
        self.num_checks = self.num_one_checks = 0 if exact else num_checks
        self.use_loop = False
        self.decode_one = getattr(cost, "decode_iteration_time", None)

    def one(self, num_decode_seqs: int, decode_context_tokens: int) -> float:
        """The duration of one pure decode iteration, in plain Python (short stretches, where a
        numpy call costs more than the arithmetic). Same value as ``iteration_time``."""
        cost = self.cost
        if type(cost) is LinearCost:
            return cost.d0 + cost.d1 * decode_context_tokens
        if type(cost) is UnitTime:
            return 1.0
        if self.decode_one is not None and not self.use_loop:
            value = self.decode_one(num_decode_seqs, decode_context_tokens)
            if not self.num_one_checks:
                return value
            self.num_one_checks -= 1
            expected = float(cost.iteration_time(BatchStats(num_decode_seqs=num_decode_seqs,
                                                            decode_context_tokens=decode_context_tokens)))
            if value == expected:
                return value
            self.use_loop = True
        return float(cost.iteration_time(BatchStats(num_decode_seqs=num_decode_seqs,
                                                    decode_context_tokens=decode_context_tokens)))

    def __call__(self, num_decode_seqs: int, decode_context_tokens: int, num_iterations: int) -> np.ndarray:
        args = (self.cost, num_decode_seqs, decode_context_tokens, num_iterations)
        if self.use_loop:
            return loop_durations(*args)
        durations = decode_run_durations(*args)
        if self.num_checks:
            self.num_checks -= 1
            for k in {0, num_iterations - 1}:
                expected = float(self.cost.iteration_time(BatchStats(
                    num_decode_seqs=num_decode_seqs,
                    decode_context_tokens=decode_context_tokens + k * num_decode_seqs)))
                if durations[k] != expected:
                    self.use_loop = True
                    return loop_durations(*args)
        return durations


def accumulate(start: float, values: np.ndarray) -> np.ndarray:
    """``[start, start + v0, (start + v0) + v1, ...]``: a left fold, as ``x += v`` in a loop."""
    out = np.empty(len(values) + 1, dtype=np.float64)
    out[0] = start
    out[1:] = values
    return np.add.accumulate(out)
