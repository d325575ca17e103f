"""kvsched.engine.rules: hand-worked examples, and the rules as a test oracle of whole runs."""

from __future__ import annotations

import numpy as np
import pytest

from kvsched import LinearCost, Simulator, UnitTime
from kvsched.engine import rules
from kvsched.engine.rules import KVConvention
from kvsched.metrics import token_times
from kvsched.policies import make
from kvsched.workload.predictors import apply_predictor
from kvsched.workload.synthetic import default_workload

from policy_helpers import conformance_policies, with_settings

C, E = KVConvention.COMPUTED, KVConvention.EMITTED


def test_blocks_round_up():
    assert [rules.blocks(t, 16) for t in (0, 1, 16, 17, 32)] == [0, 1, 1, 2, 2]
    assert rules.blocks(5, 1) == 5


def test_token_rule_on_a_prompt_of_4_with_3_outputs():
    # Prefill in chunks 3 + 1: the second chunk emits token 1; then two decodes emit tokens 2, 3.
    step = rules.advance(prompt=4, outputs=0, computed=0, high_water=0, num_new_tokens=3)
    assert step == rules.Advance(3, 0, False, 3, 0)
    step = rules.advance(4, 0, 3, 3, 1)
    assert step == rules.Advance(4, 1, True, 4, 0)
    assert rules.is_decode(4, 1, 4) and not rules.is_decode(4, 0, 3)
    assert rules.is_decode_step(4, 1, 4, 1) and not rules.is_decode_step(4, 0, 3, 1)
    assert rules.advance(4, 1, 4, 4, 1) == rules.Advance(5, 2, True, 5, 0)


def test_recomputation_after_an_eviction_counts_below_the_high_water_mark():
    # Evicted after computing 6 tokens (prompt 4 + 2 generated): recompute 5 of the 6 known.
    step = rules.advance(prompt=4, outputs=2, computed=0, high_water=6, num_new_tokens=5)
    assert step == rules.Advance(5, 2, False, 6, 5)
    step = rules.advance(4, 2, 5, 6, 1)                 # the last known token: emits token 3
    assert step == rules.Advance(6, 3, True, 6, 1)
    assert rules.advance(4, 3, 6, 6, 1).num_recomputed_tokens == 0


@pytest.mark.parametrize("convention, held, after", [(C, 5, 6), (E, 6, 7)])
def test_kv_held_under_both_conventions(convention, held, after):
    # prompt 4, one token generated, all but it computed (a decode): s + j - 1 vs s + j.
    assert rules.kv_tokens_held(5, 4, 2, convention) == held
    assert rules.kv_tokens_after_step(5, 4, 2, 1, convention) == after


def test_kv_held_during_a_prefill_is_the_computed_tokens_in_both_conventions():
    for convention in (C, E):
        assert rules.kv_tokens_held(3, 4, 0, convention) == 3
    assert rules.kv_tokens_after_step(0, 4, 0, 4, C) == 4      # prefill done, token 1 emitted
    assert rules.kv_tokens_after_step(0, 4, 0, 4, E) == 5


def test_extra_blocks_counts_only_new_blocks():
    # 16 tokens held in one full block of 16: the next decode needs a second block.
    assert rules.extra_blocks(16, 10, 7, 1, C, 16) == 1
    assert rules.extra_blocks(15, 10, 6, 1, C, 16) == 0
    assert rules.extra_blocks(0, 20, 0, 20, C, 16) == 2          # a waiting prompt of 20
    assert rules.extra_blocks(0, 20, 0, 20, E, 16) == 2          # 21 tokens: still two blocks
    assert rules.extra_blocks(0, 32, 0, 32, E, 16) == 3


def test_rejection_rule():
    assert rules.peak_kv_tokens(10, 5, C) == 14 and rules.peak_kv_tokens(10, 5, E) == 15
    assert rules.rejection_reason(10, 5, C, capacity_blocks=1, block_size=16) is None
    assert rules.rejection_reason(10, 7, C, capacity_blocks=1, block_size=16) is None   # 16 tokens fit
    assert rules.rejection_reason(10, 8, C, 1, 16) == (
        "needs 17 KV tokens at its last token; the KV capacity is 16 tokens")


# ---------------------------------------------------------------- the rules as an oracle

def replay(result, convention: KVConvention, block_size: int, eviction=rules.Eviction.RECOMPUTE) -> dict:
    """Per-request records rebuilt from the iteration records with the plain rules alone."""
    w = result.workload
    n = len(w)
    prompt, true_output = w.num_prompt_tokens, w.true_output_tokens
    computed, outputs, high, total, recomputed, evictions = (np.zeros(n, np.int64) for _ in range(6))
    first_scheduled, first_token, finish = (np.full(n, np.nan) for _ in range(3))
    kv_used = []
    for it in result.iterations:
        for r in it.evicted:
            computed[r] = 0
            outputs[r] = rules.outputs_after_eviction(int(outputs[r]), eviction)
            evictions[r] += 1
        end = it.start_time + it.duration
        for r, k in it.num_tokens.items():
            step = rules.advance(int(prompt[r]), int(outputs[r]), int(computed[r]), int(high[r]), k)
            computed[r], outputs[r], high[r] = step.computed, step.outputs, step.high_water
            total[r] += k
            recomputed[r] += step.num_recomputed_tokens
            if np.isnan(first_scheduled[r]):
                first_scheduled[r] = it.start_time
            if step.emitted and np.isnan(first_token[r]):
                first_token[r] = end
            if step.emitted and outputs[r] == true_output[r]:
                finish[r] = end
        held = 0
        for r in range(n):
            if computed[r] and np.isnan(finish[r]) or (finish[r] == end and it.num_tokens.get(r)):
                held += rules.blocks(rules.kv_tokens_held(int(computed[r]), int(prompt[r]),
                                                          int(outputs[r]), convention), block_size)
        kv_used.append(held * block_size)
        done = ~np.isnan(finish)
        computed[done] = 0
    return dict(first_scheduled_time=first_scheduled, first_token_time=first_token, finish_time=finish,
                num_evictions=evictions, num_recomputed_tokens=recomputed, total_computed_tokens=total,
                kv_used=kv_used)


def gaps_from_iterations(result) -> np.ndarray:
    """`RunResult.token_gaps` rebuilt from the iteration records by `metrics.token_times` (the
    definition of a token's time), laid out per request as the engine lays them."""
    gaps = np.full(len(result.token_gaps), np.nan)
    offsets = result.token_gap_offsets()
    restart = result.num_restarted_tokens is not None
    for rid, times in token_times(result.iterations, result.workload.num_prompt_tokens, restart).items():
        gaps[offsets[rid]:offsets[rid] + len(times) - 1] = np.diff(times)
    return gaps


def test_token_gaps_by_hand():
    """Unit time, capacity 6 tokens: r0 (prompt 2, 3 tokens) and r1 (prompt 2, 2 tokens) arrive at 0.
    vllm: round 1 prefills both (r0 token 1, r1 token 1 at t=1; KV 2 + 2); round 2 decodes both
    (r0 token 2, r1 token 2 = done at t=2); round 3 r0 token 3 at t=3. Gaps: r0 [1, 1], r1 [1]."""
    from kvsched.workload.synthetic import Workload
    w = Workload.build(np.zeros(2), np.array([2, 2]), np.array([3, 2]))
    for fast in (False, True):
        result = Simulator(UnitTime(), 6, fast=fast, record_token_gaps=True).run(w, make("vllm"))
        assert list(result.token_gaps) == [1.0, 1.0, 1.0]
        assert list(result.token_gap_offsets()) == [0, 2]


SETTINGS = {
    "linear-b16-computed": dict(cost=LinearCost(0.022, 8.7e-7), kv_capacity_tokens=2048, block_size=16),
    "unit-b1-emitted": dict(cost=UnitTime(), kv_capacity_tokens=1500, kv_convention=E),
    "linear-b4-budget": dict(cost=LinearCost(0.022, 8.7e-7), kv_capacity_tokens=1024, block_size=4,
                             max_num_batched_tokens=96),
    "unit-b4-restart": dict(cost=UnitTime(), kv_capacity_tokens=1024, block_size=4, eviction="restart"),
}


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
@pytest.mark.parametrize("policy_name, params, setting", with_settings(conformance_policies(), SETTINGS))
def test_every_run_obeys_the_plain_rules(policy_name, params, setting, fast):
    """Whatever the policy and engine path, the records follow from the iterations by the rules."""
    kw = SETTINGS[setting]
    workload = apply_predictor(default_workload(num_requests=40, rate=6.0, seed=3), "interval:alpha=0.5", seed=3)
    long_prompt = workload.num_prompt_tokens > np.median(workload.num_prompt_tokens)
    workload = workload.with_columns(type_id=long_prompt.astype(np.int64))     # two types, for WAIT
    sim = Simulator(**kw, fast=fast, compiled=False, record_iterations=True, record_token_gaps=True)
    result = sim.run(workload, make(policy_name, **params))
    oracle = replay(result, sim.kv_convention, sim.block_size, sim.eviction)
    np.testing.assert_array_equal(result.token_gaps, gaps_from_iterations(result), strict=True)
    for name in ("first_scheduled_time", "first_token_time", "finish_time", "num_evictions",
                 "num_recomputed_tokens", "total_computed_tokens"):
        np.testing.assert_array_equal(getattr(result, name), oracle[name], err_msg=name)
    assert [it.kv_used_tokens for it in result.iterations] == oracle["kv_used"]
    assert max(oracle["kv_used"]) <= result.kv_capacity_tokens
