"""The cost models' iteration time in numba, and how each model is packed for it.

`UnitTime`, `LinearCost` and `CalibratedCost` have a compiled form (`iteration_time` here repeats
their ``iteration_time`` with the same floating-point operations; tests/engine/test_compiled.py
compares every run bit for bit). Any other model runs on the Python engine.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ...cost.calibrated import MS, CalibratedCost
from ...cost.models import LinearCost, UnitTime
from .layout import CALIBRATED, LINEAR, UNIT

_i, _f = np.int64, np.float64
#: The scalars of a cost model (unused ones 0).
COST = np.dtype([
    ("kind", _i), ("d0", _f), ("d1", _f),                                        # LinearCost
    ("num_layers", _i), ("hidden_size", _i), ("has_all_reduce", _i), ("all_reduces_per_layer", _i),
    ("all_reduce_launch_ms", _f), ("a", _f), ("b", _f), ("c", _f), ("d", _f),    # prefill_coef
    ("batching_overhead", _f), ("context_scale", _f), ("overhead", _f),          # CalibratedCost
])

MODELS = (UnitTime, LinearCost, CalibratedCost)


def pack(cost):
    """(scalars, tables, decode values) of `cost`: the knots and values of linear, elementwise and
    all-reduce and the decode table's knots (dummies of the same types for the simpler models, so
    one compiled signature serves every model)."""
    c = np.zeros(1, dtype=COST)[0]
    dummy = np.array([0.0, 1.0])
    tables, dec = (dummy,) * 8, np.zeros((2, 2))
    if type(cost) is UnitTime:
        c["kind"] = UNIT
    elif type(cost) is LinearCost:
        c["kind"], c["d0"], c["d1"] = LINEAR, cost.d0, cost.d1
    else:
        ar = cost.all_reduce
        c["kind"], c["num_layers"], c["hidden_size"] = CALIBRATED, cost.num_layers, cost.hidden_size
        c["has_all_reduce"], c["all_reduces_per_layer"] = ar is not None, cost.all_reduces_per_layer
        c["all_reduce_launch_ms"] = cost.all_reduce_launch_time / MS
        c["a"], c["b"], c["c"], c["d"] = cost.prefill_coef
        c["batching_overhead"], c["context_scale"] = cost.attention_batching_overhead, cost.decode_context_scale
        c["overhead"] = cost.iteration_overhead_time
        arrays = [cost.linear.knots, cost.linear.values, cost.elementwise.knots, cost.elementwise.values,
                  ar.knots if ar is not None else dummy, ar.values if ar is not None else dummy,
                  cost.decode.batch_knots, cost.decode.context_knots]
        tables = tuple(np.asarray(x, dtype=np.float64) for x in arrays)
        dec = np.asarray(cost.decode.values, dtype=np.float64)
    return np.array([c], dtype=COST), tables, dec


@njit(cache=True)
def _segment(k, x):
    """(i, t): x lies at fraction t of knots k[i]..k[i + 1] (bisect_right, clipped to the end
    segments: BilinearTable.batch_segment and calibrated._interpolate)."""
    lo, hi = 0, k.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if x < k[mid]:
            hi = mid
        else:
            lo = mid + 1
    i = min(max(lo - 1, 0), k.shape[0] - 2)
    return i, (x - k[i]) / (k[i + 1] - k[i])


@njit(cache=True)
def _interpolate(k, v, x):
    """calibrated._interpolate."""
    i, t = _segment(k, x)
    return v[i] + t * (v[i + 1] - v[i])


@njit(cache=True)
def _clip(x):
    return x if x >= 0.0 else 0.0      # max(x, 0.0) as Python evaluates it


@njit(cache=True)
def _calibrated_time(c, tables, dec, pre_seqs, pre_tokens, pre_context, pre_work, dec_seqs, dec_context):
    """CalibratedCost.iteration_time: its `parts_ms`, added up as its `_seconds`."""
    tokens = pre_tokens + dec_seqs
    lin_k, lin_v, el_k, el_v, ar_k, ar_v, batch_k, ctx_k = tables
    linear = _clip(_interpolate(lin_k, lin_v, tokens))
    elementwise = _clip(_interpolate(el_k, el_v, tokens))
    all_reduce = 0.0
    if c.has_all_reduce:
        one = _interpolate(ar_k, ar_v, tokens * c.hidden_size * 2) + c.all_reduce_launch_ms
        all_reduce = c.all_reduces_per_layer * one
    all_reduce = _clip(all_reduce)
    prefill = 0.0
    n, p = pre_seqs, pre_tokens
    if n != 0 and p != 0:                             # _prefill_ms
        work, cached = pre_work, pre_context - p
        if n == 1:
            squares = float(p * p)
        elif cached == 0:
            squares = float(work)
        else:
            squares = min(max(work - p * cached / n, p * p / n), float(p * p))
        ms = c.a + c.b * p + c.c * max(work - squares, 0.0) + c.d * squares
        prefill = ms * (1 + c.batching_overhead * (n > 1))
    prefill = _clip(prefill)
    decode = 0.0
    m = dec_seqs
    if m:                                             # _decode_attention_ms
        i, t = _segment(batch_k, m)
        low0 = _interpolate(ctx_k, dec[i], 0.0)
        base = low0 + t * (_interpolate(ctx_k, dec[i + 1], 0.0) - low0)
        x = dec_context / m
        low = _interpolate(ctx_k, dec[i], x)
        high = _interpolate(ctx_k, dec[i + 1], x)
        decode = _clip((base + c.context_scale * ((low + t * (high - low)) - base))
                       * (1 + c.batching_overhead * (m > 1)))
    return ((((linear + elementwise) + prefill) + decode) + all_reduce) * c.num_layers * MS + c.overhead


@njit(cache=True)
def iteration_time(cost, pre_seqs, pre_tokens, pre_context, pre_work, dec_seqs, dec_context):
    """The iteration time of a batch under `cost` = (scalars, tables, decode values)."""
    scalars, tables, dec = cost
    c = scalars[0]
    if c.kind == UNIT:
        return 1.0
    if c.kind == LINEAR:
        return c.d0 + c.d1 * (pre_context + dec_context)
    return _calibrated_time(c, tables, dec, pre_seqs, pre_tokens, pre_context, pre_work, dec_seqs, dec_context)
