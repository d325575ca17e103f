"""The fast path (DESIGN.md §4) against the reference loop, and its arithmetic on its own.

Equality is exact (``==`` on every float): the fast path evaluates each iteration's duration with
the same floating-point operations as the cost model and accumulates times left to right, as the
reference loop does (see `kvsched.engine.fastforward`), so no tolerance is needed or allowed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsched import BatchStats, LinearCost, Simulator, UnitTime
from kvsched.engine.simulator import EventStabilityError
from kvsched.engine.fastforward import (DecodeRunPricer, block_gaps, decode_run_durations,
                              first_overflow_iteration, loop_durations, new_blocks_by_iteration)
from kvsched.engine.rules import KVConvention
from kvsched.policies import make
from kvsched.policies.base import Policy, PolicyTags
from kvsched.policies.registry import registered
from kvsched.state import Decision
from kvsched.workload.synthetic import (AllAtZero, Bursts, Deterministic, LogNormal, Poisson, Uniform,
                                        Workload, synthesize)

from policy_helpers import conformance_policies, with_settings


@pytest.fixture(autouse=True)
def _python_engine_only(monkeypatch):
    """This module tests the Python fast path: the compiled kernels (`kvsched.engine.compiled`, used for
    vllm and sarathi when numba is installed) are tested against it in tests/test_compiled.py."""
    monkeypatch.setattr("kvsched.engine.compiled.unsupported", lambda *args: "tests of the Python engine")


RECORDS = ("first_scheduled_time", "first_token_time", "finish_time", "num_evictions",
           "num_recomputed_tokens", "total_computed_tokens", "rejected", "token_gaps")
RUN_FIGURES = ("num_iterations", "busy_time", "kv_peak_tokens", "kv_token_seconds", "reject_reasons")


def _with_predictions(workload: Workload, seed: int) -> Workload:
    """Noisy point predictions and intervals containing the truth (over- and underestimates)."""
    rng = np.random.default_rng(seed)
    o = workload.true_output_tokens
    point = np.maximum(1.0, np.round(o * rng.lognormal(0.0, 0.5, size=len(o))))
    lo = np.maximum(1, (o * rng.uniform(0.3, 1.0, size=len(o))).astype(np.int64))
    hi = np.maximum(o, (o * rng.uniform(1.0, 3.0, size=len(o))).astype(np.int64))
    return workload.with_columns(predicted_output_tokens=point, predicted_lo=lo, predicted_hi=hi,
                                 type_id=(o > np.median(o)).astype(np.int64))


def _workload(arrivals, n: int, seed: int, *, prompt=LogNormal(mean=30, sigma=0.8, low=1, high=200),
              output=LogNormal(mean=40, sigma=0.9, low=1, high=300)) -> Workload:
    rng = np.random.default_rng(seed)
    return _with_predictions(synthesize(n, arrivals, prompt, output, rng), seed)


def _preset_cost():
    from kvsched.cost.presets import get_preset
    return get_preset("llama2-70b-a100-tp2").cost


# name -> (workload, simulator settings). Capacities: "tight" forces evictions and head-of-line
# blocking; "loose" lets long decode stretches run; integer arrivals under UnitTime land exactly
# on iteration boundaries.
CASES = {
    "loose-poisson-linear-b16-computed": (
        lambda: _workload(Poisson(2.0), 80, 1),
        dict(cost=LinearCost(0.02, 1e-4), kv_capacity_tokens=4096, block_size=16)),
    "tight-poisson-unit-b1-emitted": (
        lambda: _workload(Poisson(0.3), 80, 2),
        dict(cost=UnitTime(), kv_capacity_tokens=520, block_size=1, kv_convention=KVConvention.EMITTED)),
    "tight-bursts-linear-b16-emitted": (
        lambda: _workload(Bursts(4.0, 10), 80, 3),
        dict(cost=LinearCost(0.01, 2e-4), kv_capacity_tokens=640, block_size=16,
             kv_convention=KVConvention.EMITTED)),
    "all-at-zero-unit-b16-computed": (
        lambda: _workload(AllAtZero(), 60, 4),
        dict(cost=UnitTime(), kv_capacity_tokens=800, block_size=16)),
    "all-at-zero-linear-b1-emitted-tight": (
        lambda: _workload(AllAtZero(), 50, 5),
        dict(cost=LinearCost(0.05, 1e-3), kv_capacity_tokens=400, block_size=1,
             kv_convention=KVConvention.EMITTED)),
    "on-boundary-arrivals-unit-b1": (
        lambda: _workload(Deterministic(0.25), 60, 6, output=Uniform(1, 60)),
        dict(cost=UnitTime(), kv_capacity_tokens=300, block_size=1)),
    "calibrated-70b-tp2-b16": (
        lambda: _workload(Poisson(8.0), 80, 8),
        dict(cost=_preset_cost(), kv_capacity_tokens=2400, block_size=16)),
    "tight-restart-linear-b4": (
        lambda: _workload(Poisson(4.0), 60, 5),
        dict(cost=LinearCost(0.01, 5e-5), kv_capacity_tokens=900, block_size=4, eviction="restart")),
    "budget-limited-loose-b16": (
        lambda: _workload(Poisson(5.0), 80, 7),
        dict(cost=LinearCost(0.01, 5e-5), kv_capacity_tokens=6000, block_size=16,
             max_num_batched_tokens=64)),
}

CASE_SETTINGS = {name: settings_ for name, (_, settings_) in CASES.items()}

# Parameter settings that change when a policy's decision changes (event-stable policies).
VARIANTS = {
    "vllm-v0-vidur": ("vllm", dict(enable_chunked_prefill=False, watermark=0.01, max_num_batched_tokens=512,
                                   max_num_seqs=16, prefill_first=True, padded_prefill_budget=True,
                                   preempt_victim="last_arrived", decode_needs_free_block=True)),
    "vllm-needs-free-block": ("vllm", dict(decode_needs_free_block=True, max_num_seqs=12)),
    "vllm-prefill-first-chunked": ("vllm", dict(prefill_first=True, max_num_batched_tokens=48)),
    "vllm-hol-fix-full-prompt": ("vllm", dict(continue_on_block=True, full_prompt_must_fit=True,
                                              watermark=0.05, max_num_batched_tokens=64)),
    "vllm-few-seqs-small-budget": ("vllm", dict(max_num_seqs=3, max_num_batched_tokens=8)),
    "sarathi-small-chunk": ("sarathi", dict(chunk_size=16, max_num_seqs=6, watermark=0.0)),
}


def _outcome(simulator: Simulator, workload: Workload, policy_name: str, params: dict | None = None):
    """Per-request records (token gaps included) and run figures, or the error raised (both modes
    must agree on it)."""
    simulator = dataclasses.replace(simulator, record_token_gaps=True)
    try:
        result = simulator.run(workload, make(policy_name, **(params or {})), seed=11)
    except Exception as exc:     # noqa: BLE001 — both modes must fail the same way
        return ("raised", type(exc).__name__, str(exc))
    return ({name: getattr(result, name) for name in RECORDS + RUN_FIGURES}, result.iterations)


def assert_same_outcome(reference, fast) -> None:
    if "raised" in (reference[0], fast[0]):
        assert fast == reference
        return
    ref_records, fast_records = reference[0], fast[0]
    for name in RECORDS:
        np.testing.assert_array_equal(fast_records[name], ref_records[name], err_msg=name, strict=True)
    for name in RUN_FIGURES:
        assert fast_records[name] == ref_records[name], name
    assert fast[1] == reference[1]      # iteration records (None unless recorded)


@pytest.mark.parametrize("policy_name, params, case", with_settings(conformance_policies(), CASE_SETTINGS))
def test_fast_path_equals_reference(policy_name, params, case):
    """Two engines: the plain reference loop against `FastForward` (its stepped decodes for every
    policy, its stretches for event-stable ones). The policy must build: a construction error
    here would compare one error with itself."""
    make(policy_name, **params)
    build, settings_ = CASES[case]
    workload = build()
    reference = _outcome(Simulator(**settings_, fast=False, compiled=False), workload, policy_name, params)
    fast = _outcome(Simulator(**settings_, fast=True, compiled=False), workload, policy_name, params)
    assert_same_outcome(reference, fast)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fast_path_equals_reference_for_policy_variants(variant, case):
    policy_name, params = VARIANTS[variant]
    build, settings_ = CASES[case]
    workload = build()
    reference = _outcome(Simulator(**settings_, fast=False), workload, policy_name, params)
    fast = _outcome(Simulator(**settings_), workload, policy_name, params)
    verified = _outcome(Simulator(**settings_, verify_stable=True), workload, policy_name, params)
    assert_same_outcome(reference, fast)
    assert_same_outcome(reference, verified)


@pytest.mark.parametrize("policy_name", sorted(n for n, c in registered().items() if c.tags.event_stable))
def test_event_stable_tag_holds_in_verify_mode(policy_name):
    """Each tagged policy keeps its promise at every boundary the fast path skips (untagged
    policies are asked at every boundary: nothing to verify)."""
    for case in ("tight-poisson-unit-b1-emitted", "tight-bursts-linear-b16-emitted",
                 "all-at-zero-unit-b16-computed"):
        build, settings_ = CASES[case]
        workload = build()
        reference = _outcome(Simulator(**settings_, fast=False), workload, policy_name)
        verified = _outcome(Simulator(**settings_, verify_stable=True), workload, policy_name)
        assert_same_outcome(reference, verified)


def test_iteration_records_are_identical():
    build, settings_ = CASES["tight-bursts-linear-b16-emitted"]
    workload = build()
    reference = _outcome(Simulator(**settings_, fast=False, record_iterations=True), workload, "vllm")
    fast = _outcome(Simulator(**settings_, record_iterations=True), workload, "vllm")
    assert reference[1] and len(reference[1]) == reference[0]["num_iterations"]
    assert_same_outcome(reference, fast)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), policy_name=st.sampled_from(["vllm", "sarathi"]),
       block_size=st.sampled_from([1, 2, 16]), emitted=st.booleans(), unit=st.booleans(),
       capacity=st.integers(100, 1500), rate=st.floats(0.05, 20.0))
def test_fast_path_equals_reference_property(seed, policy_name, block_size, emitted, unit, capacity, rate):
    workload = _workload(Poisson(rate), 30, seed, output=LogNormal(mean=30, sigma=1.0, low=1, high=90))
    settings_ = dict(cost=UnitTime() if unit else LinearCost(0.013, 3e-4), kv_capacity_tokens=capacity,
                     block_size=block_size,
                     kv_convention=KVConvention.EMITTED if emitted else KVConvention.COMPUTED)
    assert_same_outcome(_outcome(Simulator(**settings_, fast=False), workload, policy_name),
                        _outcome(Simulator(**settings_), workload, policy_name))


def test_fast_path_skips_policy_calls():
    """The fast path must actually fast-forward: far fewer schedule() calls than iterations."""
    calls = []

    @dataclass(kw_only=True)
    class Counting(make("vllm").__class__):
        def schedule(self, view):
            calls.append(view.iteration)
            return super().schedule(view)

    workload = _workload(Poisson(0.05), 40, 9, output=Uniform(200, 300))
    result = Simulator(LinearCost(0.02, 1e-4), 100_000, block_size=16).run(workload, Counting())
    assert len(calls) < result.num_iterations / 10


# ----------------------------------------------------------------------------- the tag's contract

@dataclass(kw_only=True)
class _PausesAtTen(Policy):
    """Admits one waiting request per iteration, FCFS; from iteration 10 on, pauses odd-id requests
    while an even-id request is resident.

    Tagged event_stable although it is not (its decision changes at iteration 10 with no event),
    unless `declare_horizon` makes it announce that change through `stable_horizon`.
    """

    name: ClassVar[str] = "pauses-at-ten"
    tags: ClassVar[PolicyTags] = PolicyTags(event_stable=True, pauses=True)
    declare_horizon: bool = False

    def schedule(self, view):
        tokens = {}
        evens = any(r.request_id % 2 == 0 for r in view.running)
        for r in view.running:
            if view.iteration < 10 or r.request_id % 2 == 0 or not evens:
                tokens[r.request_id] = 1 if r.is_decode else r.num_uncomputed_tokens
        if not tokens or view.iteration < 10:
            for r in view.waiting:
                tokens[r.request_id] = r.num_tokens
                break
        return Decision(num_tokens=tokens)

    def stable_horizon(self, view):
        if self.declare_horizon and view.iteration < 10:
            return 10 - view.iteration
        return None


def _two_long_requests() -> Workload:
    return Workload.build([0.0, 0.0], [5, 5], [40, 40])


def test_fast_path_trusts_the_tag_and_verify_mode_catches_a_false_one():
    sim = dict(cost=UnitTime(), kv_capacity_tokens=1000)
    workload = _two_long_requests()
    reference = Simulator(**sim, fast=False).run(workload, _PausesAtTen())
    fast = Simulator(**sim).run(workload, _PausesAtTen())
    assert reference.finish_time.tolist() == [40.0, 71.0]
    assert fast.finish_time.tolist() == [40.0, 41.0]    # r1 was never paused: the broken promise shows
    with pytest.raises(EventStabilityError, match="pauses-at-ten"):
        Simulator(**sim, verify_stable=True).run(workload, _PausesAtTen())


def test_stable_horizon_is_an_event():
    sim = dict(cost=UnitTime(), kv_capacity_tokens=1000)
    workload = _two_long_requests()
    reference = Simulator(**sim, fast=False).run(workload, _PausesAtTen(declare_horizon=True))
    fast = Simulator(**sim).run(workload, _PausesAtTen(declare_horizon=True))
    verified = Simulator(**sim, verify_stable=True).run(workload, _PausesAtTen(declare_horizon=True))
    # Hand-worked: r0 prefills in iteration 0 (token 1 at t=1); iteration 1: r0 decodes, r1
    # prefills (token 1 at t=2); iterations 2..9: both decode (r0 has 10 tokens, r1 9 at t=10);
    # from iteration 10 r0 runs alone and emits its 40th token at t=40; r1 resumes and needs 31
    # more: t=71.
    assert reference.finish_time.tolist() == [40.0, 71.0]
    np.testing.assert_array_equal(fast.finish_time, reference.finish_time, strict=True)
    np.testing.assert_array_equal(verified.finish_time, reference.finish_time, strict=True)


@dataclass(kw_only=True)
class _KeepsTwoBlocksFree(Policy):
    """Admits waiting requests whole (FCFS) and decodes every resident, but evicts the newest
    resident as soon as a decode step would leave fewer than two blocks free. Event-stable only
    if it declares that reserve through `stable_reserve_blocks` (`declare_reserve`)."""

    name: ClassVar[str] = "keeps-two-blocks-free"
    tags: ClassVar[PolicyTags] = PolicyTags(event_stable=True, preemptive=True)
    declare_reserve: bool = True
    reserve: object = 2

    def schedule(self, view):
        tokens = {r.request_id: r.num_uncomputed_tokens for r in view.running}
        need = sum(view.extra_blocks(r, n) for r, n in zip(view.running, tokens.values()))
        if view.running and view.num_free_blocks - need < 2:
            return Decision(num_tokens={}, evict=(view.running[-1].request_id,))
        free = view.num_free_blocks - need
        for r in view.waiting:
            extra = view.extra_blocks(r, r.num_tokens)
            if free - extra < 2:
                break
            tokens[r.request_id], free = r.num_tokens, free - extra
        return Decision(num_tokens=tokens)

    def stable_reserve_blocks(self):
        return self.reserve if self.declare_reserve else 0


def test_stable_reserve_blocks_moves_the_overflow_event():
    sim = dict(cost=UnitTime(), kv_capacity_tokens=64, block_size=4)
    workload = Workload.build([0.0, 0.0, 0.0, 5.0], [6, 6, 6, 3], [30, 20, 25, 10])
    reference = Simulator(**sim, fast=False).run(workload, _KeepsTwoBlocksFree())
    assert reference.num_evictions.sum() > 0          # the reserve binds in this workload
    for policy in (_KeepsTwoBlocksFree(), _KeepsTwoBlocksFree(reserve=np.int64(3))):   # 3: conservative
        fast = Simulator(**sim).run(workload, policy)
        for name in RECORDS:
            np.testing.assert_array_equal(getattr(fast, name), getattr(reference, name), strict=True)
    Simulator(**sim, verify_stable=True).run(workload, _KeepsTwoBlocksFree())
    with pytest.raises(EventStabilityError, match="keeps-two-blocks-free"):
        Simulator(**sim, verify_stable=True).run(workload, _KeepsTwoBlocksFree(declare_reserve=False))


@pytest.mark.parametrize("reserve", [-1, 1.5, True, None])
def test_stable_reserve_blocks_must_be_a_natural_number(reserve):
    from kvsched.errors import InfeasibleDecisionError
    policy = _KeepsTwoBlocksFree(reserve=reserve)
    with pytest.raises(InfeasibleDecisionError, match="stable_reserve_blocks"):
        Simulator(UnitTime(), 64, block_size=4).run(_two_long_requests(), policy)


@dataclass(kw_only=True)
class _OldestOnlyAfterACompletion(Policy):
    """Admits every waiting request whole and decodes every resident, until it notices that a
    resident has finished; from then on only the oldest resident runs (the others pause).

    Tagged event_stable although it is not: with nothing waiting, a completion is not an event,
    yet its decision changes there.
    """

    name: ClassVar[str] = "oldest-only-after-a-completion"
    tags: ClassVar[PolicyTags] = PolicyTags(event_stable=True, pauses=True)

    def reset(self, *, seed=None):
        self._residents, self._slow = set(), False

    def schedule(self, view):
        residents = {r.request_id for r in view.running}
        self._slow = self._slow or bool(self._residents - residents)
        self._residents = residents | {r.request_id for r in view.waiting}
        running = list(view.running)[:1] if self._slow else view.running
        tokens = {r.request_id: r.num_uncomputed_tokens for r in running}
        tokens.update({r.request_id: r.num_tokens for r in view.waiting})
        return Decision(num_tokens=tokens)


def test_completion_with_nothing_waiting_is_not_an_event():
    """The promise covers completions while nothing waits: a policy that changes its decision
    there is caught in verify mode (and the fast path, trusting the tag, diverges)."""
    sim = dict(cost=UnitTime(), kv_capacity_tokens=1000)
    workload = Workload.build([0.0, 0.0, 0.0], [5, 5, 5], [5, 20, 30])
    reference = Simulator(**sim, fast=False).run(workload, _OldestOnlyAfterACompletion())
    # Hand-worked: all prefill in iteration 0 (first tokens at t=1), all decode until r0's 5th
    # token at t=5; then r1 alone (15 more: t=20), then r2 (25 more: t=45).
    assert reference.finish_time.tolist() == [5.0, 20.0, 45.0]
    fast = Simulator(**sim).run(workload, _OldestOnlyAfterACompletion())
    assert fast.finish_time.tolist() == [5.0, 20.0, 30.0]
    with pytest.raises(EventStabilityError, match="oldest-only"):
        Simulator(**sim, verify_stable=True).run(workload, _OldestOnlyAfterACompletion())


# ----------------------------------------------------------------------------- arithmetic

@settings(max_examples=200, deadline=None)
@given(held=st.lists(st.integers(1, 200), min_size=1, max_size=12), block_size=st.integers(1, 20),
       free=st.integers(0, 60))
def test_first_overflow_iteration_matches_brute_force(held, block_size, free):
    gaps = block_gaps(held, block_size)

    def extra(k):
        return sum(-(-(h + k + 1) // block_size) - (-(-h // block_size)) for h in held)

    k = 0
    while extra(k) <= free:
        k += 1
    assert first_overflow_iteration(gaps, free, block_size) == k
    np.testing.assert_array_equal(new_blocks_by_iteration(gaps, block_size, k + 3),
                                  [extra(j) for j in range(k + 3)])


@pytest.mark.parametrize("cost", [UnitTime(), LinearCost(0.0123, 3.3e-7), LinearCost(0.5, 0.0)])
def test_decode_run_durations_match_iteration_time_bitwise(cost):
    seqs, context, n = 37, 98_765, 500
    durations = decode_run_durations(cost, seqs, context, n)
    expected = [cost.iteration_time(BatchStats(num_decode_seqs=seqs, decode_context_tokens=context + k * seqs))
                for k in range(n)]
    assert durations.tolist() == expected


def test_decode_run_durations_fallback_and_method():
    @dataclass(frozen=True)
    class Sqrt:
        def iteration_time(self, batch):
            return 0.01 + 1e-3 * batch.num_decode_seqs + 1e-6 * batch.decode_context_tokens ** 0.5

    @dataclass(frozen=True)
    class SqrtWithRun(Sqrt):
        def decode_run_durations(self, seqs, context, n):
            ctx = context + seqs * np.arange(n, dtype=np.int64)
            return 0.01 + 1e-3 * seqs + 1e-6 * ctx.astype(np.float64) ** 0.5

    loop = decode_run_durations(Sqrt(), 8, 1000, 50)
    method = decode_run_durations(SqrtWithRun(), 8, 1000, 50)
    expected = [Sqrt().iteration_time(BatchStats(num_decode_seqs=8, decode_context_tokens=1000 + 8 * k))
                for k in range(50)]
    assert loop.tolist() == expected
    np.testing.assert_allclose(method, expected, rtol=1e-15)
    assert dataclasses.is_dataclass(SqrtWithRun)


# ----------------------------------------------------------------------------- engine's views

@settings(max_examples=1500, deadline=None)
@given(prompt=st.integers(1, 40), outputs=st.integers(0, 40), computed_back=st.integers(0, 80),
       resident=st.booleans(), emitted=st.booleans(), block_size=st.sampled_from([1, 3, 16]),
       num_new=st.integers(1, 90))
def test_engine_views_match_the_base_views(prompt, outputs, computed_back, resident, emitted,
                                           block_size, num_new):
    """The engine's specialised views answer exactly as `RequestView` / `SchedulerView` do."""
    from kvsched.engine.simulation import _EngineRequestView, _EngineView, _FastEngineView
    from kvsched.state import RequestState, RequestView, SchedulerView, Status
    state = RequestState(0, 0.0, prompt, 100)
    state.num_output_tokens = outputs
    state.num_computed_tokens = max(0, prompt + outputs - computed_back) if resident else 0
    state.status = Status.RUNNING if resident else Status.WAITING
    num_new = min(num_new, max(1, prompt + outputs - state.num_computed_tokens))
    fields = dict(now=0.0, iteration=0, waiting=(), running=(), kv_capacity_tokens=1000, kv_used_tokens=0,
                  block_size=block_size, max_num_batched_tokens=None,
                  kv_convention=KVConvention.EMITTED if emitted else KVConvention.COMPUTED)
    base_request, engine_request = RequestView(state), _EngineRequestView(state)
    base, engine = SchedulerView(**fields), _EngineView(**fields)
    for name in ("num_tokens", "num_uncomputed_tokens", "is_decode", "is_resident", "request_id",
                 "arrival_time", "num_prompt_tokens"):
        assert getattr(engine_request, name) == getattr(base_request, name), name
    assert engine.kv_tokens(engine_request) == base.kv_tokens(base_request)
    assert engine.kv_tokens_after(engine_request, num_new) == base.kv_tokens_after(base_request, num_new)
    assert engine.extra_blocks(engine_request, num_new) == base.extra_blocks(base_request, num_new)
    assert _FastEngineView(**fields).extra_blocks(engine_request, num_new) == base.extra_blocks(base_request, num_new)


def test_the_decode_shortcut_is_the_extra_blocks_rule():
    """`decode_extra_blocks` (the fast path's stepped decodes and its view) = `rules.extra_blocks`
    for every resident decode: prompts 1-40, 1-40 outputs, both conventions, three block sizes."""
    from kvsched.engine import rules
    from kvsched.engine.fastforward import decode_extra_blocks
    for convention in KVConvention:
        for block_size in (1, 3, 16):
            for prompt in range(1, 41):
                for outputs in range(1, 41):
                    computed = prompt + outputs - 1
                    assert decode_extra_blocks(computed, convention is KVConvention.EMITTED, block_size) == \
                        rules.extra_blocks(computed, prompt, outputs, 1, convention, block_size)


@pytest.mark.parametrize("preset", ["llama2-70b-a100-tp2", "llama2-7b-a100", "llama3-8b-a100"])
def test_calibrated_decode_runs_are_bit_identical(preset):
    from kvsched.cost.presets import get_preset
    cost = get_preset(preset).cost
    pricer = DecodeRunPricer(cost)
    for seqs, context in [(1, 5), (3, 1000), (20, 40_000), (128, 400_000), (300, 3_000_000)]:
        expected = loop_durations(cost, seqs, context, 400).tolist()
        assert decode_run_durations(cost, seqs, context, 400).tolist() == expected
        assert [pricer.one(seqs, context + k * seqs) for k in range(400)] == expected
    assert not pricer.use_loop


def test_pricer_falls_back_to_the_loop_when_a_vector_form_is_off():
    @dataclass(frozen=True)
    class Off:
        def iteration_time(self, batch):
            return 0.01 + 1e-6 * batch.decode_context_tokens

        def decode_run_durations(self, seqs, context, n):     # off by one ulp somewhere
            return np.nextafter(loop_durations(self, seqs, context, n), 1.0)

    pricer = DecodeRunPricer(Off())
    assert pricer(4, 100, 10).tolist() == loop_durations(Off(), 4, 100, 10).tolist()
    assert pricer.use_loop
    workload = _workload(Poisson(1.0), 40, 3)
    settings_ = dict(cost=Off(), kv_capacity_tokens=900, block_size=16)
    assert_same_outcome(_outcome(Simulator(**settings_, fast=False), workload, "vllm"),
                        _outcome(Simulator(**settings_), workload, "vllm"))


# ----------------------------------------------------------------------------- the stepped check

_PLAN_STATUSES = ["running"] * 6 + ["waiting"] * 4 + ["finished", "future"]


def _validation_outcome(validate, decision, evicted):
    """A check's outcome: the error, or every entry (id, tokens, their type; the fast path's
    resident decodes and plan together), the batch and the figures of its `Validation`."""
    from kvsched.errors import InfeasibleDecisionError
    try:
        checked = validate(decision, evicted)
    except InfeasibleDecisionError as error:
        return ("raised", str(error))
    entries = {state.request_id: (1, int) for state in checked.decodes}
    entries.update({state.request_id: (n, type(n)) for state, n in checked.plan})
    return (entries, checked.batch, checked.used_blocks, checked.num_resident, checked.num_partial)


@settings(max_examples=1000, deadline=None)
@given(data=st.data())
def test_fast_validate_is_the_plain_validate(data):
    """`FastForward.validate` (the stepped check, rules inlined) gives `Simulation._validate`'s
    entries, batch, KV blocks, counts and errors: random request states, both conventions, three
    block sizes, token budgets, separate batching, valid and invalid entries (unknown ids, numpy
    and bool ids, evicted requests, finished ones, token counts out of range or not ints), over
    the KV capacity or not."""
    from kvsched.engine.simulation import Simulation
    from kvsched.state import Decision, Status
    from sim_helpers import tiny
    block_size = data.draw(st.sampled_from([1, 3, 16]))
    convention = data.draw(st.sampled_from(list(KVConvention)))
    num = data.draw(st.integers(1, 6))
    rows = [(0.0, data.draw(st.integers(1, 30)), 8) for _ in range(num)]
    sim = Simulator(UnitTime(), data.draw(st.sampled_from([48, 4096])), block_size=block_size,
                    kv_convention=convention, max_num_batched_tokens=data.draw(st.sampled_from([None, None, 6, 40])),
                    separate_batching=data.draw(st.sampled_from([False, False, True])))
    s = Simulation(sim, tiny(*rows), make("vllm"))
    for state in s.states:
        status = data.draw(st.sampled_from(_PLAN_STATUSES))
        state.num_output_tokens = outputs = data.draw(st.sampled_from([0, 1, 1, 2, 3]))
        known = state.num_prompt_tokens + outputs
        state.status = {"running": Status.RUNNING, "waiting": Status.WAITING,
                        "finished": Status.FINISHED, "future": Status.FUTURE}[status]
        if status == "running":
            state.num_computed_tokens = data.draw(st.one_of(st.just(known - 1), st.integers(0, known - 1)))
            s.running[state.request_id] = state
            s.cache.set_tokens(state.request_id, state.num_computed_tokens)
        elif status == "finished":
            state.num_computed_tokens = known
    valid = st.integers(0, num - 1)
    ids = st.one_of(valid, valid, valid, valid, st.integers(-1, num),
                    st.builds(np.int64, st.integers(0, num - 1)), st.just(True))
    counts = st.one_of(st.integers(1, 3), st.integers(1, 35), st.integers(-1, 0), st.just(1.0),
                       st.builds(np.int64, st.integers(1, 5)))
    entries = {}
    for rid in data.draw(st.lists(ids, max_size=num + 1)):
        state = s.states[int(rid)] if 0 <= rid < num else None
        uncomputed = state.num_prompt_tokens + state.num_output_tokens - state.num_computed_tokens if state else 1
        near = st.sampled_from([1, uncomputed, uncomputed - 1, uncomputed - 1, uncomputed + 1])
        entries[rid] = data.draw(st.one_of(near, near, near, counts))
    decision = Decision(num_tokens=entries)
    evicted = frozenset(data.draw(st.sets(st.integers(0, num - 1), max_size=2)))
    for rid in evicted:          # an evicted request is no longer resident (`Simulation._evict`)
        s.running.pop(rid, None)
    assert (_validation_outcome(s.fast_forward.validate, decision, evicted)
            == _validation_outcome(s._validate, decision, evicted))


@pytest.mark.parametrize("limits", [dict(separate_batching=True), dict(max_num_batched_tokens=5),
                                    dict(max_num_batched_tokens=6), dict(kv_capacity_tokens=11),
                                    dict(kv_capacity_tokens=12)])
def test_fast_validate_counts_resident_decodes_in_the_limits(limits):
    """A resident decode (the fast path's own branch) beside a prefill chunk counts in the
    engine's limits as `Simulation._validate` counts it: separate batching, the token budget
    (1 + 5 tokens) and the KV capacity (block size 1: the decode holds 6 tokens and takes a 7th,
    the prompt takes 5: 12 in all)."""
    from kvsched.engine.simulation import Simulation
    from kvsched.state import Decision, Status
    from sim_helpers import tiny
    settings_ = dict(kv_capacity_tokens=4096, **limits) if "kv_capacity_tokens" not in limits else limits
    sim = Simulator(UnitTime(), block_size=1, **settings_)
    s = Simulation(sim, tiny((0.0, 5, 8), (0.0, 5, 8)), make("vllm"))
    decode, waiting = s.states
    decode.status, decode.num_output_tokens, decode.num_computed_tokens = Status.RUNNING, 2, 6
    s.running[0] = decode
    s.cache.set_tokens(0, 6)
    waiting.status = Status.WAITING
    decision = Decision(num_tokens={0: 1, 1: 5})
    outcome = _validation_outcome(s.fast_forward.validate, decision, frozenset())
    assert outcome == _validation_outcome(s._validate, decision, frozenset())
    assert (outcome[0] == "raised") == (limits in (dict(separate_batching=True), dict(max_num_batched_tokens=5),
                                                   dict(kv_capacity_tokens=11)))


def test_fast_validate_every_small_state_alone():
    """`FastForward.validate` = `Simulation._validate` on one entry, exhaustively over small
    states: both conventions, four block sizes, resident (any computed count) and waiting
    requests, every token count from 1 to the uncomputed ones."""
    from kvsched.engine.simulation import Simulation
    from kvsched.state import Decision, Status
    from sim_helpers import tiny
    checked = 0
    for convention in KVConvention:
        for block_size in (1, 2, 3, 16):
            sim = Simulator(UnitTime(), 4096, block_size=block_size, kv_convention=convention)
            s = Simulation(sim, tiny(*[(0.0, prompt, 8) for prompt in range(1, 18)]), make("vllm"))
            for state in s.states:
                for outputs in range(0, 4):
                    known = state.num_prompt_tokens + outputs
                    for status, computed in [(Status.WAITING, 0), *((Status.RUNNING, c) for c in range(known))]:
                        state.status, state.num_output_tokens, state.num_computed_tokens = status, outputs, computed
                        if status is Status.RUNNING:
                            s.running[state.request_id] = state
                        else:
                            s.running.pop(state.request_id, None)
                        s.cache.set_tokens(state.request_id, computed)
                        for n in range(1, known - computed + 1):
                            decision = Decision(num_tokens={state.request_id: n})
                            assert (_validation_outcome(s.fast_forward.validate, decision, frozenset())
                                    == _validation_outcome(s._validate, decision, frozenset()))
                            checked += 1
                s.running.pop(state.request_id, None)
                s.cache.set_tokens(state.request_id, 0)
    assert checked > 10_000


def test_advance_step_is_advance():
    """`FastForward.advance_step` (stepped entries, rules inlined) leaves the request and the
    engine as `Simulation._advance` does: every small state (waiting or resident, recomputing
    below the high-water mark or not, emitting, finishing), both conventions, three block sizes,
    token gaps recorded or not, prefix caching on or off."""
    from kvsched.engine.simulation import Simulation
    from kvsched.state import RequestState, Status
    from sim_helpers import tiny
    fields = [name for name in RequestState.__slots__ if name not in ("view", "prefix_cache")]

    def snapshot(s, state):
        return ([getattr(state, name) for name in fields], s.progressed, s.admit_counter, list(s.running),
                [w.request_id for w in s.waiting], s.num_done, s.cache.used_blocks,
                None if s.token_gaps is None else np.nan_to_num(s.token_gaps, nan=-1.0).tolist())

    checked = 0
    for convention in KVConvention:
        for block_size in (1, 3, 16):
            for gaps, prefix in ((False, False), (True, False), (False, True)):
                if prefix and convention is not KVConvention.COMPUTED:
                    continue                   # prefix caching takes vLLM's convention only
                sim = Simulator(UnitTime(), 4096, block_size=block_size, kv_convention=convention,
                                record_token_gaps=gaps, prefix_caching=prefix)
                for prompt in range(1, 7):
                    for outputs in range(0, 3):
                        known = prompt + outputs
                        for status, computed in [(Status.WAITING, 0), *((Status.RUNNING, c) for c in range(known))]:
                            for high in sorted({0, computed, computed + 1, known, known + 2}):
                                for n in range(1, known - computed + 1):
                                    after = []
                                    for use_fast in (False, True):
                                        s = Simulation(sim, tiny((0.0, prompt, outputs + 2)), make("vllm"))
                                        state = s.states[0]
                                        state.num_output_tokens, state.high_water_tokens = outputs, high
                                        state.last_token_time = 0.5 if outputs else None
                                        if status is Status.WAITING:
                                            state.status = Status.WAITING
                                            s._enqueue(state)
                                        else:
                                            state.status, state.num_computed_tokens = Status.RUNNING, computed
                                            state.admitted_seq = 0
                                            s.running[0] = state
                                            s.running_views.append(state.view)
                                            s.cache.set_tokens(0, computed)
                                        step = s.fast_forward.advance_step if use_fast else s._advance
                                        step(state, n, 1.0, 2.0)
                                        after.append(snapshot(s, state))
                                    assert after[0] == after[1], (convention, block_size, gaps, prefix,
                                                                  prompt, outputs, status, computed, high, n)
                                    checked += 1
    assert checked > 3_000
