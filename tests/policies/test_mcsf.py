"""MC-SF and its paper's benchmarks (Jaillet et al., arXiv 2502.07115).

Hand-worked examples use the papers' model: UnitTime rounds, EMITTED convention (a request started
in round p holds s + (t − p + 1) KV tokens in round t, i.e. s + j while emitting token j), block
size 1, all requests with predictions õ. "Round t memory" is the KV after round t's tokens.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_helpers import (FUTURE_MEMORY_POLICIES, budget_instances, finish, instances, paper_sim,
                            predictions, run, workload)

from kvsched import KVConvention, Simulator, UnitTime
from kvsched.errors import ConfigError
from kvsched.policies import make
from kvsched.policies._future_memory import FutureMemory, prefill_iterations
from kvsched.state import Decision, SchedulerView

# --------------------------------------------------------------------------- the data structure


def _brute_load(entries, k, block):
    return sum(-(-(b + k) // block) for b, e in entries.values() if e >= k)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from("aaaardu"), st.integers(-5, 30), st.integers(0, 25)),
                    max_size=60),
       block=st.sampled_from([1, 3, 16, 100]), cap=st.integers(5, 200))
def test_future_memory_matches_brute_force(ops, block, cap):
    memory, entries, now, rid = FutureMemory(block), {}, 0, 0
    for op, base, end in ops:
        if op == "a":
            base, end = max(base, 1 - now), now + end
            memory.add(rid, base, end)
            entries[rid] = (base, end)
            rid += 1
        elif op == "r" and entries:
            victim = sorted(entries)[base % len(entries)]
            memory.remove(victim)
            del entries[victim]
        elif op == "u" and entries:   # many changes at once (rebuild path when > 8)
            gone = sorted(entries)[:1] if base % 2 else []
            changes = {r: (b + end % 3, e + base % 2) for r, (b, e) in entries.items() if r not in gone}
            memory.update(gone, changes)
            entries = changes
        elif op == "d":
            now += end % 4
            memory.drop_before(now)
            entries = {r: (b, e) for r, b_e in entries.items() for b, e in [b_e] if e >= now}
        assert memory._ends == memory.ends.tolist()         # the list the searches bisect
        for j, e in enumerate(memory.ends.tolist()):
            assert memory.peaks[j] == _brute_load(entries, e, block)
        assert memory.load_at(now) == _brute_load(entries, now, block)
        cand_base, cand_end = max(base, 1 - now), now + end % 9
        trial = dict(entries, cand=(cand_base, cand_end))
        expect = all(_brute_load(trial, k, block) <= cap for k in range(now, cand_end + 1))
        assert memory.fits(cand_base, cand_end, cap) == expect


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(st.tuples(st.integers(1, 60), st.integers(0, 20)), max_size=12),
       candidate=st.tuples(st.integers(1, 60), st.integers(0, 20)), block=st.sampled_from([1, 3, 16]),
       cap=st.integers(0, 80))
def test_fits_checks_every_breakpoint_against_brute_force(entries, candidate, block, cap):
    """Candidates that end after entries with large bases: the check at the earlier ends binds
    (the test above rarely gets there: a mutant of `fits` without it passed it)."""
    memory, table = FutureMemory(block), {}
    for rid, (base, end) in enumerate(entries):
        memory.add(rid, base, end)
        table[rid] = (base, end)
    base, end = candidate
    trial = dict(table, cand=(base, end))
    assert memory.fits(base, end, cap) == all(_brute_load(trial, k, block) <= cap for k in range(0, end + 1))
    memory.add(len(entries), base, end)
    for j, e in enumerate(memory.ends.tolist()):
        assert memory.peaks[j] == _brute_load(trial, e, block)


# --------------------------------------------------------------------------- hand-worked MC-SF

# A: s=2 o=3, B: s=1 o=2, C: s=3 o=1, D: s=2 o=4; exact predictions; M = 10.
EXAMPLE = [(2, 3), (1, 2), (3, 1), (2, 4)]


def test_mcsf_hand_worked():
    """Sorted by õ: C(1), B(2), A(3), D(4).
    Round 0: C 4 (ends r0); B 2,3 (r0..r1); A 3,4,5 (r0..r2) → r0: 4+2+3 = 9, r1: 3+4 = 7, r2: 5.
             D would add 3 in r0 → 12 > 10: stop. Start C, B, A.  Memory 9.
    Round 1: B 3 (ends), A 4; D (3,4,5,6 in r1..r4): r1 3+4+3 = 10 ≤ 10, r2 5+4 = 9, r4 6 → admit.
    Memory by round: 9, 10, 9 (A 5 + D 4), 5, 6. Finish: C 1, B 2, A 3, D 5 → total 11.
    """
    w = workload(EXAMPLE, predicted_output_tokens=[3, 2, 1, 4])
    result, memory = run(paper_sim(10), w, make("mcsf"))
    assert memory == [9, 10, 9, 5, 6]
    assert finish(result) == [3, 2, 1, 5]
    assert result.summary().total_latency == 11
    assert result.num_evictions.sum() == 0


def test_mcsf_protection_keeps_a_reserve():
    """protection = 0.1: cap 9. Round 1 would need 10 with D → D waits.
    Round 2: A 5 alone; D 3,4,5,6 in r2..r5: r2 5+3 = 8 ≤ 9 → admit.
    Memory: 9, 7 (B 3 + A 4), 8, 4, 5, 6. Finish C 1, B 2, A 3, D 6."""
    w = workload(EXAMPLE, predicted_output_tokens=[3, 2, 1, 4])
    result, memory = run(paper_sim(10), w, make("mcsf", protection=0.1))
    assert memory == [9, 7, 8, 4, 5, 6]
    assert finish(result) == [3, 2, 1, 6]


# A: s=6 o=1, B: s=4 o=2, C: s=1 o=3 (exact), M = 10.
STOP_SKIP = [(6, 1), (4, 2), (1, 3)]


def test_mcsf_stop_at_first_failure():
    """Round 0: A 7; B adds 5 → 12 > 10: stop (C is never tried). Memory 7.
    Round 1: B 5,6 (r1, r2) → ok; C 2,3,4 (r1..r3): r1 5+2 = 7, r2 6+3 = 9, r3 4 → admit both.
    Memory: 7, 7, 9, 4. Finish A 1, B 3, C 4 → total 8."""
    w = workload(STOP_SKIP, predicted_output_tokens=[1, 2, 3])
    result, memory = run(paper_sim(10), w, make("mcsf"))
    assert memory == [7, 7, 9, 4]
    assert finish(result) == [1, 3, 4]


def test_mcsf_skip_variant():
    """rule=skip: round 0 admits A (7), skips B, admits C (2): 9.
    Round 1: C 3 (r1), 4 (r2); B 5, 6 → r1 8, r2 10 ≤ 10 → admit. Memory 9, 8, 10.
    Finish A 1, B 3, C 3 → total 7."""
    w = workload(STOP_SKIP, predicted_output_tokens=[1, 2, 3])
    result, memory = run(paper_sim(10), w, make("mcsf", rule="skip"))
    assert memory == [9, 8, 10]
    assert finish(result) == [1, 3, 3]


def test_mcsf_evicts_instead_of_overflowing_when_predictions_are_low():
    """A: s=2 o=4 õ=1, B: s=2 o=4 õ=1, C: s=3 o=1 õ=1; M = 10. Order A, B, C (ties by prompt, id).
    Round 0: 3 + 3 + 4 = 10 → all start. C finishes (1).
    Round 1: A, B outlived: õ_eff = generated + 1 = 2, memory 4 + 4 = 8.
    Round 2: õ_eff 3, memory 5 + 5 = 10.
    Round 3: 6 + 6 = 12 > 10 → evict (least progress; tie → latest admitted) B; A 6 finishes (4).
    Round 4: B (3 tokens kept) recomputes s + 3 = 5 tokens, emits token 4: KV 6, finishes (5).
    Memory 10, 8, 10, 6, 6. One eviction, shown in the run's counts."""
    w = workload([(2, 4), (2, 4), (3, 1)], predicted_output_tokens=[1, 1, 1])
    result, memory = run(paper_sim(10), w, make("mcsf"))
    assert memory == [10, 8, 10, 6, 6]
    assert finish(result) == [4, 5, 1]
    assert result.num_evictions.tolist() == [0, 1, 0]
    assert result.summary().num_evictions == 1
    assert result.iterations[3].evicted == (1,)


def test_mcsf_needs_point_predictions():
    w = workload(EXAMPLE)
    with pytest.raises(ConfigError, match="needs predicted_output_tokens"):
        paper_sim(10).run(w, make("mcsf"))


def test_mc_benchmark_hand_worked():
    """FCFS order D(s2 o4), A(s2 o3), B(s1 o2), C(s3 o1), M = 10, same check.
    Round 0: D 3,4,5,6 (r0..r3); A 3,4,5 (r0..r2): r0 6, r2 10, r3 6 → ok; B 2,3: r1 4+4+3 = 11 → stop.
    Round 1: B: r1 4+4+2 = 10, r2 5+5+3 = 13 → stop.  Round 2: B: r2 12 → stop.
    Round 3 (A done at 3): D 6; B 2,3 (r3, r4): 8 and 3 → admit; C 4: 12 → stop.
    Round 4 (D done at 4): B 3; C 4 → 7 → admit. Memory 6, 8, 10, 8, 7.
    Finish D 4, A 3, B 5, C 5 → total 17 (MC-SF on the same requests: 11)."""
    rows = [(2, 4), (2, 3), (1, 2), (3, 1)]
    w = workload(rows, predicted_output_tokens=[4, 3, 2, 1])
    result, memory = run(paper_sim(10), w, make("mc-benchmark"))
    assert memory == [6, 8, 10, 8, 7]
    assert finish(result) == [4, 3, 5, 5]
    assert run(paper_sim(10), w, make("mcsf"))[0].summary().total_latency == 11


# --------------------------------------------------------------------------- α-protection family

# r0: s=3 o=4, r1: s=3 o=4, r2: s=1 o=1; M = 10, α = 0.2 → admit while KV ≤ 8.
PROTECT = [(3, 4), (3, 4), (1, 1)]


def test_alpha_protection_clear_all():
    """Round 0: r0 4, r1 4 → 8 ≤ 8; r2 +2 = 10 > 8: stop. Memory 8.
    Round 1: 5 + 5 = 10 ≤ M: no overflow; r2 would make 12 > 8. Memory 10.
    Round 2: 6 + 6 = 12 > M: overflow → clear both (an eviction-only decision), then at the same
    time: r0 (2 tokens kept) KV 6 ≤ 8 admitted alone first; r1 +6 > 8: stop. Memory 6.
    Round 3: r0 7; r1 +6 > 8. r0 finishes (4).  Round 4: r1 6, r2 2 → 8. r2 finishes (5).
    Round 5: r1 7, finishes (6). Memory 8, 10, 6, 7, 8, 7; evictions r0 1, r1 1."""
    result, memory = run(paper_sim(10), workload(PROTECT), make("alpha-protection", alpha=0.2))
    assert memory == [8, 10, 6, 7, 8, 7]
    assert finish(result) == [4, 6, 5]
    assert result.num_evictions.tolist() == [1, 1, 0]


def test_alpha_protection_until_fit_newest():
    """Round 2 overflow evicts only the newest (r1): r0 6 (no admission in that round).
    Then as above: memory 8, 10, 6, 7, 8, 7; one eviction."""
    policy = make("alpha-protection", alpha=0.2, clear_mode="until-fit", evict_victim="newest")
    result, memory = run(paper_sim(10), workload(PROTECT), policy)
    assert memory == [8, 10, 6, 7, 8, 7]
    assert finish(result) == [4, 6, 5]
    assert result.num_evictions.tolist() == [0, 1, 0]


def test_alpha_protection_clear_all_livelocks_under_restart():
    """Two requests s=1, o=2 at t=0, M = 5, α = 0.2 (admit while KV ≤ 4). Round 0: 2 + 2 = 4, both
    admitted. Round 1: 3 + 3 = 6 > 5: overflow, both cleared. Under restart they lose their token, so
    round 2 is round 0 again, and so on for ever (the R2 sweep's alpha-protection at λ = 50 under
    restart: 0 of 1,000 requests in 51,000 simulated seconds). Under recompute they keep their token
    and both finish; ``until-fit`` evicts r1 only (the newest), so r0 finishes."""
    from kvsched.engine.simulation import Simulation
    w = workload([(1, 2), (1, 2)])

    def rounds(eviction, clear_mode, limit=200):
        policy = make("alpha-protection", alpha=0.2, clear_mode=clear_mode)
        policy.reset(seed=0)
        sim = Simulation(paper_sim(5, eviction=eviction), w, policy, reset=False)
        for k in range(1, limit + 1):
            if not sim.step():
                return k
        return None
    assert rounds("restart", "all") is None
    assert rounds("restart", "until-fit") is not None and rounds("recompute", "all") is not None


@pytest.mark.parametrize("beta, evictions", [(0.5, [0, 1, 0]), (1.0, [1, 1, 0])])
def test_alpha_beta_clearing(beta, evictions):
    """Round 2 overflow with 2 running: β = 0.5 clears ⌈0.5·2⌉ = 1 (the newest, r1), which suffices;
    β = 1 clears both."""
    policy = make("alpha-beta-clearing", alpha=0.2, beta=beta, evict_victim="newest")
    result, memory = run(paper_sim(10), workload(PROTECT), policy)
    assert result.num_evictions.tolist() == evictions
    assert memory[:2] == [8, 10] and max(memory) <= 10


def test_alpha_beta_random_victims_are_seeded():
    from kvsched import default_workload
    w = default_workload(120, rate=None)
    sim = Simulator(UnitTime(), 3000, kv_convention=KVConvention.EMITTED)
    a = sim.run(w, make("alpha-beta-clearing", alpha=0.1, beta=0.2), seed=5)
    b = sim.run(w, make("alpha-beta-clearing", alpha=0.1, beta=0.2), seed=5)
    assert np.array_equal(a.finish_time, b.finish_time) and a.num_evictions.sum() > 0


@pytest.mark.parametrize("spec, message", [
    ("mcsf:rule=first", "rule must be one of stop, skip"),
    ("mcsf:protection=1", "protection must be in [0, 1)"),
    ("mcsf:evict_victim=oldest", "evict_victim must be one of"),
    ("amin:chunking=always", "chunking must be one of budget-left, over-budget"),
    ("alpha-protection:clear_mode=half", "clear_mode must be one of all, until-fit"),
    ("alpha-beta-clearing:beta=0", "beta must be in (0, 1]"),
])
def test_bad_parameters(spec, message):
    from kvsched.policies.registry import parse_policy_spec
    name, params = parse_policy_spec(spec)
    with pytest.raises(ConfigError) as info:
        make(name, **params)
    assert message in str(info.value)


# --------------------------------------------------------------------------- the paper's rule, literally

class LiteralMCSF:
    """MC-SF exactly as written in the paper (UnitTime, EMITTED, block 1): at round t, check every
    future round t' = t .. t + max õ with Σ_started (s_j + t' − p_j + 1)·1[t' − p_j < õ_j] +
    Σ_{U∪{i}} (s_k + t' − t + 1)·1[t' − t < õ_k] ≤ M (rounds counted from 0 as in the engine)."""

    from kvsched.policies.base import PolicyTags
    name, tags = "literal-mcsf", PolicyTags(uses_predictions=True)

    def reset(self, *, seed=None):
        self.start = {}

    def schedule(self, view: SchedulerView) -> Decision:
        t = view.iteration
        started = [(r.num_prompt_tokens, self.start[r.request_id], int(r.predicted_output_tokens))
                   for r in view.running]
        queue = sorted(view.waiting, key=lambda r: (r.predicted_output_tokens, r.arrival_time,
                                                    r.num_prompt_tokens, r.request_id))
        chosen = []
        for r in queue:
            trial = started + [(c.num_prompt_tokens, t, int(c.predicted_output_tokens)) for c in chosen + [r]]
            horizon = max(p + o for _, p, o in trial)
            if all(sum(s + tp - p + 1 for s, p, o in trial if p <= tp < p + o) <= view.kv_capacity_tokens
                   for tp in range(t, horizon)):
                chosen.append(r)
            else:
                break
        for r in chosen:
            self.start[r.request_id] = t
        tokens = {r.request_id: 1 for r in view.running}
        tokens.update({r.request_id: r.num_prompt_tokens for r in chosen})
        return Decision(num_tokens=tokens)


@settings(max_examples=200, deadline=None)
@given(inst=instances(), slack=st.lists(st.integers(0, 4), min_size=10, max_size=10))
def test_mcsf_is_the_papers_rule(inst, slack):
    rows, arrivals, capacity = inst
    predicted = [o + slack[i] for i, (_, o) in enumerate(rows)]
    capacity = max(capacity, max(s + p for (s, _), p in zip(rows, predicted)))
    w = workload(rows, arrivals, predicted_output_tokens=predicted)
    ours, _ = run(paper_sim(capacity), w, make("mcsf"))
    literal, _ = run(paper_sim(capacity), w, LiteralMCSF())
    assert [it.num_tokens for it in ours.iterations] == [it.num_tokens for it in literal.iterations]
    assert np.array_equal(ours.finish_time, literal.finish_time)


# --------------------------------------------------------------------------- properties

@settings(max_examples=200, deadline=None)
@given(inst=instances(), slack=st.lists(st.integers(0, 6), min_size=10, max_size=10),
       convention=st.sampled_from(list(KVConvention)), block=st.sampled_from([1, 2, 4]),
       rule=st.sampled_from(["stop", "skip"]), protection=st.sampled_from([0.0, 0.1]))
def test_mcsf_never_evicts_with_overestimates(inst, slack, convention, block, rule, protection):
    rows, arrivals, capacity = inst
    predicted = [o + slack[i] for i, (_, o) in enumerate(rows)]
    w = workload(rows, arrivals, predicted_output_tokens=predicted)
    sim = Simulator(UnitTime(), capacity, block_size=block, kv_convention=convention,
                    record_iterations=True)
    result = sim.run(w, make("mcsf", rule=rule, protection=protection))
    assert result.num_evictions.sum() == 0
    assert all(it.kv_used_tokens <= capacity for it in result.iterations)
    assert np.all(np.isfinite(result.finish_time) | result.rejected)


@settings(max_examples=200, deadline=None)
@given(inst=instances(), noise=st.lists(st.integers(-8, 3), min_size=10, max_size=10),
       convention=st.sampled_from(list(KVConvention)), block=st.sampled_from([1, 4]),
       victim=st.sampled_from(["least-progress", "most-progress", "newest", "largest"]))
def test_mcsf_with_underestimates_finishes_without_overflow(inst, noise, convention, block, victim):
    rows, arrivals, capacity = inst
    predicted = [max(1, o + noise[i]) for i, (_, o) in enumerate(rows)]
    w = workload(rows, arrivals, predicted_output_tokens=predicted)
    sim = Simulator(UnitTime(), capacity, block_size=block, kv_convention=convention)
    result = sim.run(w, make("mcsf", evict_victim=victim))   # the engine raises on any overflow
    assert np.all(np.isfinite(result.finish_time) | result.rejected)


def test_liveness_when_a_prediction_exceeds_the_capacity():
    """õ = 20 predicts a peak of 22 > M = 10, but the true peak (2 + 3 = 5) fits: with nothing
    resident the request starts alone (memory 3, 4, 5), then the next one."""
    w = workload([(2, 3), (1, 1)], predicted_output_tokens=[20, 30])
    result, memory = run(paper_sim(10), w, make("mcsf", protection=0.5))
    assert memory == [3, 4, 5, 2]
    assert finish(result) == [3, 4]


@pytest.mark.parametrize("name", ["mcsf", "amin", "amax", "hsf", "alpha-protection"])
def test_engine_token_budget_is_respected(name):
    from kvsched import LinearCost, default_workload
    from kvsched.workload.predictors import apply_predictor
    w = apply_predictor(default_workload(120), "interval:alpha=0.5", seed=1)
    sim = Simulator(LinearCost(0.01, 2e-7), 8000, block_size=16, max_num_batched_tokens=512)
    summary = sim.run(w, make(name)).summary()   # the engine raises on a budget or KV violation
    assert summary.num_finished + summary.num_rejected == 120


# --------------------------------------------------------------------------- engine token budget
# Chunked prefill under a token budget N (not in the papers; see kvsched.policies._future_memory).
# Same model as above (UnitTime, EMITTED, block 1); "KV" is the memory after each iteration.

def _exact(rows, arrivals=None):
    outputs = [o for _, o in rows]
    return workload(rows, arrivals, predicted_output_tokens=outputs, predicted_lo=outputs,
                    predicted_hi=outputs)


@pytest.mark.parametrize("name", FUTURE_MEMORY_POLICIES)
def test_prompt_longer_than_the_budget_is_chunked(name):
    """The bug report: N = 64, one request with s = 85, o = 3, nothing else (this raised
    StalledError before chunking). Iteration 0: 64 prompt tokens (KV 64); 1: the other 21, the
    first token is emitted (KV 85 + 1); 2: token 2 (KV 87); 3: token 3 (KV 88), finished at t = 4."""
    result, memory = run(paper_sim(100, max_num_batched_tokens=64), _exact([(85, 3)]), make(name))
    assert [it.num_tokens for it in result.iterations] == [{0: 64}, {0: 21}, {0: 1}, {0: 1}]
    assert memory == [64, 86, 87, 88]
    assert finish(result) == [4]


@pytest.mark.parametrize("name", FUTURE_MEMORY_POLICIES)
def test_chunked_prefill_is_checked_at_its_shifted_completion(name):
    """N = 4, M = 19, exact predictions. D = (s 1, o 8) arrives at 0, A = (s 10, o 2) at 1.

    Iteration 0: D alone, 1 token, KV 2; D holds k + 2 in iteration k up to its end, 7.
    Iteration 1: D takes 1 token, A may have the other 3 of its 10. The remaining 7 take
    ⌈7/3⌉ = 3 more iterations (D keeps 1 token of N in each), so A emits its first token at the
    end of iteration 4, not 1: kv = 11 then, A's timeline is base + k with base = 11 − 1 − 3 = 7,
    end = 1 + 3 + 2 − 1 = 5. Peak at A's end: D 7 + A 12 = 19 ≤ 19: admitted.
    KV: it. 1 D 3 + A 3 = 6; it. 2 D 4 + A 6 = 10; it. 3 D 5 + A 9 = 14; it. 4 D 6 + A 10 + 1
    (first token) = 17; it. 5 D 7 + A 12 = 19 (A's 2nd token, finished at t = 6); it. 6, 7 D 8, 9
    (finished at t = 8). The predicted 8, 9, 10 in iterations 1–3 bound A's 3, 6, 9 from above;
    from iteration 4 on the prediction is exact and the peak 19 is reached."""
    w = _exact([(1, 8), (10, 2)], [0, 1])
    result, memory = run(paper_sim(19, max_num_batched_tokens=4), w, make(name))
    assert [it.num_tokens for it in result.iterations] == [
        {0: 1}, {0: 1, 1: 3}, {0: 1, 1: 3}, {0: 1, 1: 3}, {0: 1, 1: 1}, {0: 1, 1: 1}, {0: 1}, {0: 1}]
    assert memory == [2, 6, 10, 14, 17, 19, 8, 9]
    assert finish(result) == [8, 6]
    assert result.num_evictions.sum() == 0


@pytest.mark.parametrize("name", FUTURE_MEMORY_POLICIES)
def test_chunked_prefill_waits_until_its_shifted_timeline_fits(name):
    """As above with M = 18: the true peak 19 of starting A at iteration 1 does not fit. (Checking
    A as if its whole prompt ran in iteration 1 — end 2, peak D 4 + A 12 = 16 — admits it and then
    has to evict it at iteration 5.) A starts with 3 tokens at iteration t (D has t + 2, end 7):
    t = 1: end 5, D 7 + A 12 = 19; t = 2: end 6, D 8 + 12 = 20; t = 3: end 7, D 9 + 12 = 21;
    t = 4: 3 more iterations (shares 3, 3, 3), base 11 − 4 − 3 = 4, end 8, at D's end 7: 9 + 11 = 20;
    t = 5: 7 left, shares 3, 3 (iterations 6, 7) then 4: base 3, end 9, at 7: 9 + 10 = 19;
    t = 6: shares 3 then 4: base 3, end 9, at 7: 19; t = 7: share 4 from iteration 8 on, 2 more
    iterations, base 11 − 7 − 2 = 2, end 10: iteration 7 D 9 + A 9 = 18 ≤ 18, admitted.
    KV: iterations 0–6 D 2..8; it. 7 D 9 + A 3 = 12 (D finished at t = 8); it. 8 A 7; it. 9 A 10 + 1
    = 11; it. 10 A 12, finished at t = 11."""
    w = _exact([(1, 8), (10, 2)], [0, 1])
    result, memory = run(paper_sim(18, max_num_batched_tokens=4), w, make(name))
    assert memory == [2, 3, 4, 5, 6, 7, 8, 12, 7, 11, 12]
    assert [it.num_tokens for it in result.iterations][7:] == [{0: 1, 1: 3}, {1: 4}, {1: 3}, {1: 1}]
    assert finish(result) == [8, 11]
    assert result.num_evictions.sum() == 0


@pytest.mark.parametrize("name", FUTURE_MEMORY_POLICIES)
def test_chunking_modes(name):
    """N = 4, exact predictions; D = (s 1, o 4) at 0, E = (s 4, o 1) at 1; D holds k + 2 in
    iteration k up to its end 3 (finished at t = 4). In iteration 1 D takes 1 token, 3 are left
    and E needs 4 ≤ N.
    "over-budget": E waits while D decodes; iteration 4: E alone, 4 tokens, token 1 (KV 5),
    finished at t = 5. KV 2, 3, 4, 5, 5.
    "budget-left": E starts with 3 tokens; 1 more iteration (share 4 − 1 = 3 ≥ 1), so kv 5 in
    iteration 2: base 5 − 1 − 1 = 3, end 2 (at most 4, 5). KV: it. 1 D 3 + E 3 = 6; it. 2 D 4 +
    E 4 + 1 = 9 (E finished at t = 3); it. 3 D 5."""
    w = _exact([(1, 4), (4, 1)], [0, 1])
    wait, memory = run(paper_sim(20, max_num_batched_tokens=4), w, make(name, chunking="over-budget"))
    assert [it.num_tokens for it in wait.iterations] == [{0: 1}, {0: 1}, {0: 1}, {0: 1}, {1: 4}]
    assert memory == [2, 3, 4, 5, 5] and finish(wait) == [4, 5]
    chunk, memory = run(paper_sim(20, max_num_batched_tokens=4), w, make(name))
    assert [it.num_tokens for it in chunk.iterations] == [{0: 1}, {0: 1, 1: 3}, {0: 1, 1: 1}, {0: 1}]
    assert memory == [2, 6, 9, 5] and finish(chunk) == [4, 3]


@pytest.mark.parametrize("name", ["mcsf", "amin"])
def test_recomputation_longer_than_the_budget_is_chunked(name):
    """N = 2, M = 6, X = Y = (s 1, o 3), both predicted to need 1 token (A_min: ℓ = 1).
    Iteration 0: X 1 token, Y the last budget token; KV 2 + 2 = 4. Iteration 1: both outlived
    their estimate (õ → 2), KV 3 + 3 = 6. Iteration 2: õ → 3, they would need 4 + 4 = 8 > 6: Y
    (same progress, admitted later) is evicted; X emits token 3 (KV 4, finished at t = 3).
    Iteration 3: Y must recompute s + 2 = 3 > N tokens: a chunk of 2 (KV 2 + the emitted token 2
    it holds under EMITTED = 3). Iteration 4: the last token, token 3 emitted (KV 4), finished at 5."""
    rows = [(1, 3), (1, 3)]
    w = workload(rows, predicted_output_tokens=[1, 1], predicted_lo=[1, 1])
    result, memory = run(paper_sim(6, max_num_batched_tokens=2), w, make(name))
    assert [it.num_tokens for it in result.iterations] == [
        {0: 1, 1: 1}, {0: 1, 1: 1}, {0: 1}, {1: 2}, {1: 1}]
    assert [it.evicted for it in result.iterations] == [(), (), (1,), (), ()]
    assert memory == [4, 6, 4, 3, 4]
    assert finish(result) == [3, 5]


@pytest.mark.parametrize("num_tokens, budget, older_ends, start, expected", [
    (7, 4, [], 8, 2),          # ⌈7/4⌉
    (7, 4, [7], 2, 3),         # share 3 throughout: ⌈7/3⌉
    (7, 4, [7], 6, 3),         # 3 + 3 in iterations 6, 7, then 1 of 4 in iteration 8
    (10, 4, [2, 3, 5], 1, 5),  # shares 1, 1 (iterations 1, 2), 2 (3), 3, 3 (4, 5): 10 tokens
    (5, 4, [3, 9, 9, 9], 4, 5),  # three older requests alive: share 1 each iteration
    (1, 2, [0], 1, 1),         # ends before start do not count
])
def test_prefill_iterations(num_tokens, budget, older_ends, start, expected):
    assert prefill_iterations(num_tokens, budget, older_ends, start) == expected


def _assert_never_paused(result) -> None:
    """Every resident request is in every batch until it finishes or is evicted."""
    resident: set[int] = set()
    for it in result.iterations:
        resident -= set(it.evicted)
        assert resident <= it.num_tokens.keys()
        resident |= it.num_tokens.keys()
        resident = {rid for rid in resident if result.finish_time[rid] > it.start_time + it.duration}


@settings(max_examples=200, deadline=None)
@given(inst=budget_instances(), offsets=st.lists(st.integers(-6, 4), min_size=8, max_size=8),
       name=st.sampled_from(FUTURE_MEMORY_POLICIES), convention=st.sampled_from(list(KVConvention)),
       block=st.sampled_from([1, 2, 4]), rule=st.sampled_from(["stop", "skip"]),
       chunking=st.sampled_from(["budget-left", "over-budget"]))
def test_future_memory_policies_never_stall_or_overflow_under_a_budget(inst, offsets, name, convention,
                                                                         block, rule, chunking):
    rows, arrivals, capacity, budget = inst
    capacity = max(capacity, block)          # the engine needs room for one block
    w = workload(rows, arrivals, **predictions(rows, offsets))
    sim = Simulator(UnitTime(), capacity, block_size=block, kv_convention=convention,
                    max_num_batched_tokens=budget, record_iterations=True)
    result = sim.run(w, make(name, rule=rule, chunking=chunking), seed=0)   # raises StalledError, or
    #                                                    InfeasibleDecisionError on a batch over N or M
    assert np.all(np.isfinite(result.finish_time) | result.rejected)
    assert all(sum(it.num_tokens.values()) <= budget for it in result.iterations)
    assert all(it.kv_used_tokens <= capacity for it in result.iterations)
    _assert_never_paused(result)


@settings(max_examples=200, deadline=None)
@given(inst=budget_instances(), offsets=st.lists(st.integers(0, 3), min_size=8, max_size=8),
       name=st.sampled_from(FUTURE_MEMORY_POLICIES), convention=st.sampled_from(list(KVConvention)),
       block=st.sampled_from([1, 2]), chunking=st.sampled_from(["budget-left", "over-budget"]))
def test_no_eviction_under_a_budget_when_no_estimate_is_low(inst, offsets, name, convention, block,
                                                            chunking):
    """Estimates never below the truth (õ ≥ o, ℓ = o, u ≥ o): the check with shifted chunked
    timelines holds, so nothing is evicted (checking a chunked prompt as if computed at once
    does evict)."""
    rows, arrivals, capacity, budget = inst
    w = workload(rows, arrivals, **predictions(rows, offsets))
    sim = Simulator(UnitTime(), capacity, block_size=block, kv_convention=convention,
                    max_num_batched_tokens=budget)
    assert sim.run(w, make(name, chunking=chunking), seed=0).num_evictions.sum() == 0


@settings(max_examples=100, deadline=None)
@given(inst=instances(), offsets=st.lists(st.integers(-6, 4), min_size=10, max_size=10),
       name=st.sampled_from(FUTURE_MEMORY_POLICIES), block=st.sampled_from([1, 4]))
def test_a_budget_that_never_binds_changes_nothing(inst, offsets, name, block):
    """With a budget ≥ every token of the workload the papers' rule is unchanged."""
    rows, arrivals, capacity = inst
    w = workload(rows, arrivals, **predictions(rows, offsets))
    runs = [Simulator(UnitTime(), capacity, block_size=block, max_num_batched_tokens=budget,
                      record_iterations=True).run(w, make(name), seed=0)
            for budget in (None, sum(s + o for s, o in rows))]
    assert [it.num_tokens for it in runs[0].iterations] == [it.num_tokens for it in runs[1].iterations]
    assert [it.evicted for it in runs[0].iterations] == [it.evicted for it in runs[1].iterations]
