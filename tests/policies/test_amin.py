"""A_max, A_min and H-SF (Chen, Ye, Zhou, arXiv 2508.14544).

Hand-worked examples in the papers' model (UnitTime, EMITTED: s + j while emitting token j,
block size 1); "round t memory" is the KV after round t's tokens.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_helpers import finish, instances, paper_sim, run, workload

from kvsched import KVConvention, LinearCost, Simulator, UnitTime, default_workload
from kvsched.errors import ConfigError
from kvsched.policies import make
from kvsched.policies.registry import resolve
from kvsched.workload.predictors import apply_predictor

# r0: s=2 o=2 [1, 4]; r1: s=2 o=3 [1, 4]; r2: s=3 o=1 [1, 2].
ROWS = [(2, 2), (2, 3), (3, 1)]
INTERVALS = dict(predicted_lo=[1, 1, 1], predicted_hi=[4, 4, 2])


def test_amax_hand_worked():
    """A_max uses u: order r2 (2), r0 (4, id 0), r1 (4, id 1); M = 10.
    Round 0: r2 4,5 (r0..r1); r0 3,4,5,6 (r0..r3): r0 7, r1 9, r3 6 → ok; r1 +3 in r0 = 10 but
             r1: 5+4+4 = 13 → stop. Actual memory 7; r2 finishes (1).
    Round 1: r0 (4, 5, 6 predicted in r1..r3); r1 3..6 in r1..r4: r3 6+5 = 11 → no. Memory 4;
             r0 finishes (2) — earlier than its u.
    Round 2: r1 alone: 3, 4, 5. Finish r0 2, r1 5, r2 1 → total 8."""
    w = workload(ROWS, **INTERVALS)
    result, memory = run(paper_sim(10), w, make("amax"))
    assert memory == [7, 4, 3, 4, 5]
    assert finish(result) == [2, 5, 1]


def test_hsf_hand_worked():
    """H-SF uses o: order r2 (1), r0 (2), r1 (3); M = 10.
    Round 0: r2 4 (r0); r0 3, 4; r1 3, 4, 5 → r0 10, r1 8, r2 5 → all start.
    Memory 10, 8, 5. Finish r0 2, r1 3, r2 1 → total 6."""
    w = workload(ROWS)
    result, memory = run(paper_sim(10), w, make("hsf"))
    assert memory == [10, 8, 5]
    assert finish(result) == [2, 3, 1]
    assert resolve("hsf").tags.clairvoyant and not resolve("amin").tags.clairvoyant


def test_amin_hand_worked_no_eviction():
    """A_min uses ℓ = 1 for all: order r0, r1 (prompt 2), r2 (prompt 3); M = 10.
    Round 0: each predicted to finish in round 0: 3 + 3 + 4 = 10 → all start. r2 finishes (1).
    Round 1: r0, r1 reached ℓ̃ = 1 → ℓ̃ = 2: 4 + 4 = 8. r0 finishes (2).
    Round 2: r1 ℓ̃ → 3: 5, finishes (3). Memory 10, 8, 5: the same schedule as H-SF here."""
    w = workload(ROWS, **INTERVALS)
    result, memory = run(paper_sim(10), w, make("amin"))
    assert memory == [10, 8, 5]
    assert finish(result) == [2, 3, 1]
    assert result.num_evictions.sum() == 0


@pytest.mark.parametrize("rule", ["generated+1", "double"])
def test_amin_hand_worked_eviction(rule):
    """r0: s=2 o=3, r1: s=2 o=3, r2: s=1 o=1, all ℓ = 1; M = 9.
    Round 0: 3 + 3 + 2 = 8 ≤ 9 → all start; r2 finishes (1).
    Round 1: ℓ̃ → 2 (both rules): 4 + 4 = 8.
    Round 2: ℓ̃ → 3 (generated + 1) or 4 (double): 5 + 5 = 10 > 9 → evict the least advanced; both
             generated 2 → tie → the latest admitted, r1. r0 5, finishes (3).
    Round 3: r1 (2 tokens kept, its raised ℓ̃) recomputes 4 tokens, emits token 3: KV 5; finishes (4).
    Memory 8, 8, 5, 5; one eviction."""
    w = workload([(2, 3), (2, 3), (1, 1)], predicted_lo=[1, 1, 1], predicted_hi=[9, 9, 9])
    result, memory = run(paper_sim(9), w, make("amin", refine_rule=rule))
    assert memory == [8, 8, 5, 5]
    assert finish(result) == [3, 4, 1]
    assert result.num_evictions.tolist() == [0, 1, 0]


def test_amin_refinement_rules():
    """ℓ̃ = 2 and 5 tokens generated: g+1 → 6; double 2→4→8; ×1.5: 2→3→5→8; ×1.1 (at least +1):
    2→3→4→5→6."""
    from kvsched.policies.amin import AMin

    class Stub:
        request_id, num_output_tokens, predicted_lo = 0, 5, 2

    for rule, factor, expect in [("generated+1", 1.0, 6), ("double", 1.0, 8), ("multiply", 0.5, 8),
                                 ("multiply", 0.1, 6)]:
        policy = AMin(refine_rule=rule, refine_factor=factor)
        policy.reset()
        policy.refine(None, Stub())
        assert policy._lower[0] == expect, (rule, factor)


def test_amin_and_amax_need_intervals():
    w = workload(ROWS, predicted_output_tokens=[1, 2, 3])
    for name, column in [("amin", "predicted_lo"), ("amax", "predicted_hi")]:
        with pytest.raises(ConfigError, match=column):
            paper_sim(10).run(w, make(name))


# --------------------------------------------------------------------------- properties

@settings(max_examples=200, deadline=None)
@given(inst=instances(), convention=st.sampled_from(list(KVConvention)), block=st.sampled_from([1, 2, 4]))
def test_amin_with_exact_intervals_is_hsf(inst, convention, block):
    rows, arrivals, capacity = inst
    w = apply_predictor(workload(rows, arrivals), "exact")
    sim = Simulator(UnitTime(), capacity, block_size=block, kv_convention=convention, record_iterations=True)
    amin, hsf = sim.run(w, make("amin")), sim.run(w, make("hsf"))
    assert [it.num_tokens for it in amin.iterations] == [it.num_tokens for it in hsf.iterations]
    assert np.array_equal(amin.finish_time, hsf.finish_time, equal_nan=True)
    assert amin.num_evictions.sum() == 0


@settings(max_examples=200, deadline=None)
@given(inst=instances(), widen=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=10,
                                         max_size=10),
       convention=st.sampled_from(list(KVConvention)), block=st.sampled_from([1, 2, 4]))
def test_amax_never_evicts_when_upper_bounds_hold(inst, widen, convention, block):
    rows, arrivals, capacity = inst
    lo = [max(1, o - widen[i][0]) for i, (_, o) in enumerate(rows)]
    hi = [o + widen[i][1] for i, (_, o) in enumerate(rows)]
    w = workload(rows, arrivals, predicted_lo=lo, predicted_hi=hi)
    sim = Simulator(UnitTime(), capacity, block_size=block, kv_convention=convention, record_iterations=True)
    result = sim.run(w, make("amax"))
    assert result.num_evictions.sum() == 0
    assert all(it.kv_used_tokens <= capacity for it in result.iterations)
    amin = sim.run(w, make("amin"))               # A_min may evict, but never overflows
    assert np.all(np.isfinite(amin.finish_time) | amin.rejected)


# --------------------------------------------------------------------------- the compare command, via the API

@pytest.mark.parametrize("convention, block", [(KVConvention.COMPUTED, 16), (KVConvention.EMITTED, 1)])
def test_compare_equivalent_runs_on_default_workload(convention, block):
    """`kvsched compare --policies vllm,sarathi,mcsf,amax,amin,hsf --predictor interval:alpha=0.5`."""
    w = apply_predictor(default_workload(150), "interval:alpha=0.5", seed=0)
    sim = Simulator(LinearCost(0.01, 2e-7), 16492, block_size=block, kv_convention=convention)
    for name in ["vllm", "sarathi", "mcsf", "amax", "amin", "hsf"]:
        summary = sim.run(w, make(name), seed=0).summary()
        assert summary.num_finished == 150, name
        assert summary.peak_kv_utilization <= 1.0
