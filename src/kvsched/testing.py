"""The policy conformance suite: `check_policy(policy)` (DESIGN.md §3).

Like scikit-learn's ``check_estimator`` and Gymnasium's ``check_env``, it runs a policy through small
named checks and reports each one. Every registered policy passes it in kvsched's own test suite;
``kvsched check-policy module:Class`` runs it on an outside policy.

The checks:

- ``interface``: a `Policy` dataclass with a registry name, `PolicyTags`, keyword parameters stored
  verbatim (rebuilding it from its own fields gives an equal configuration).
- ``well_formed``: every decision is a `Decision` whose ``num_tokens`` maps int ids to ints and
  whose ``evict`` is a tuple of int ids.
- ``view_unchanged``: the view (and every request view in it) is the same after `schedule`.
- ``feasible``: no `InfeasibleDecisionError` on adversarial tiny workloads (tight memory, bursts,
  one huge prompt among small ones, long outputs, both KV conventions, blocks of 1 and 16,
  unit-time and linear costs, an engine token budget smaller than a prompt).
- ``liveness``: on the same workloads every request finishes or is rejected, with no stall and no
  livelock (a bounded number of iterations).
- ``deterministic``: two runs of one policy instance on the same inputs give identical
  per-request records (so `reset` must clear what a run leaves behind).
- ``non_clairvoyant``: unless tagged ``clairvoyant``, decisions do not depend on true output
  lengths: two workloads that differ only in one request's true length give identical iterations
  until that request finishes in the shorter one.
- ``tags_honest``: a policy not tagged ``preemptive`` never evicts; one not tagged ``pauses``
  never leaves a resident request unscheduled; one tagged ``event_stable`` keeps its promise
  (every run of such a policy is in the engine's verify mode).
- ``not_better_than_optimum``: on tiny instances of the papers' model (unit time, s + j KV,
  block 1) total latency is never below the hindsight optimum with evictions allowed
  (`kvsched.bounds.bruteforce.optimal_total_latency`). The paper's non-preemptive optimum is not
  a lower bound for every policy: under unit time a recompute costs one round however many tokens
  it recomputes, so a request can emit its first token early, be evicted, and still finish sooner
  than any non-preemptive schedule allows. Example (M = 9, KV s + j): r0 = (a 0, s 2, o 5),
  r1 = (a 2, s 3, o 4); vLLM admits r1 at round 2, evicts it at round 3, recomputes it at round 5
  and finishes it at 8: total latency 5 + 6 = 11 < 12, the non-preemptive optimum.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .cost.models import LinearCost, UnitTime
from .engine.simulator import EventStabilityError, Simulator
from .errors import InfeasibleDecisionError, StalledError
from .engine.rules import KVConvention
from .policies.base import Policy, PolicyTags
from .state import Decision, SchedulerView
from .workload.synthetic import Workload


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Outcome of one named check."""

    name: str
    passed: bool
    detail: str = ""


class _Livelock(Exception):
    pass


class _Malformed(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Scenario:
    """A tiny workload with the engine settings to run it under."""

    name: str
    workload: Workload
    simulator: Simulator


def _with_predictions(name: str, arrival, prompt, output) -> Workload:
    """A workload carrying exact point and interval predictions, and two types (short: 0, long: 1)."""
    output = np.asarray(output)
    return Workload.build(arrival, prompt, output, name=name,
                          predicted_output_tokens=output.astype(float), predicted_lo=output,
                          predicted_hi=output, type_id=(output > np.median(output)).astype(int))


def adversarial_scenarios() -> list[Scenario]:
    """Small workloads that stress admission, memory and tie-breaking."""
    rng = np.random.default_rng(7)
    n = 12
    burst = _with_predictions("burst", np.zeros(n), rng.integers(1, 30, n), rng.integers(1, 30, n))
    huge = _with_predictions("huge-prompt", [0, 0, 1, 1, 2], [150, 3, 4, 5, 6], [2, 8, 8, 8, 8])
    long_out = _with_predictions("long-outputs", [0, 0.5, 1, 1.5], [4, 4, 4, 4], [90, 60, 30, 5])
    poisson = _with_predictions("poisson", np.cumsum(rng.exponential(0.8, 20)),
                                rng.integers(1, 40, 20), rng.integers(1, 40, 20))
    tight = 160  # the largest request (150 + 2) just fits
    linear = LinearCost(0.01, 1e-4)
    out = []
    for conv in (KVConvention.COMPUTED, KVConvention.EMITTED):
        for block in (1, 16):
            for wl, cap in ((burst, 80), (huge, tight), (long_out, 120), (poisson, 100)):
                cost = UnitTime() if block == 1 else linear
                sim = Simulator(cost, cap, block_size=block, kv_convention=conv, record_iterations=True)
                out.append(Scenario(f"{wl.name}/{conv.value}/block{block}", wl, sim))
    for wl, cap in ((burst, 80), (huge, tight)):    # an engine token budget below the big prompt
        sim = Simulator(UnitTime(), cap, max_num_batched_tokens=7, record_iterations=True)
        out.append(Scenario(f"{wl.name}/budget7", wl, sim))
    for wl, cap in ((burst, 80), (long_out, 120), (poisson, 100)):   # evicted requests hit their own blocks
        sim = Simulator(linear, cap, block_size=4, prefix_caching=True, record_iterations=True)
        out.append(Scenario(f"{wl.name}/prefix-caching", wl, sim))
    return out


def tiny_paper_instances(count: int = 12, seed: int = 11) -> list[tuple[Workload, int]]:
    """Instances of the MC-SF paper's model, small enough for brute force (n ≤ 4)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(2, 5))
        capacity = int(rng.integers(8, 16))
        prompt = rng.integers(1, 4, n)
        output = np.array([rng.integers(1, capacity - s + 1) for s in prompt])
        arrival = rng.integers(0, 3, n).astype(float)
        out.append((_with_predictions("paper-tiny", arrival, prompt, output), capacity))
    return out


class _Probe:
    """Wraps a policy: checks each decision's form, the view's immutability and an iteration cap."""

    def __init__(self, policy: Policy, max_calls: int) -> None:
        self.policy, self.max_calls, self.calls = policy, max_calls, 0
        self.mutated: str | None = None
        self.paused: str | None = None
        self.name, self.tags = policy.name, policy.tags
        for hook in ("stable_horizon", "stable_reserve_blocks"):
            if hasattr(policy, hook):
                setattr(self, hook, getattr(policy, hook))

    def reset(self, *, seed: int | None = None) -> None:
        self.policy.reset(seed=seed)

    def schedule(self, view: SchedulerView) -> Decision:
        self.calls += 1
        if self.calls > self.max_calls:
            raise _Livelock(f"no completion after {self.max_calls} decisions")
        before = _snapshot(view)
        decision = self.policy.schedule(view)
        if self.mutated is None and _snapshot(view) != before:
            self.mutated = f"view changed during schedule() at t={view.now:g}"
        problem = _malformed(decision)
        if problem:
            raise _Malformed(problem)
        idle = [r.request_id for r in view.running
                if r.request_id not in decision.num_tokens and r.request_id not in decision.evict]
        if idle and self.paused is None:
            self.paused = f"leaves request {idle[0]} unscheduled at t={view.now:g}"
        return decision


def _snapshot(view: SchedulerView) -> tuple:
    def requests(seq):
        return tuple((r.request_id, r.num_computed_tokens, r.num_output_tokens, r.status) for r in seq)
    return (view.now, view.kv_used_tokens, requests(view.waiting), requests(view.running))


def _malformed(decision) -> str | None:
    if not isinstance(decision, Decision):
        return f"schedule() returned {type(decision).__name__}, expected Decision"
    for rid, n in decision.num_tokens.items():
        if not _is_int(rid) or not _is_int(n):
            return f"num_tokens entry {rid!r}: {n!r} is not int: int"
    if not isinstance(decision.evict, tuple) or not all(_is_int(r) for r in decision.evict):
        return f"evict must be a tuple of int ids, got {decision.evict!r}"
    return None


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _records(result) -> tuple:
    return (result.finish_time.tolist(), result.first_token_time.tolist(),
            result.num_evictions.tolist(), result.num_recomputed_tokens.tolist())


def _run(policy: Policy, scenario: Scenario, *, max_calls: int = 5_000, fresh: bool = True):
    """Run a copy of `policy` (or `policy` itself, `fresh=False`) on the scenario. A policy tagged
    `event_stable` runs in verify mode: the engine asks it at every boundary and checks the promise."""
    probe = _Probe(copy.deepcopy(policy) if fresh else policy, max_calls)
    simulator = scenario.simulator
    if policy.tags.event_stable:
        simulator = dataclasses.replace(simulator, verify_stable=True)
    result = simulator.run(scenario.workload, probe, seed=0)
    return probe, result


# ------------------------------------------------------------------ the checks

def _check_interface(policy: Policy) -> str | None:
    cls = type(policy)
    if not isinstance(policy, Policy):
        return f"{cls.__name__} is not a kvsched.policies.Policy"
    if not cls.name or not isinstance(cls.tags, PolicyTags):
        return "needs class attributes `name` (non-empty) and `tags` (PolicyTags)"
    if not dataclasses.is_dataclass(policy):
        return "must be a dataclass whose fields are its parameters"
    params = {f.name: getattr(policy, f.name) for f in dataclasses.fields(policy) if f.init}
    rebuilt = cls(**params)
    for name, value in params.items():
        if getattr(rebuilt, name) is not value and getattr(rebuilt, name) != value:
            return f"parameter {name!r} is not stored verbatim"
    return None


@dataclass
class _Outcome:
    scenario: Scenario
    probe: _Probe | None = None
    result: object = None
    error: Exception | None = None


def _run_scenarios(policy: Policy, scenarios: list[Scenario]) -> list[_Outcome]:
    outcomes = []
    for scenario in scenarios:
        try:
            probe, result = _run(policy, scenario)
            outcomes.append(_Outcome(scenario, probe, result))
        except (InfeasibleDecisionError, StalledError, _Livelock, _Malformed,
                EventStabilityError) as exc:
            outcomes.append(_Outcome(scenario, error=exc))
    return outcomes


def _check_outcomes(outcomes: list[_Outcome], what: str) -> str | None:
    for o in outcomes:
        name = o.scenario.name
        if what == "feasible" and isinstance(o.error, InfeasibleDecisionError):
            return f"{name}: infeasible decision: {o.error}"
        if what == "liveness" and isinstance(o.error, (StalledError, _Livelock)):
            return f"{name}: {o.error}"
        if what == "well_formed" and isinstance(o.error, _Malformed):
            return f"{name}: {o.error}"
        if o.error is not None:
            continue
        if what == "view_unchanged" and o.probe.mutated:
            return f"{name}: {o.probe.mutated}"
        unfinished = np.isnan(o.result.finish_time) & ~o.result.rejected
        if what == "liveness" and unfinished.any():
            return f"{name}: request {int(np.flatnonzero(unfinished)[0])} never finished"
    return None


def _check_deterministic(policy: Policy, scenarios: list[Scenario]) -> str | None:
    for scenario in scenarios[:4]:
        reused = copy.deepcopy(policy)     # one instance twice: `reset` must clear its run state
        try:
            first = _records(_run(reused, scenario, fresh=False)[1])
            second = _records(_run(reused, scenario, fresh=False)[1])
        except (InfeasibleDecisionError, StalledError, _Livelock, _Malformed):
            continue   # reported by the feasibility and liveness checks
        if first != second:
            return f"{scenario.name}: two runs with the same inputs differ"
    return None


def _check_non_clairvoyant(policy: Policy, scenarios: list[Scenario]) -> str | None:
    if policy.tags.clairvoyant:
        return None
    for scenario in scenarios:
        wl = scenario.workload
        # The shortest request becomes the longest: any order by true length flips.
        target = int(np.argmin(wl.true_output_tokens))
        true_output = wl.true_output_tokens.copy()
        true_output[target] = true_output.max() + 7
        longer = wl.with_columns(true_output_tokens=true_output)
        try:
            short_run = _run(policy, scenario)[1]
            long_run = _run(policy, Scenario(scenario.name, longer, scenario.simulator))[1]
        except (InfeasibleDecisionError, StalledError, _Livelock, _Malformed):
            continue
        if short_run.rejected[target] or long_run.rejected[target]:
            continue
        cutoff = short_run.finish_time[target]
        for a, b in zip(short_run.iterations, long_run.iterations):
            if a.start_time >= cutoff:
                break
            if (a.num_tokens, a.evicted, a.start_time) != (b.num_tokens, b.evicted, b.start_time):
                return (f"{scenario.name}: decisions at t={a.start_time:g} differ when only request "
                        f"{target}'s true output length differs")
    return None


def _check_tags(policy: Policy, outcomes: list[_Outcome]) -> str | None:
    for o in outcomes:
        if isinstance(o.error, EventStabilityError):
            return f"{o.scenario.name}: tagged event_stable but {o.error}"
        if o.error is not None:
            continue
        for it in o.result.iterations:
            if it.evicted and not policy.tags.preemptive:
                return f"{o.scenario.name}: evicts at t={it.start_time:g} but is not tagged preemptive"
        if not policy.tags.pauses and o.probe.paused:
            return f"{o.scenario.name}: {o.probe.paused} but is not tagged pauses"
    return None


def _check_optimum(policy: Policy) -> str | None:
    from .bounds.bruteforce import optimal_total_latency
    for workload, capacity in tiny_paper_instances():
        sim = Simulator(UnitTime(), capacity, kv_convention=KVConvention.EMITTED)
        try:
            result = _run(policy, Scenario("paper-tiny", workload, sim))[1]
        except (InfeasibleDecisionError, StalledError, _Livelock, _Malformed):
            continue   # reported elsewhere
        if result.rejected.any():
            continue
        total = result.summary().total_latency
        best = optimal_total_latency(workload, capacity)
        if total < best - 1e-9:
            return f"total latency {total:g} is below the hindsight optimum {best:g} (capacity {capacity})"
    return None


def _checks(policy: Policy, scenarios: list[Scenario]) -> Iterator[tuple[str, Callable[[], str | None]]]:
    yield "interface", lambda: _check_interface(policy)
    outcomes: list[_Outcome] = []
    for what in ("well_formed", "view_unchanged", "feasible", "liveness"):
        def check(w=what):
            if not outcomes:
                outcomes.extend(_run_scenarios(policy, scenarios))
            return _check_outcomes(outcomes, w)
        yield what, check
    yield "tags_honest", lambda: _check_tags(policy, outcomes or _run_scenarios(policy, scenarios))
    yield "deterministic", lambda: _check_deterministic(policy, scenarios)
    yield "non_clairvoyant", lambda: _check_non_clairvoyant(policy, scenarios)
    yield "not_better_than_optimum", lambda: _check_optimum(policy)
    yield "compiled_equals_python", lambda: _check_compiled(policy, scenarios)


_RECORDS = ("first_scheduled_time", "first_token_time", "finish_time", "num_evictions",
            "num_recomputed_tokens", "total_computed_tokens", "rejected")


def _check_compiled(policy: Policy, scenarios: list[Scenario]) -> str | None:
    """Where the policy runs as a numba kernel (`kvsched.engine.compiled`), the compiled runs
    (``Simulator(compiled=True)``) give the Python engine's records exactly. Policies without a
    kernel, or without numba installed, pass trivially."""
    from .engine import compiled
    for sc in scenarios:
        sim = dataclasses.replace(sc.simulator, record_iterations=False, compiled=False)
        if compiled.unsupported(sim, policy, sc.workload) is not None:
            continue
        python = sim.run(sc.workload, copy.deepcopy(policy))
        kernel = dataclasses.replace(sim, compiled=True).run(sc.workload, copy.deepcopy(policy))
        for name in _RECORDS:
            if not np.array_equal(getattr(python, name), getattr(kernel, name), equal_nan=name.endswith("time")):
                return f"{sc.name}: compiled {name} differs from the Python engine's"
        if (python.num_iterations, python.busy_time) != (kernel.num_iterations, kernel.busy_time):
            return f"{sc.name}: compiled run figures differ from the Python engine's"
    return None


def check_policy(policy: Policy) -> list[CheckResult]:
    """Run every conformance check on `policy` (an instance); one `CheckResult` per check."""
    scenarios = adversarial_scenarios()
    results = []
    for name, check in _checks(policy, scenarios):
        try:
            problem = check()
        except Exception as exc:  # a crashing policy fails the check, it does not stop the suite
            problem = f"raised {type(exc).__name__}: {exc}"
        results.append(CheckResult(name, problem is None, problem or "ok"))
    return results
