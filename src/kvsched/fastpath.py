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
one (the `DecodeRunCost` protocol: a cost model whose decode time depends on the decode sequences
and their context tokens provides it, returning exactly what ``iteration_time`` would for each
iteration); built-in vector forms for `UnitTime`, `LinearCost` and `CalibratedCost` (whose batch
token count is fixed during a run, so only its decode-attention table lookup varies); otherwise a
loop calling ``iteration_time`` once per iteration (still far cheaper than a policy call per
iteration). The engine prices runs through a `DecodeRunPricer`, which spot-checks any vector form
other than the two exact-by-construction ones against ``iteration_time`` and falls back to the
loop on a difference.
"""

from __future__ import annotations

import bisect
from typing import Protocol, runtime_checkable

import numpy as np

from .cost import BatchStats, CostModel, LinearCost, UnitTime
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
                         num_iterations: int, memo: dict | None = None) -> np.ndarray:
    """Durations (float64, seconds) of `num_iterations` pure decode iterations.

    Iteration k has `num_decode_seqs` decodes attending to ``decode_context_tokens + k ·
    num_decode_seqs`` context tokens in total (each decode's context grows by one per iteration).
    `memo` (a dict kept for one simulation) caches terms that depend on the batch size only.
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
    if type(cost).__name__ == "CalibratedCost" and type(cost).__module__ == "kvsched.calibration":
        return _calibrated_decode_run(cost, num_decode_seqs, decode_context_tokens, num_iterations,
                                      {} if memo is None else memo)
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

    `UnitTime` and `LinearCost` are exact by construction (and tested). Any other vector form
    (a model's own ``decode_run_durations``, or the built-in one for `CalibratedCost`) is
    spot-checked against ``iteration_time`` on the first and last iteration of the first
    `num_checks` runs it prices; on any difference the pricer falls back to the per-iteration loop
    for the rest of the simulation, so the fast path never trades exactness for speed.
    """

    def __init__(self, cost: CostModel, num_checks: int = 16) -> None:
        self.cost = cost
        exact = type(cost) in (UnitTime, LinearCost) and not hasattr(cost, "decode_run_durations")
        self.num_checks = 0 if exact else num_checks
        self.use_loop = False
        self.memo: dict = {}
        self.calibrated = (type(cost).__name__ == "CalibratedCost"
                           and type(cost).__module__ == "kvsched.calibration")

    def one(self, num_decode_seqs: int, decode_context_tokens: int) -> float:
        """The duration of one pure decode iteration, in plain Python (short stretches, where a
        numpy call costs more than the arithmetic). Same value as ``iteration_time``."""
        cost = self.cost
        if type(cost) is LinearCost:
            return cost.d0 + cost.d1 * decode_context_tokens
        if type(cost) is UnitTime:
            return 1.0
        if self.calibrated and not self.use_loop:
            value = _calibrated_decode_one(cost, num_decode_seqs, decode_context_tokens, self.memo)
            if not self.num_checks:
                return value
            self.num_checks -= 1
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
        durations = decode_run_durations(*args, memo=self.memo)
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


def _interpolate_two(k: np.ndarray, rows: tuple[np.ndarray, np.ndarray], x: np.ndarray):
    """`kvsched.calibration._interpolate` of two rows on the same knots, elementwise over the
    nondecreasing `x`, with the same float operations (differences taken knot by knot)."""
    i = np.minimum(np.maximum(np.searchsorted(k, x, side="right") - 1, 0), len(k) - 2)
    if i[0] == i[-1]:                  # the usual case: the whole run between two knots
        i = int(i[0])
    t = (x - k[i]) / (k[i + 1] - k[i])
    return tuple(v[i] + t * (v[i + 1] - v[i]) for v in rows)


def _calibrated_terms(cost, n: int, memo: dict) -> tuple:
    """The terms of a calibrated pure decode iteration that depend on the batch size only."""
    if n not in memo:          # memo belongs to one simulation, hence to one cost model
        table = cost.decode
        linear, elementwise, prefill, _, all_reduce = cost._per_layer_ms(
            BatchStats(num_decode_seqs=n, decode_context_tokens=0))
        i = min(max(int(np.searchsorted(table.batch_knots, n, side="right")) - 1, 0),
                len(table.batch_knots) - 2)
        t = (n - table.batch_knots[i]) / (table.batch_knots[i + 1] - table.batch_knots[i])
        knots = np.asarray(table.context_knots, dtype=np.float64)
        rows = (np.asarray(table.values[i], dtype=np.float64), np.asarray(table.values[i + 1], dtype=np.float64))
        memo[n] = (linear, elementwise, prefill, all_reduce, knots, rows, t, table(n, 0.0),
                   (table.values[i], table.values[i + 1]))
    return memo[n]


def _calibrated_decode_one(cost, n: int, decode_context_tokens: int, memo: dict) -> float:
    """`_calibrated_decode_run` for one iteration, in plain Python floats (same operations)."""
    from .calibration import MS
    linear, elementwise, prefill, all_reduce, _, _, t, base, rows = _calibrated_terms(cost, n, memo)
    k = cost.decode.context_knots
    x = decode_context_tokens / n
    i = min(max(bisect.bisect_right(k, x) - 1, 0), len(k) - 2)
    u = (x - k[i]) / (k[i + 1] - k[i])
    low, high = (v[i] + u * (v[i + 1] - v[i]) for v in rows)
    decode = low + t * (high - low)
    ms = (base + cost.decode_context_scale * (decode - base)) * (1 + cost.attention_batching_overhead * (n > 1))
    ms = max(ms, 0.0)
    return (((0 + linear + elementwise) + prefill + ms) + all_reduce) * cost.num_layers * MS + cost.iteration_overhead_time


def _calibrated_decode_run(cost, num_decode_seqs: int, decode_context_tokens: int,
                           num_iterations: int, memo: dict) -> np.ndarray:
    """`CalibratedCost.iteration_time` over a run of pure decode iterations, vectorised.

    Only the decode-attention term varies (the batch's token count is fixed), and it is evaluated
    with the same operations in the same order, so the durations are bit-identical; the engine
    spot-checks that at run time (`DecodeRunPricer`) and falls back to the loop if a change in
    `kvsched.calibration` ever breaks it. (This belongs in `CalibratedCost.decode_run_durations`.)
    """
    from .calibration import MS
    n = num_decode_seqs
    linear, elementwise, prefill, all_reduce, knots, rows, t, base, _ = _calibrated_terms(cost, n, memo)
    context = (decode_context_tokens + n * np.arange(num_iterations, dtype=np.int64)) / n
    low, high = _interpolate_two(knots, rows, context)
    decode = (low + t * (high - low))
    ms = (base + cost.decode_context_scale * (decode - base)) * (1 + cost.attention_batching_overhead * (n > 1))
    ms = np.maximum(ms, 0.0)
    total = ((0 + linear + elementwise) + prefill + ms) + all_reduce
    return total * cost.num_layers * MS + cost.iteration_overhead_time
