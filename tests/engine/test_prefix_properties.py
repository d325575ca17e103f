"""Engine invariants with prefix caching on, over random workloads whose prompts share tokens
(shared segments, multi-turn follow-ups naming their previous turn's answer) and every
default-constructible registered policy."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kvsched.cost.models import LinearCost, UnitTime
from kvsched.engine.memory import KVConvention
from kvsched.engine.simulator import Simulator
from kvsched.policies import make
from kvsched.workload.segments import PromptSegments
from kvsched.workload.synthetic import Workload

from policy_helpers import conformance_policies, livelocks_under_restart

POLICIES = conformance_policies()
EXAMPLES = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RECORDS = ("first_scheduled_time", "first_token_time", "finish_time", "num_evictions",
           "num_recomputed_tokens", "total_computed_tokens", "rejected", "num_cached_tokens",
           "num_lookup_tokens", "realized_arrival_time")


@st.composite
def sharing_workloads(draw, closed_loop=True):
    """Up to 8 requests whose prompts are 1-3 pieces from a pool of 3 contents (so prompts share
    prefixes); with `closed_loop`, a request may follow an earlier one: its prompt is the earlier
    prompt, then the earlier answer, then a new message."""
    n = draw(st.integers(1, 8))
    pieces: list[list[tuple[int, int]]] = []
    output = draw(st.lists(st.integers(1, 30), min_size=n, max_size=n))
    parent = [-1] * n
    for i in range(n):
        if closed_loop and i and draw(st.booleans()):
            j = draw(st.integers(0, i - 1))
            parent[i] = j
            answer = draw(st.integers(1, output[j]))
            pieces.append(pieces[j] + [(-(j + 1), answer), (10 + i, draw(st.integers(1, 12)))])
        else:
            ids = draw(st.lists(st.integers(0, 2), min_size=1, max_size=3))
            ids = [x for k, x in enumerate(ids) if k == 0 or x != ids[k - 1]]   # no repeated id
            pieces.append([(x, draw(st.integers(1, 24))) for x in ids])
    prompt = np.array([sum(length for _, length in p) for p in pieces])
    arrival = np.array(draw(st.lists(st.integers(0, 20), min_size=n, max_size=n)), float) / 3
    output = np.array(output)
    columns = dict(predicted_output_tokens=output.astype(float), predicted_lo=output,
                   predicted_hi=output, type_id=(output > 15).astype(int))
    if any(p >= 0 for p in parent):
        think = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
        columns.update(parent=np.array(parent), think_time=np.array(think, float) / 2)
        # a follow-up sorts after its previous turn
        arrival = np.maximum.accumulate(arrival)
    return Workload.build(arrival, prompt, output, segments=PromptSegments.from_lists(pieces),
                          **columns)


@st.composite
def caching_runs(draw, closed_loop=True):
    workload = draw(sharing_workloads(closed_loop))
    block = draw(st.sampled_from([1, 4, 16]))
    capacity = draw(st.integers(max(block, 16), 160))
    cost = draw(st.sampled_from([UnitTime(), LinearCost(0.01, 1e-3)]))
    budget = draw(st.sampled_from([None, None, 8, 32]))
    eviction = draw(st.sampled_from(["recompute", "recompute", "restart"]))
    sim = Simulator(cost, capacity, block_size=block, kv_convention=KVConvention.COMPUTED,
                    max_num_batched_tokens=budget, record_iterations=True, eviction=eviction,
                    prefix_caching=True)
    policy = draw(st.sampled_from(POLICIES))
    assume(not (eviction == "restart" and livelocks_under_restart(*policy)))
    return workload, sim, policy


def _run(sim, workload, policy, **changes):
    policy_id, params = policy
    return dataclasses.replace(sim, **changes).run(workload, make(policy_id, **params), seed=0)


@EXAMPLES
@given(caching_runs())
def test_with_caching_kv_in_use_stays_within_capacity_and_every_request_ends(data):
    workload, sim, policy = data
    result = _run(sim, workload, policy)
    assert all(it.kv_used_tokens <= result.kv_capacity_tokens for it in result.iterations)
    assert result.kv_peak_tokens <= result.kv_capacity_tokens
    finished = ~np.isnan(result.finish_time)
    assert np.all(finished ^ result.rejected)
    # a hit never covers a whole prompt (at least one token is computed), nor more than looked up
    done = ~result.rejected
    assert np.all(result.num_cached_tokens[done] <= result.num_lookup_tokens[done])
    assert np.all(result.total_computed_tokens[done] >= 1)


@EXAMPLES
@given(caching_runs())
def test_with_caching_follow_ups_arrive_a_think_time_after_their_previous_turn_finishes(data):
    workload, sim, policy = data
    result = _run(sim, workload, policy)
    if workload.parent is None:
        return
    for child in np.flatnonzero(workload.parent >= 0):
        previous = workload.parent[child]
        if result.rejected[previous]:
            assert result.rejected[child] and np.isnan(result.realized_arrival_time[child])
        else:
            assert result.realized_arrival_time[child] == (
                result.finish_time[previous] + workload.think_time[child])
            assert result.rejected[child] or result.first_scheduled_time[child] >= (
                result.realized_arrival_time[child])


@EXAMPLES
@given(caching_runs())
def test_with_caching_the_fast_path_gives_the_reference_loops_records(data):
    workload, sim, policy = data
    fast = _run(sim, workload, policy)
    reference = _run(sim, workload, policy, fast=False)
    for name in RECORDS:
        np.testing.assert_array_equal(getattr(fast, name), getattr(reference, name), err_msg=name)
    assert (fast.num_iterations, fast.busy_time, fast.kv_peak_tokens) == (
        reference.num_iterations, reference.busy_time, reference.kv_peak_tokens)
    assert [it.num_tokens for it in fast.iterations] == [it.num_tokens for it in reference.iterations]


@EXAMPLES
@given(caching_runs(closed_loop=False))
def test_with_every_prompt_distinct_caching_on_equals_caching_off(data):
    """Distinct prompts never hit (a request's own freed blocks aside: those hits are what caching
    changes on eviction, so runs with an eviction are compared only up to the first one)."""
    workload, sim, policy = data
    distinct = Workload.build(workload.arrival_time, workload.num_prompt_tokens,
                              workload.true_output_tokens,
                              predicted_output_tokens=workload.predicted_output_tokens,
                              predicted_lo=workload.predicted_lo, predicted_hi=workload.predicted_hi,
                              type_id=workload.type_id)
    on = _run(sim, distinct, policy)
    off = _run(sim, distinct, policy, prefix_caching=False)
    assume(on.num_evictions.sum() == 0 and off.num_evictions.sum() == 0)
    assert on.num_cached_tokens.sum() == 0
    for name in RECORDS[:7]:
        np.testing.assert_array_equal(getattr(on, name), getattr(off, name), err_msg=name)
    assert [it.num_tokens for it in on.iterations] == [it.num_tokens for it in off.iterations]
