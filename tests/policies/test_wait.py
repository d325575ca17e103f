"""WAIT and Nested WAIT: the paper's worked example, hand-worked schedules, no-eviction properties."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsched import Decision, LinearCost, Simulator, UnitTime, Workload
from kvsched.bounds.fluid import fluid_bound
from kvsched.errors import ConfigError
from kvsched.policies import Policy, PolicyTags, make
from kvsched.policies.wait import (nested_thresholds, nested_wait_memory_tokens, segment_survival,
                                   wait_memory_tokens, wait_thresholds)
from kvsched.workload.typed import RequestType, TypeMix, parse_mix, synthesize_typed


from kvsched.experiments.fluid_example import PaperFCFS  # noqa: E402  (the paper's FCFS, R4)


def test_worked_example_fcfs_loses_throughput_and_wait_does_not():
    # l = l' = 1, λ = 4, unit-time batches (d0 = 1, d1 = 0): X = 4·2·1.5 = 12, τ* = 1, M* = 12.
    mix = parse_mix("p1d1@4")
    cost = LinearCost(1.0, 0.0)
    bound = fluid_bound(mix, cost)
    assert (bound.memory_tokens, bound.iteration_time, bound.num_prompts_per_stage) == (12, 1, (4,))
    workload = synthesize_typed(mix, 2000, np.random.default_rng(1))
    sim = Simulator(cost, kv_capacity_tokens=12)
    wait = sim.run(workload, make("wait", thresholds="4")).summary()
    fcfs = sim.run(workload, PaperFCFS()).summary()
    assert wait.num_evictions == 0
    assert wait.throughput_requests_per_s >= 0.97 * mix.total_rate
    loss = 1 - fcfs.throughput_requests_per_s / wait.throughput_requests_per_s
    assert 0.12 <= loss <= 0.25
    assert fcfs.num_evictions > 0


def _run(policy, workload, capacity, cost=UnitTime()):
    return Simulator(cost, capacity, record_iterations=True).run(workload, policy)


def test_wait_waits_for_its_threshold_then_batches_eligible_types_only():
    # Thresholds 2 for type 0 (p2d1) and type 1 (p3d1). Arrivals: type 0 and type 1 at t=0, type 0
    # at t=1.5 and t=10. At t=0 nothing is eligible: idle until t=1.5, when type 0 has 2 waiting →
    # one batch of both prefills; type 1 keeps waiting. Then type 0's stage-0 queue is empty, so its
    # decodes pause too, until the last arrival (t=10): with none to come, everything drains.
    w = Workload.build([0, 0, 1.5, 10], [2, 3, 2, 2], [2, 2, 2, 2], type_id=[0, 1, 0, 0])
    result = _run(make("wait", thresholds="2/2"), w, capacity=100)
    first, second = result.iterations[:2]
    assert first.start_time == 1.5 and first.num_tokens == {0: 2, 2: 2}
    assert second.start_time == 10 and second.num_tokens == {0: 1, 2: 1, 1: 3, 3: 2}
    assert result.summary().num_finished == 4


def test_wait_without_drain_stalls_and_says_so():
    from kvsched.errors import StalledError
    w = Workload.build([0.0], [2], [2], type_id=[0])
    with pytest.raises(StalledError):
        _run(make("wait", thresholds="2", drain=False), w, capacity=100)


def test_wait_caps_every_stage_fifo():
    # Threshold 1: one prompt per stage and batch. Three p1d2 prompts at t=0: the batches are
    # staggered like a pipeline, FIFO by arrival.
    w = Workload.build([0, 0, 0], [1, 1, 1], [3, 3, 3], type_id=[0, 0, 0])
    its = _run(make("wait", thresholds="1"), w, capacity=100).iterations
    assert [it.num_tokens for it in its[:4]] == [{0: 1}, {0: 1, 1: 1}, {0: 1, 1: 1, 2: 1},
                                                 {1: 1, 2: 1}]


def test_wait_overflow_evicts_last_admitted_and_restarts_from_stage_zero():
    # Capacity 5 with threshold 2 for p2d2 (M^π = 2·(2+3+4) = 18): overflow must be handled.
    w = Workload.build([0, 0, 0, 0], [2] * 4, [3] * 4, type_id=[0] * 4)
    result = _run(make("wait", thresholds="2"), w, capacity=5)
    s = result.summary()
    assert s.num_finished == 4 and s.num_evictions > 0
    assert all(it.kv_used_tokens <= 5 for it in result.iterations)
    # A restarted prompt recomputes its prompt alone first (stage 0 holds l = 2 tokens).
    evicted = next(i for i, it in enumerate(result.iterations) if it.evicted)
    victim = result.iterations[evicted].evicted[0]
    later = [it.num_tokens[victim] for it in result.iterations[evicted:] if victim in it.num_tokens]
    assert later[0] == 2 and set(later[1:]) == {1}


def test_wait_requires_typed_requests():
    w = Workload.build([0.0], [2], [2])
    with pytest.raises(ConfigError, match="type_id"):
        _run(make("wait", thresholds="1"), w, capacity=100)


def test_derived_thresholds_and_memory_by_hand():
    mix = parse_mix("p512d20@0.7+p512d50@0.3")
    # Σ_j n_j (l'_j + 1) = tl with n_j ∝ λ_j: weight 0.7·21 + 0.3·51 = 30 → n = tl·(0.7, 0.3)/30.
    assert wait_thresholds(mix, 300) == (7, 3)
    assert wait_thresholds(mix, 100, "ceil") == (3, 1)
    assert wait_memory_tokens(mix, (7, 3)) == 7 * (21 * 512 + 210) + 3 * (51 * 512 + 1275)
    assert make("wait", types="p512d20@0.7+p512d50@0.3", tl=300).resolved_thresholds() == (7, 3)


def test_nested_thresholds_by_hand():
    # Ends 1/3: segment 1 = stages 0..1 (2 stages), segment 2 = stages 2..3 (2 stages).
    # p_1 = 0.5 → q_1 = 0.55; n_1·(2 + 2·0.55) = 31 → n_1 = 10, n_2 = 5.5 → 5 (floor).
    assert nested_thresholds((1, 3), (0.5,), 31) == (10, 5)
    mix = TypeMix((RequestType(4, 1, 1.0), RequestType(4, 3, 1.0)))
    assert segment_survival(mix, (1, 3)) == (0.5,)
    # Bound: seg 1: 10·((4+0) + (4+1)) = 90; seg 2: 5·((4+2) + (4+3)) = 65; boundary 4·(4+1) = 20.
    assert nested_wait_memory_tokens((1, 3), (10, 5), max_prompt_tokens=4, max_decode_stages=3) == 175


def test_nested_wait_gates_later_segments_on_the_nested_condition():
    # Ends 0/5: segment 1 = stage 0 only, segment 2 = stages 1..5; thresholds 2/1.
    # One p1d2 prompt at t=0 → nothing (2 needed); second at t=1 → both prefilled in one batch.
    w = Workload.build([0, 1], [1, 1], [3, 3])
    its = _run(make("nested-wait", segment_ends="0/5", thresholds="2/1"), w, capacity=100).iterations
    assert its[0].start_time == 1 and its[0].num_tokens == {0: 1, 1: 1}
    # Afterwards segment 1's queue is empty (< 2): segment 2 may not run until arrivals end
    # (then drain): here none are to come, so it drains with its per-stage cap 1.
    assert its[1].num_tokens == {0: 1}


# --------------------------------------------------------------------------- properties

def _mixes():
    t = st.builds(RequestType, st.integers(1, 6), st.integers(0, 6), st.sampled_from([0.5, 1.0, 2.0]))
    return st.lists(t, min_size=1, max_size=3).map(lambda ts: TypeMix(tuple(ts)))


@settings(max_examples=200, deadline=None)
@given(mix=_mixes(), data=st.data())
def test_wait_never_evicts_when_memory_covers_its_m_pi(mix, data):
    n = tuple(data.draw(st.integers(1, 4)) for _ in mix.types)
    extra = data.draw(st.integers(0, 5))
    seed = data.draw(st.integers(0, 10**6))
    d1 = data.draw(st.sampled_from([0.0, 0.01, 0.05]))
    workload = synthesize_typed(mix, data.draw(st.integers(1, 40)), np.random.default_rng(seed))
    capacity = wait_memory_tokens(mix, n) + extra
    result = Simulator(LinearCost(0.2, d1), capacity).run(workload, make("wait", thresholds="/".join(map(str, n))))
    s = result.summary()
    assert s.num_evictions == 0 and s.num_finished == len(workload)
    assert result.kv_peak_tokens <= wait_memory_tokens(mix, n)


def _nested_classes(draws: list[int], n: tuple[int, int, int]) -> list[int]:
    """Demote classes so that every n_{k−1} consecutive survivors into segment k−1 hold at most
    n_k survivors into segment k (class c survives into segments 1..c)."""
    classes: list[int] = []
    for c in draws:
        for k in (2, 3):
            if c >= k:
                alive = [x for x in classes if x >= k - 1][-(n[k - 2] - 1):] if n[k - 2] > 1 else []
                if sum(x >= k for x in alive) >= n[k - 1]:
                    c = k - 1
        classes.append(c)
    return classes


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_nested_wait_never_evicts_when_memory_covers_its_m_pi(data):
    e1 = data.draw(st.integers(0, 3))
    e2 = e1 + data.draw(st.integers(1, 3))
    ends = (e1, e2)
    n1 = data.draw(st.integers(1, 4))
    n2 = data.draw(st.integers(1, n1))
    n3 = data.draw(st.integers(1, n2))
    num = data.draw(st.integers(1, 40))
    classes = _nested_classes(data.draw(st.lists(st.integers(1, 3), min_size=num, max_size=num)),
                              (n1, n2, n3))
    # Class 1 finishes in segment 1, 2 in segment 2, 3 past e2 (the open last segment holds it).
    low = {1: 0, 2: e1 + 1, 3: e2 + 1}
    high = {1: e1, 2: e2, 3: e2 + 3}
    stages = [data.draw(st.integers(low[c], high[c])) for c in classes]
    prompts = data.draw(st.lists(st.integers(1, 5), min_size=num, max_size=num))
    gaps = data.draw(st.lists(st.sampled_from([0.0, 0.1, 0.5, 2.0]), min_size=num, max_size=num))
    workload = Workload.build(np.cumsum(gaps), prompts, np.asarray(stages) + 1)
    # Three segments: e1, e2 and the open one (stages past e2, cap n3).
    seg_ends = f"{e1}/{e2}/{e2 + 3}"
    bound = nested_wait_memory_tokens((e1, e2, e2 + 3), (n1, n2, n3), max_prompt_tokens=max(prompts),
                                      max_decode_stages=max(stages))
    policy = make("nested-wait", segment_ends=seg_ends, thresholds=f"{n1}/{n2}/{n3}")
    result = Simulator(LinearCost(0.2, 0.01), bound).run(workload, policy)
    s = result.summary()
    assert s.num_evictions == 0 and s.num_finished == num
    assert result.kv_peak_tokens <= bound


def test_fluid_tl_by_hand():
    from kvsched.policies.wait import fluid_tl
    mix = parse_mix("p1d1@4")
    cost = LinearCost(0.5, 1 / 24)                       # τ* = 1, Σ λ (l' + 1) = 8
    assert fluid_tl(mix, cost) == pytest.approx(8)
    assert wait_thresholds(mix, fluid_tl(mix, cost)) == (4,)       # n = τ*·λ
    assert fluid_tl(mix, cost, 10) == pytest.approx(10 * 8 / 12)   # M^π = tl·12/8 ≤ C = 10


def test_fluid_thresholds_round_up_unless_memory_forbids():
    from kvsched.policies.wait import fluid_thresholds
    mix = parse_mix("p1d1@3")
    cost = LinearCost(0.5, 1 / 24)                # X = 9, τ* = 0.5/(1 − 0.375) = 0.8, τ*·λ = 2.4
    assert fluid_thresholds(mix, cost) == (3,)
    assert fluid_thresholds(mix, cost, 7.5) == (2,)   # tl capped at 7.5·6/9 = 5 → 2.5; 3·3 > 7.5


def test_wait_chunks_a_prompt_longer_than_the_token_budget():
    # Budget 2, threshold 1: the p5 prompt's stage 0 spans three iterations (2 + 2 + 1, the last
    # emitting token 1), then its decode stage. Request 1 (p1, arrived at t=0.5) is admitted once
    # the budget has room: after request 0's prompt, in arrival order.
    w = Workload.build([0, 0.5], [5, 1], [2, 2], type_id=[0, 0])
    sim = Simulator(UnitTime(), 100, max_num_batched_tokens=2, record_iterations=True)
    result = sim.run(w, make("wait", thresholds="1"))
    assert [it.num_tokens for it in result.iterations] == [{0: 2}, {0: 2}, {0: 1}, {0: 1, 1: 1},
                                                           {1: 1}]
    assert result.summary().num_finished == 2


def test_nested_wait_chunks_a_prompt_longer_than_the_token_budget():
    w = Workload.build([0], [7], [2])
    sim = Simulator(UnitTime(), 100, max_num_batched_tokens=3, record_iterations=True)
    result = sim.run(w, make("nested-wait", segment_ends="1/3", thresholds="1/1"))
    assert [it.num_tokens for it in result.iterations] == [{0: 3}, {0: 3}, {0: 1}, {0: 1}]


_POLICIES = {
    "wait": lambda t: make("wait", thresholds="2/1"),
    "nested-wait": lambda t: make("nested-wait", segment_ends="1/3", thresholds="2/1"),
    "separate-threshold": lambda t: make("separate-threshold", threshold=t),
}


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(_POLICIES)), budget=st.integers(1, 64),
       threshold=st.integers(1, 3), separate=st.booleans(),
       requests=st.lists(st.tuples(st.floats(0, 5), st.integers(1, 80), st.integers(1, 6),
                                   st.integers(0, 1)), min_size=1, max_size=8))
def test_budgeted_policies_never_stall_nor_break_the_budget(name, budget, threshold, separate,
                                                            requests):
    arrival, prompt, output, type_id = map(list, zip(*requests))
    w = Workload.build(arrival, prompt, output, type_id=type_id)
    sim = Simulator(UnitTime(), 10_000, max_num_batched_tokens=budget, record_iterations=True,
                    separate_batching=separate and name == "separate-threshold")
    result = sim.run(w, _POLICIES[name](threshold))     # raises on a stall or an infeasible batch
    assert result.summary().num_finished == len(requests)
    assert all(sum(it.num_tokens.values()) <= budget for it in result.iterations)
