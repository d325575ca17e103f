"""kvsched.bounds: brute force, IP, exact pipeline, plan replay through the engine."""

from __future__ import annotations

import numpy as np
import pytest

from kvsched.errors import ConfigError
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsched import KVConvention, Simulator, UnitTime, Workload
from kvsched.bounds import compute_bound
from kvsched.bounds.bruteforce import (optimal_nonpreemptive_total_latency, optimal_total_latency, solve)
from kvsched.bounds.greedy import best_heuristic, mcsf_schedule
from kvsched.bounds.instance import Instance
from kvsched.bounds.ip import solve_ip, window_sizes
from kvsched.bounds.plan import Plan, check_plan, usage_profile
from kvsched.policies import make


def _sim(M, convention=KVConvention.EMITTED):
    return Simulator(UnitTime(), M, kv_convention=convention)


def _replay(workload, M, plan, convention=KVConvention.EMITTED):
    return _sim(M, convention).run(workload, make("plan-replay", plan=plan)).summary().total_latency


# ---------------------------------------------------------------- hand-worked examples

def test_two_requests_that_cannot_overlap_run_back_to_back():
    # M = 6: (s=2, o=3) peaks at 5, (s=1, o=4) peaks at 5; together in any round they need >= 3+2
    # in their first rounds, but the first one's last round (5) + the other's first (2) = 7 > 6.
    # Best: short one first (0..3), the other overlapping? rounds: A holds 3,4,5; B from start 1
    # holds 2,3,4,5 at rounds 2..5 -> round 2: 4+2=6 ok, round 3: 5+3=8 > 6. So B starts at 3.
    # Alternatively B first: B holds 2,3,4,5 (rounds 1..4), A from 2: rounds 3..5 hold 3,4,5 ->
    # round 3: 4+3=7 > 6; A at 4 -> cost 4 + 7 = 11 versus A first: 3 + 7 = 10.
    w = Workload.build([0, 0], [2, 1], [3, 4])
    assert optimal_nonpreemptive_total_latency(w, 6) == 10.0
    res = compute_bound("ip", w, _sim(6), 10)
    assert (res.objective, res.bound, res.status) == (10.0, 10.0, "optimal")
    assert res.plan.start_time == {0: 0.0, 1: 3.0}


def test_staircase_overlap_of_two_long_requests():
    # Two requests (s=1, o=8), peak 9. Second started at k: in round 8 the first holds 9 and the
    # second 1 + (8 - k). M = 10: 9 + 9 - k <= 10 needs k >= 8 (no overlap): c = 8, 16, total 24.
    # M = 12: k >= 6 (overlap M - peak - s = 2 rounds): c = 8, 14, total 22.
    w = Workload.build([0, 0], [1, 1], [8, 8])
    assert optimal_nonpreemptive_total_latency(w, 10) == 24.0
    assert optimal_nonpreemptive_total_latency(w, 12) == 22.0
    assert compute_bound("exact", w, _sim(12), 10).objective == 22.0


def test_fractional_arrival_brute_force_uses_the_engine_grid():
    # One request arriving at 0.5 alone: the engine jumps to 0.5, so the latency is o.
    w = Workload.build([0.5], [1], [3])
    assert optimal_total_latency(w, 10) == 3.0
    # The whole-round model would release it at 1 (latency 3.5 > 3): not a bound, so refused.
    with pytest.raises(ConfigError, match="whole rounds"):
        compute_bound("ip", w, _sim(10), 10)


def test_brute_force_grid_includes_rounds_before_a_later_arrival():
    # request 0 arrives at 0.5; requests 1 and 2 at 3. Best: 0 starts at 1 = 3 - 2 (on the
    # grid of the later arrivals, not its own), ends at 4 with 1 and 2 (started at 3): 3.5 + 1 + 1.
    w = Workload.build([0.5, 3, 3], [1, 1, 1], [3, 1, 1])
    assert optimal_nonpreemptive_total_latency(w, 8) == 5.5
    assert optimal_total_latency(w, 8) == 5.5


def test_unfit_request_is_reported_not_solved_around():
    w = Workload.build([0, 0], [3, 2], [8, 2])
    res = compute_bound("ip", w, _sim(10), 10)
    assert res.status == "infeasible" and res.objective is None
    assert "request 0 needs 11 KV tokens" in res.message
    with pytest.raises(ValueError, match="request 0"):
        optimal_total_latency(w, 10)


def test_time_limit_status_is_honest():
    rng = np.random.default_rng(3)
    n, M = 30, 40
    s = rng.integers(1, 6, n)
    o = np.array([rng.integers(1, M - si + 1) for si in s])
    w = Workload.build(np.zeros(n), s, o)
    res = compute_bound("ip", w, _sim(M), 1.0)
    assert res.status == "time_limit"
    assert res.bound < res.objective and 0 < res.gap < 1
    # the schedule is feasible and its cost is what the engine measures
    assert _replay(w, M, res.plan) == res.objective


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 40).flatmap(lambda M: st.tuples(
    st.just(M), st.lists(st.integers(1, M - 1), min_size=2, max_size=8))), st.data())
def test_window_rows_are_valid_pairwise(case, data):
    # a_i + b_j <= h(j,i) = min(o_i, max(0, peak_i + peak_j - M)) for every ordered member pair,
    # including prompts larger than M/2 (a regression: clipping b at 0 once broke this)
    M, s = case
    o = [data.draw(st.integers(1, M - si)) for si in s]
    inst = Instance.make(s, o, M)
    a, b, members = window_sizes(inst)
    peak = inst.peak_tokens
    for j in members:
        for i in members:
            if i != j:
                assert 0 <= a[i] + b[j] <= min(o[i], max(0, peak[i] + peak[j] - M))


def test_large_prompts_keep_the_window_ip_feasible():
    w = Workload.build([0, 0, 0], [1, 3, 3], [2, 1, 1])
    res = compute_bound("exact", w, _sim(4), 10)
    assert (res.objective, res.status) == (7.0, "optimal")


# ---------------------------------------------------------------- properties

@st.composite
def tiny(draw, max_n=5, integral=True):
    n = draw(st.integers(1, max_n))
    M = draw(st.integers(4, 12))
    s = [draw(st.integers(1, 3)) for _ in range(n)]
    o = [draw(st.integers(1, max(1, min(5, M - si)))) for si in s]
    if integral:
        a = [draw(st.integers(0, 4)) for _ in range(n)]
    else:
        a = [draw(st.sampled_from([0.0, 0.5, 1.0, 1.25, 3.0])) for _ in range(n)]
    return Workload.build(a, s, o), M


@settings(max_examples=25, deadline=None)
@given(tiny())
def test_ip_and_exact_equal_brute_force_and_replay(case):
    w, M = case
    expected = optimal_nonpreemptive_total_latency(w, M)
    for method in ("ip", "exact"):
        res = compute_bound(method, w, _sim(M), 30)
        assert res.status == "optimal"
        assert res.objective == pytest.approx(expected)
        assert _replay(w, M, res.plan) == pytest.approx(res.objective)


@settings(max_examples=20, deadline=None)
@given(tiny(max_n=4, integral=False))
def test_brute_force_plan_replays_at_its_objective(case):
    w, M = case
    res = compute_bound("bruteforce", w, _sim(M), 30)
    assert _replay(w, M, res.plan) == pytest.approx(res.objective)
    # the whole-round IP is no bound with fractional arrivals: it refuses them
    if (w.arrival_time != w.arrival_time.round()).any():
        with pytest.raises(ConfigError, match="whole rounds"):
            compute_bound("ip", w, _sim(M), 30)


@settings(max_examples=15, deadline=None)
@given(tiny(max_n=4))
def test_computed_convention_is_emitted_with_prompt_minus_one(case):
    w, M = case
    res = compute_bound("ip", w, _sim(M, KVConvention.COMPUTED), 30)
    assert _replay(w, M, res.plan, KVConvention.COMPUTED) == pytest.approx(res.objective)
    assert res.objective <= compute_bound("ip", w, _sim(M), 30).objective


def test_eviction_is_a_free_pause_under_unit_time():
    # M = 4, two requests (s=1, o=2) at 0. Without evictions: 2 + 4 = 6. vLLM admits both (2 + 2),
    # then must preempt one (3 + 3 > 4); the survivor finishes at 2 and the evicted one recomputes
    # its prompt and first token and emits its second in round 3 (holding 3): 2 + 3 = 5.
    w = Workload.build([0, 0], [1, 1], [2, 2])
    assert optimal_nonpreemptive_total_latency(w, 4) == 6.0
    assert optimal_total_latency(w, 4) == 5.0
    assert _sim(4).run(w, make("vllm")).summary().total_latency == 5.0


@settings(max_examples=20, deadline=None)
@given(tiny(max_n=4, integral=False))
def test_preemptive_optimum_is_at_most_the_nonpreemptive_one(case):
    w, M = case
    assert optimal_total_latency(w, M) <= optimal_nonpreemptive_total_latency(w, M) + 1e-9


@settings(max_examples=15, deadline=None)
@given(tiny(max_n=5))
def test_no_policy_beats_the_optimum(case):
    w, M = case
    best = optimal_total_latency(w, M)
    for name in ("vllm", "sarathi"):
        total = _sim(M).run(w, make(name))
        assert total.summary().total_latency >= best - 1e-9


def test_heuristics_are_feasible():
    rng = np.random.default_rng(7)
    for _ in range(5):
        n, M = 20, int(rng.integers(30, 51))
        s = rng.integers(1, 6, n)
        o = np.array([rng.integers(1, M - si + 1) for si in s])
        inst = Instance.make(s, o, M, np.floor(np.cumsum(rng.exponential(1.0, n))))
        for start in (mcsf_schedule(inst), best_heuristic(inst)):
            assert check_plan(inst, Plan.from_array(start)) == inst.objective(start)
            assert usage_profile(inst, start).max() <= M


def test_check_plan_rejects_overflow_and_early_start():
    inst = Instance.make([2, 2], [3, 3], 6, [0, 1])
    with pytest.raises(ValueError, match="round"):
        check_plan(inst, Plan.from_array([1, 1]))
    with pytest.raises(ValueError, match="before its release"):
        check_plan(inst, Plan.from_array([0, 0]))


def test_brute_force_refuses_large_instances():
    with pytest.raises(ValueError, match="at most 6"):
        solve(Instance.make([1] * 7, [1] * 7, 10))


def test_ip_is_never_optimal_without_proof_under_tiny_limit():
    rng = np.random.default_rng(11)
    n, M = 25, 35
    s = rng.integers(1, 6, n)
    o = np.array([rng.integers(1, M - si + 1) for si in s])
    res = solve_ip(Instance.make(s, o, M), time_limit=0.2)
    assert res.status == "time_limit"
    assert res.bound <= res.objective


@settings(max_examples=15, deadline=None)
@given(tiny(max_n=6))
def test_aggregated_ip_equals_per_request_ip(case):
    w, M = case
    inst = Instance.from_workload(w, M)
    merged = solve_ip(inst, time_limit=30, windows=True, aggregate=True)
    single = solve_ip(inst, time_limit=30, windows=False, aggregate=False)
    assert merged.status == single.status == "optimal"
    assert merged.objective == single.objective
    assert check_plan(inst, Plan.from_array(merged.start)) == merged.objective


@settings(max_examples=15, deadline=None)
@given(tiny(max_n=5), st.integers(0, 2**31 - 1))
def test_lagrangian_bound_is_below_the_optimum_for_any_multipliers(case, seed):
    from kvsched.bounds.ip import Types, build_model, horizon_from_upper_bound, lagrangian_bound
    w, M = case
    inst = Instance.from_workload(w, M)
    optimum = optimal_nonpreemptive_total_latency(w, M)
    types = Types.of(inst)
    horizon = horizon_from_upper_bound(inst, optimum)
    cols, cost, lo, hi, matrix = build_model(types.instance, horizon, windows=True, counts=types.counts)
    duals = -np.random.default_rng(seed).exponential(0.3, matrix[3])
    assert lagrangian_bound(cols, cost, matrix, hi, types.counts, duals) <= optimum + 1e-6


# ---------------------------------------------------------------- "at most two overlap" windows

def _feasible_starts(s, o, M, p):
    """Memory of requests started at boundaries p (any integers) stays <= M in every round."""
    lo = min(p)
    use = np.zeros(max(pi + oi for pi, oi in zip(p, o)) - lo + 2, dtype=np.int64)
    for si, oi, pi in zip(s, o, p):
        use[pi - lo + 1: pi - lo + oi + 1] += si + np.arange(1, oi + 1)
    return use.max() <= M


@settings(max_examples=40, deadline=None)
@given(st.integers(6, 24).flatmap(lambda M: st.tuples(
    st.just(M), st.lists(st.integers(1, 3), min_size=3, max_size=5))), st.data())
def test_triple_window_rows_hold_for_every_feasible_triple(case, data):
    # the claim of ip.triple_windows, checked exhaustively: no three members of a family, started
    # anywhere feasibly, have windows sharing a round (relative starts suffice: shift-invariant)
    from itertools import combinations
    from kvsched.bounds.ip import triple_windows
    M, s = case
    o = [data.draw(st.integers(max(1, M // 3), M - si)) for si in s]
    inst = Instance.make(s, o, M)
    for a, b, members in triple_windows(inst):
        for i, j, k in combinations(members.tolist(), 3):
            span = o[i] + o[j] + o[k]
            for pj in range(-span, span + 1):
                for pk in range(-span, span + 1):
                    p = [0, pj, pk]
                    ids = [i, j, k]
                    c = [p[x] + o[ids[x]] for x in range(3)]
                    lo_ = max(c[x] - a[ids[x]] for x in range(3))
                    hi_ = min(c[x] + b[ids[x]] for x in range(3))
                    if lo_ < hi_:       # a common round: the starts must be infeasible
                        assert not _feasible_starts([s[x] for x in ids], [o[x] for x in ids], M, p)


@st.composite
def mid_peaks(draw):
    """Requests with peaks around 0.6 M, where the "at most two overlap" rows matter."""
    n = draw(st.integers(3, 5))
    M = draw(st.integers(10, 20))
    s = [draw(st.integers(1, 2)) for _ in range(n)]
    o = [draw(st.integers(max(1, M // 2 - si), min(M - si, (7 * M) // 10))) for si in s]
    a = [draw(st.integers(0, 3)) for _ in range(n)]
    return Workload.build(a, s, o), M


@settings(max_examples=20, deadline=None)
@given(mid_peaks())
def test_window_strengthened_ip_and_lp_respect_the_plain_ip_optimum(case):
    from kvsched.bounds.ip import horizon_from_upper_bound, solve_lp_relaxation
    w, M = case
    inst = Instance.from_workload(w, M)
    plain = solve_ip(inst, time_limit=30, windows=False, aggregate=False)     # the paper's IP
    strong = solve_ip(inst, time_limit=30, windows=True)
    assert plain.status == strong.status == "optimal"
    assert strong.objective == plain.objective
    horizon = horizon_from_upper_bound(inst, plain.objective)
    assert solve_lp_relaxation(inst, horizon, windows=True) <= plain.objective + 1e-6


def test_triple_windows_tighten_the_lp_on_a_staircase_of_equal_requests():
    # 10 requests of peak 0.6 M: pairwise windows allow completions 8 rounds apart, but three
    # running together need (c_j - c_i) + (c_k - c_i) >= 3 peak - M; the LP moves from ~86% to
    # ~95% of the optimum (chronological search: 718)
    from kvsched.bounds.chrono import solve_chronological
    from kvsched.bounds.ip import horizon_from_upper_bound, solve_lp_relaxation, triple_windows
    inst = Instance.make([1] * 10, [23] * 10, 40)
    optimum, _, status = solve_chronological(inst, time_limit=30)
    assert status == "optimal"
    assert triple_windows(inst)
    lp = solve_lp_relaxation(inst, horizon_from_upper_bound(inst, optimum), windows=True)
    assert 0.93 * optimum <= lp <= optimum
