"""The reference engine, driven by scripted decisions (engine.py's docstring is the spec).

Token rule (vLLM V1): a request with prompt s and g generated tokens knows s + g tokens; an
iteration computing the last uncomputed one emits token g + 1 at its end. KV after an iteration:
COMPUTED = tokens computed; EMITTED adds the newest emitted token once the request has caught up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from sim_helpers import Scripted, digest, run, tiny

from kvsched import BatchStats, Decision, KVConvention, LinearCost, Simulator, UnitTime
from kvsched.errors import InfeasibleDecisionError, StalledError
from kvsched.policies import make
from kvsched.workload.synthetic import Poisson, Uniform, synthesize

EMITTED, COMPUTED = KVConvention.EMITTED, KVConvention.COMPUTED


@dataclass
class RecordingCost:
    """LinearCost that keeps every batch it was asked to time."""

    d0: float
    d1: float
    batches: list = field(default_factory=list)

    def iteration_time(self, batch: BatchStats) -> float:
        self.batches.append(batch)
        return LinearCost(self.d0, self.d1).iteration_time(batch)


# ---------------------------------------------------------------- eviction and recompute

def test_eviction_recomputes_prompt_and_generated_tokens():
    steps = [
        {0: 3},                                  # r0 prefill -> token 1 at t=1 (3 computed)
        {0: 1, 1: 2},                            # r0 token 2 (4 computed); r1 prefill -> token 1
        Decision(num_tokens={1: 1}, evict=(0,)),  # r0 dropped; r1 token 2, finishes at 3
        {0: 2},                                  # r0 recomputes 2 of its 3 + 2 known tokens
        {0: 3},                                  # caught up (5 computed): emits token 3 at 5
    ]
    policy = Scripted(steps=steps)
    result = run(policy, [(0, 3, 3), (0, 2, 2)], capacity=100)
    assert digest(result) == [
        (0.0, {0: 3}, (), 3),
        (1.0, {0: 1, 1: 2}, (), 6),
        (2.0, {1: 1}, (0,), 3),
        (3.0, {0: 2}, (), 2),
        (4.0, {0: 3}, (), 5),
    ]
    # After the eviction r0 waits again, behind nobody; r1 stays resident.
    assert policy.seen[3] == (3.0, (0,), ())
    np.testing.assert_array_equal(result.num_evictions, [1, 0])
    np.testing.assert_array_equal(result.num_recomputed_tokens, [4, 0])   # 2 + 2 below the mark 4
    np.testing.assert_array_equal(result.total_computed_tokens, [3 + 3 - 1 + 4, 2 + 2 - 1])
    np.testing.assert_array_equal(result.first_token_time, [1, 2])
    np.testing.assert_array_equal(result.first_scheduled_time, [0, 1])
    np.testing.assert_array_equal(result.finish_time, [5, 3])


def test_computed_tokens_identity_holds_under_preemption_pressure():
    workload = synthesize(80, Poisson(3.0), Uniform(1, 40), Uniform(1, 40), np.random.default_rng(7))
    result = Simulator(UnitTime(), 120, block_size=8).run(workload, make("vllm", max_num_batched_tokens=24))
    assert result.num_evictions.sum() > 0
    expected = workload.num_prompt_tokens + workload.true_output_tokens - 1 + result.num_recomputed_tokens
    np.testing.assert_array_equal(result.total_computed_tokens, expected)


# ---------------------------------------------------------------- timing

def test_unit_time_ttft_and_finish():
    # r1 arrives during iteration 0 (at 0.5) and is first seen at t=1.
    steps = [{0: 2}, {0: 1, 1: 3}, {1: 1}]
    result = run(Scripted(steps=steps), [(0, 2, 2), (0.5, 3, 2)], capacity=100)
    assert [it[0] for it in digest(result)] == [0.0, 1.0, 2.0]
    np.testing.assert_array_equal(result.first_token_time, [1, 2])
    np.testing.assert_array_equal(result.finish_time, [2, 3])
    assert result.busy_time == 3.0 and result.num_iterations == 3


def test_linear_cost_times_a_mixed_batch():
    # d0 = 2 s, d1 = 0.25 s per KV token in the batch (prefill context + decode context).
    cost = RecordingCost(2.0, 0.25)
    steps = [{0: 4}, {0: 1, 1: 3, 2: 2}, {2: 4}]
    result = run(Scripted(steps=steps), [(0, 4, 2), (0, 3, 1), (0, 6, 1)], capacity=100, cost=cost)
    assert cost.batches == [
        BatchStats(num_prefill_tokens=4, num_prefill_seqs=1, num_decode_seqs=0,
                   prefill_context_tokens=4, prefill_attention_work=16, decode_context_tokens=0),
        # r0 decodes its 5th token (context 5); r1 prefills 3 (context 3, work 9); r2 prefills a
        # first chunk of 2 (context 2, work 4).
        BatchStats(num_prefill_tokens=5, num_prefill_seqs=2, num_decode_seqs=1,
                   prefill_context_tokens=5, prefill_attention_work=13, decode_context_tokens=5),
        # r2's second chunk: 4 tokens, context 6.
        BatchStats(num_prefill_tokens=4, num_prefill_seqs=1, num_decode_seqs=0,
                   prefill_context_tokens=6, prefill_attention_work=24, decode_context_tokens=0),
    ]
    # Times: 2 + 0.25*4 = 3; 2 + 0.25*10 = 4.5; 2 + 0.25*6 = 3.5.
    assert [it[0] for it in digest(result)] == [0.0, 3.0, 7.5]
    np.testing.assert_array_equal(result.first_token_time, [3.0, 7.5, 11.0])
    np.testing.assert_array_equal(result.finish_time, [7.5, 7.5, 11.0])
    assert result.busy_time == 11.0


def test_idle_jump_to_the_next_arrival():
    result = run(make("vllm"), [(0, 1, 1), (10, 2, 2)], capacity=100)
    assert digest(result) == [(0.0, {0: 1}, (), 1), (10.0, {1: 2}, (), 2), (11.0, {1: 1}, (), 3)]
    np.testing.assert_array_equal(result.finish_time, [1, 12])
    assert result.busy_time == 3.0


def test_empty_decision_waits_for_the_next_arrival_or_the_wake_time():
    steps = [Decision(), Decision(wake_time=7.5), {0: 1, 1: 1}]
    policy = Scripted(steps=steps)
    result = run(policy, [(0, 1, 1), (5, 1, 1)], capacity=100)
    assert [seen[0] for seen in policy.seen] == [0.0, 5.0, 7.5]
    np.testing.assert_array_equal(result.finish_time, [8.5, 8.5])


def test_stalled_when_nothing_is_scheduled_and_nothing_can_arrive():
    with pytest.raises(StalledError, match="scheduled nothing"):
        run(Scripted(steps=[{0: 1}]), [(0, 1, 2), (0, 1, 1)], capacity=100)


def test_stalled_after_the_last_arrival():
    policy = Scripted(steps=[Decision()])
    with pytest.raises(StalledError):
        run(policy, [(0, 1, 1), (3, 1, 1)], capacity=100)
    assert [seen[0] for seen in policy.seen] == [0.0, 3.0]


# ---------------------------------------------------------------- KV conventions

def test_kv_convention_computed_vs_emitted_block_size_1():
    rows, steps = [(0, 4, 2), (0, 2, 2)], [{0: 4, 1: 2}, {0: 1, 1: 1}]
    # COMPUTED: 4 + 2 after the prefills, (4+1) + (2+1) after the last decodes.
    computed = run(Scripted(steps=steps), rows, capacity=8, kv_convention=COMPUTED)
    assert [it[3] for it in digest(computed)] == [6, 8]
    # EMITTED: (4+1) + (2+1) after the prefills, (4+2) + (2+2) = 10 > 8 after the decodes.
    with pytest.raises(InfeasibleDecisionError, match="KV overflow"):
        run(Scripted(steps=steps), rows, capacity=8, kv_convention=EMITTED)
    emitted = run(Scripted(steps=steps), rows, capacity=10, kv_convention=EMITTED)
    assert [it[3] for it in digest(emitted)] == [8, 10]


def test_kv_convention_computed_vs_emitted_block_size_16():
    rows, steps = [(0, 15, 1), (0, 16, 1)], [{0: 15, 1: 16}]
    computed = run(Scripted(steps=steps), rows, capacity=32, block_size=16, kv_convention=COMPUTED)
    assert digest(computed) == [(0.0, {0: 15, 1: 16}, (), 32)]   # 1 block + 1 block
    with pytest.raises(InfeasibleDecisionError, match="3 blocks"):   # 16 -> 1 block, 17 -> 2
        run(Scripted(steps=steps), rows, capacity=32, block_size=16, kv_convention=EMITTED)


def test_paged_usage_counts_whole_blocks():
    # 10, 11, 12 tokens all fit in one block of 16.
    result = run(Scripted(steps=[{0: 10}, {0: 1}, {0: 1}]), [(0, 10, 3)], capacity=16, block_size=16)
    assert [it[3] for it in digest(result)] == [16, 16, 16]
    assert result.kv_peak_tokens == 16 and result.kv_token_seconds == 48.0


def test_views_follow_the_convention():
    seen = []

    class Probe(Scripted):
        def schedule(self, view):
            if view.running:
                r = view.running[0]
                seen.append((view.kv_tokens(r), view.kv_tokens_after(r, 1), view.extra_blocks(r, 1),
                             view.kv_used_tokens))
            return super().schedule(view)

    run(Probe(steps=[{0: 5}, {0: 1}, {0: 1}]), [(0, 5, 3)], capacity=16, block_size=4,
        kv_convention=EMITTED)
    # After the prefill: 5 computed + token 1 emitted = 6 (2 blocks of 4); a decode makes it 7
    # (still 2 blocks), the next one 8.
    assert seen == [(6, 7, 0, 8), (7, 8, 0, 8)]


# ---------------------------------------------------------------- rejection on arrival

def test_request_that_can_never_fit_is_rejected_with_a_reason():
    result = run(make("vllm"), [(0, 8, 4), (0, 3, 2)], capacity=10)
    assert result.rejected.tolist() == [True, False]
    assert "needs 11 KV tokens" in result.reject_reasons[0] and "10 tokens" in result.reject_reasons[0]
    assert np.isnan(result.finish_time[0]) and result.finish_time[1] == 2.0
    summary = result.summary()
    assert (summary.num_finished, summary.num_rejected) == (1, 1)


def test_rejection_follows_the_convention():
    # s + o - 1 = 10 fits 10 under COMPUTED; s + o = 11 does not under EMITTED.
    rows = [(0, 8, 3)]
    assert not run(make("vllm"), rows, capacity=10).rejected[0]
    assert run(make("vllm"), rows, capacity=10, kv_convention=EMITTED).rejected[0]
    # Blocks: 10 tokens need 2 blocks of 8; a capacity of 12 tokens holds only 1.
    assert run(make("vllm"), rows, capacity=12, block_size=8).rejected[0]


# ---------------------------------------------------------------- infeasible decisions

ROWS = [(0, 4, 3), (0, 2, 2), (5, 1, 1)]


@pytest.mark.parametrize("steps, sim_kwargs, message", [
    ([{99: 1}], {}, "unknown request id 99"),
    ([{-1: 1}], {}, "unknown request id -1"),
    ([{2: 1}], {}, "request 2 is future"),
    ([{1: 2}, {1: 1}, {1: 1}], {}, "request 1 is finished"),
    ([{0: 0}], {}, r"0 tokens scheduled, expected an integer in \[1, 4\]"),
    ([{0: 5}], {}, r"5 tokens scheduled, expected an integer in \[1, 4\]"),
    ([{0: 4}, {0: 2}], {}, r"expected an integer in \[1, 1\]"),
    ([{0: 1.0}], {}, "expected an integer"),
    ([{0: True}], {}, "expected an integer"),
    ([{0: 4, 1: 2}], {"max_num_batched_tokens": 5}, "6 tokens scheduled, over the budget of 5"),
    ([{0: 4, 1: 2}, {0: 1, 1: 1}], {"kv_capacity_tokens": 7}, "KV overflow"),
    ([Decision(num_tokens={0: 1}, evict=(1,))], {}, "cannot evict request 1: it is not resident"),
    ([{0: 4, 1: 2}, Decision(num_tokens={0: 1}, evict=(1, 1))], {}, "evict lists a request twice"),
    ([{0: 4}, Decision(num_tokens={0: 1}, evict=(0,))], {}, "evicted and scheduled"),
    ([{0: 4}, {0: 1, 1: 2}], {"separate_batching": True}, "mixes prefill and decode"),
    ([Decision(wake_time=0.0)], {}, "wake_time 0.0 is not after now"),
])
def test_infeasible_decisions_raise(steps, sim_kwargs, message):
    kwargs = {"kv_capacity_tokens": 100, **sim_kwargs}
    sim = Simulator(UnitTime(), kwargs.pop("kv_capacity_tokens"), **kwargs)
    with pytest.raises(InfeasibleDecisionError, match=message):
        sim.run(tiny(*ROWS), Scripted(steps=steps))


def test_separate_batching_allows_pure_batches():
    steps = [{0: 4, 1: 2}, {0: 1, 1: 1}, {0: 1}, {2: 1}]
    result = run(Scripted(steps=steps), ROWS, capacity=100, separate_batching=True)
    assert [it[1] for it in digest(result)] == [dict(s) for s in steps]


def test_simulator_needs_one_block():
    with pytest.raises(ValueError):
        Simulator(UnitTime(), 8, block_size=16)


# ---------------------------------------------------------------- determinism

@pytest.mark.parametrize("policy", ["vllm", "sarathi"])
def test_same_inputs_give_identical_records(policy):
    workload = synthesize(80, Poisson(2.0), Uniform(1, 60), Uniform(1, 60), np.random.default_rng(11))
    sim = Simulator(LinearCost(0.01, 1e-4), 160, block_size=4, record_iterations=True)
    a = sim.run(workload, make(policy, max_num_batched_tokens=32) if policy == "vllm" else make(policy, chunk_size=32))
    b = sim.run(workload, make(policy, max_num_batched_tokens=32) if policy == "vllm" else make(policy, chunk_size=32))
    assert a.iterations == b.iterations
    for column in ("first_scheduled_time", "first_token_time", "finish_time", "num_evictions",
                   "num_recomputed_tokens", "total_computed_tokens", "rejected"):
        np.testing.assert_array_equal(getattr(a, column), getattr(b, column))
    assert a.summary().as_dict() | {"wall_time": 0} == b.summary().as_dict() | {"wall_time": 0}


def test_an_eviction_only_decision_takes_no_time_and_the_policy_is_asked_again():
    # Clearing the cache (evict only) must not stall or jump the clock to the next arrival.
    steps = [{0: 2, 1: 2}, Decision(evict=(0, 1)), {1: 3}, {0: 3}, {2: 1}]
    policy = Scripted(steps=steps)
    result = run(policy, [(0, 2, 2), (0, 2, 2), (9, 1, 1)], capacity=100)
    assert [seen[0] for seen in policy.seen] == [0.0, 1.0, 1.0, 2.0, 9.0]
    # The eviction-only decision has no iteration of its own: the next iteration's record lists it.
    assert digest(result) == [(0.0, {0: 2, 1: 2}, (), 4), (1.0, {1: 3}, (0, 1), 3),
                              (2.0, {0: 3}, (), 3), (9.0, {2: 1}, (), 1)]
    np.testing.assert_array_equal(result.finish_time, [3, 2, 10])
    np.testing.assert_array_equal(result.num_evictions, [1, 1, 0])


def test_summary_of_the_mixed_batch_run():
    steps = [{0: 4}, {0: 1, 1: 3, 2: 2}, {2: 4}]
    result = run(Scripted(steps=steps), [(0, 4, 2), (0, 3, 1), (0, 6, 1)], capacity=100,
                 cost=LinearCost(2.0, 0.25))
    s = result.summary()
    # finish 7.5, 7.5, 11; first tokens 3, 7.5, 11 (all arrived at 0).
    assert (s.num_requests, s.num_finished, s.num_rejected) == (3, 3, 0)
    assert s.total_latency == 26.0 and s.mean_latency == pytest.approx(26 / 3)
    assert s.p50_latency == 7.5 and s.mean_ttft == pytest.approx(21.5 / 3)
    assert s.mean_tpot == 4.5                         # only r0 has 2 tokens: (7.5 - 3) / 1
    assert s.makespan == 11.0 and s.throughput_tokens_per_s == pytest.approx(4 / 11)
    assert s.throughput_requests_per_s == pytest.approx(3 / 11)
    # KV after each iteration: 4 (for 3 s), 5 + 3 + 2 = 10 (4.5 s), 6 (3.5 s).
    assert s.peak_kv_utilization == 0.10
    assert s.mean_kv_utilization == pytest.approx((4 * 3 + 10 * 4.5 + 6 * 3.5) / 11 / 100)
    assert (s.num_evictions, s.num_recomputed_tokens, s.recompute_ratio) == (0, 0, 0.0)
    assert s.num_iterations == 3


@pytest.mark.parametrize("policy_name", ["vllm", "sarathi"])
@pytest.mark.parametrize("convention", [COMPUTED, EMITTED])
@pytest.mark.parametrize("block_size", [1, 16])
def test_invariants_on_random_workloads(policy_name, convention, block_size):
    for seed in range(3):
        workload = synthesize(40, Poisson(3.0), Uniform(1, 80), Uniform(1, 80), np.random.default_rng(seed))
        policy = make(policy_name, **({"max_num_batched_tokens": 48} if policy_name == "vllm"
                                      else {"chunk_size": 48}))
        sim = Simulator(UnitTime(), 256, block_size=block_size, kv_convention=convention,
                        record_iterations=True)
        result = sim.run(workload, policy, seed=seed)
        done = ~result.rejected
        assert np.all(np.isfinite(result.finish_time[done]))
        assert np.all(result.first_token_time[done] >= workload.arrival_time[done] + 1)
        assert np.all(result.finish_time[done] - result.first_token_time[done]
                      >= workload.true_output_tokens[done] - 1)
        np.testing.assert_array_equal(
            result.total_computed_tokens[done],
            (workload.num_prompt_tokens + workload.true_output_tokens - 1 + result.num_recomputed_tokens)[done])
        assert all(it.kv_used_tokens <= 256 and sum(it.num_tokens.values()) <= 48
                   for it in result.iterations)
        assert result.num_evictions.sum() == sum(len(it.evicted) for it in result.iterations)
