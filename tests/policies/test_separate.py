"""Separate batching (`Simulator(separate_batching=True)`) and the `separate-threshold` policy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsched import LinearCost, Simulator, UnitTime, Workload
from kvsched.bounds.fluid import fluid_bound
from kvsched.policies import make
from kvsched.policies.separate import separate_threshold
from kvsched.workload.typed import parse_mix


def _run(threshold, workload, capacity=1000):
    sim = Simulator(UnitTime(), capacity, separate_batching=True, record_iterations=True)
    return sim.run(workload, make("separate-threshold", threshold=threshold))


def _kinds(result, workload):
    """'P' for a prefill iteration, 'D' for a decode iteration."""
    out = []
    for it in result.iterations:
        prompt = {rid: int(workload.num_prompt_tokens[rid]) for rid in it.num_tokens}
        out.append("P" if any(n == prompt[rid] for rid, n in it.num_tokens.items()) else "D")
    return "".join(out)


def test_prefill_batch_waits_for_the_threshold_while_decodes_run():
    # A p2 o5 request at t=0; two more at t=0.1 and t=0.2 (unit-time iterations).
    w = Workload.build([0, 0.1, 0.2], [2, 2, 2], [5, 5, 5])
    # Threshold 2: t=0 prefill (nothing to decode); t=1 two wait → prefill batch of both.
    r2 = _run(2, w)
    assert r2.iterations[1].num_tokens == {1: 2, 2: 2}
    assert _kinds(r2, w) == "PPDDDD"
    # Threshold 3: the two wait while request 0 decodes; they are prefilled once it finishes.
    r3 = _run(3, w)
    assert _kinds(r3, w) == "PDDDDPDDDD"
    assert r3.iterations[5].num_tokens == {1: 2, 2: 2}


def test_threshold_from_the_fluid_model_by_hand():
    # p1d1 at 4/s under LinearCost(0.5, 1/24): τ* = 1, so K = ⌈2·Λ·τ*⌉ = 8.
    assert separate_threshold(fluid_bound(parse_mix("p1d1@4"), LinearCost(0.5, 1 / 24))) == 8
    # p2d3@1+p4d1@2 under LinearCost(0.1, 0.01): τ* = 5/34, Λ = 3 → ⌈30/34⌉ = 1.
    assert separate_threshold(fluid_bound(parse_mix("p2d3@1+p4d1@2"), LinearCost(0.1, 0.01))) == 1


def test_overflow_in_a_decode_batch_evicts_the_last_admitted():
    # Two p3 o4 prompts admitted together hold 6 = capacity; their decodes cannot both grow.
    w = Workload.build([0, 0], [3, 3], [4, 4])
    result = _run(1, w, capacity=6)
    assert result.iterations[1].evicted == (1,)
    assert result.summary().num_finished == 2


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), threshold=st.integers(1, 6), capacity=st.integers(12, 60),
       num=st.integers(1, 30))
def test_never_mixes_and_always_finishes(seed, threshold, capacity, num):
    rng = np.random.default_rng(seed)
    w = Workload.build(np.cumsum(rng.exponential(0.5, num)), rng.integers(1, 6, num),
                       rng.integers(1, 6, num))
    sim = Simulator(LinearCost(0.1, 0.01), capacity, separate_batching=True)
    s = sim.run(w, make("separate-threshold", threshold=threshold)).summary()   # the engine checks
    assert s.num_finished == num


def test_bad_threshold():
    from kvsched.errors import ConfigError
    with pytest.raises(ConfigError):
        make("separate-threshold", threshold=0)


def test_prompt_longer_than_the_token_budget_is_chunked():
    # Budget 4: the 10-token prompt is prefilled as 4 + 4 + 2 (three prefill iterations); request 1
    # (arrived meanwhile, 3 tokens) fills the third iteration's budget (2) and finishes with 1.
    w = Workload.build([0, 0.5], [10, 3], [3, 2])
    sim = Simulator(UnitTime(), 1000, separate_batching=True, max_num_batched_tokens=4,
                    record_iterations=True)
    result = sim.run(w, make("separate-threshold", threshold=1))
    steps = [dict(it.num_tokens) for it in result.iterations]
    assert steps[:4] == [{0: 4}, {0: 4}, {0: 2, 1: 2}, {1: 1}]
    assert all(sum(s.values()) <= 4 for s in steps)
    assert result.summary().num_finished == 2


def test_decode_batches_are_capped_at_the_budget_fifo():
    # Five 1-token prompts at t=0, 3 outputs each, budget 2: prefills of 2, 2, 1, then decode
    # batches of at most 2, the earliest arrivals first.
    w = Workload.build([0, 0, 0, 0, 0], [1] * 5, [3] * 5)
    sim = Simulator(UnitTime(), 1000, separate_batching=True, max_num_batched_tokens=2,
                    record_iterations=True)
    result = sim.run(w, make("separate-threshold", threshold=1))
    steps = [dict(it.num_tokens) for it in result.iterations]
    assert steps[:3] == [{0: 1, 1: 1}, {2: 1, 3: 1}, {4: 1}]
    assert steps[3] == {0: 1, 1: 1}
    assert all(sum(s.values()) <= 2 for s in steps)
    assert result.summary().num_finished == 5
