"""`SchedulerView.max_num_admissions` in the future-memory policies: a scan stopped after k
admissions admits exactly the first k admissions of the unlimited scan (the residents' tokens and
evictions unchanged), so an engine that defers admissions past its seats carries out the same
batch either way (the vLLM adapter tells its policy the seats; the simulator has no limit).

Each decision of a simulator run is made twice from the same policy state: by a copy with a
limit k and by the policy itself without one (the run goes on with the unlimited decision)."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st
from policy_helpers import FUTURE_MEMORY_POLICIES, budget_instances, instances, predictions, workload

from kvsched import KVConvention, Simulator, UnitTime
from kvsched.policies import make
from kvsched.policies.base import Policy, PolicyTags
from kvsched.state import Decision


@dataclass(kw_only=True)
class _SeatProbe(Policy):
    """Runs `inner`; at every boundary also asks a copy of it with ``max_num_admissions = k``."""

    name: ClassVar[str] = "seat-probe"
    tags: ClassVar[PolicyTags] = PolicyTags()
    inner: Policy
    seats: tuple[int, ...]

    def __post_init__(self) -> None:
        self.tags = self.inner.tags         # the oracle for hsf, predictions for the others

    def reset(self, *, seed: int | None = None) -> None:
        self.inner.reset(seed=seed)
        self.num_checked = 0
        self.num_cut = 0            # decisions the limit shortened

    def schedule(self, view) -> Decision:
        limit = self.seats[self.num_checked % len(self.seats)]
        inner = self.inner
        shared = (*view.waiting, *view.running, *getattr(inner, "_queued", {}).values(),
                  *getattr(inner, "_dequeued", {}).values())
        twin = copy.deepcopy(inner, {id(r): r for r in shared})     # the views stay the live ones
        limited = twin.schedule(dataclasses.replace(view, max_num_admissions=limit))
        full = inner.schedule(view)
        resident = {r.request_id for r in view.running}
        admitted = [rid for rid in full.num_tokens if rid not in resident]
        expect = {rid: n for rid, n in full.num_tokens.items()
                  if rid in resident or rid in admitted[:limit]}
        assert list(limited.num_tokens.items()) == list(expect.items()), (limit, full, limited)
        assert limited.evict == full.evict
        self.num_checked += 1
        self.num_cut += len(admitted) > limit
        return full


def _check(name, rows, arrivals, capacity, offsets, seats, *, budget=None, block=1, **params):
    policy = make(name, **params)
    probe = _SeatProbe(inner=policy, seats=tuple(seats))
    w = workload(rows, arrivals, **predictions(rows, offsets))
    sim = Simulator(UnitTime(), capacity, kv_convention=KVConvention.EMITTED, block_size=block,
                    max_num_batched_tokens=budget)
    sim.run(w, probe, seed=0)
    assert probe.num_checked > 0
    return probe


offsets = st.lists(st.integers(-4, 4), min_size=10, max_size=10)
seat_lists = st.lists(st.integers(0, 3), min_size=1, max_size=5)


@settings(max_examples=150, deadline=None)
@given(inst=instances(), offsets=offsets, seats=seat_lists, name=st.sampled_from(FUTURE_MEMORY_POLICIES),
       rule=st.sampled_from(["stop", "skip"]))
def test_a_limited_scan_admits_the_first_admissions_of_the_unlimited_one(inst, offsets, seats, name, rule):
    rows, arrivals, capacity = inst
    _check(name, rows, arrivals, capacity, offsets, seats, rule=rule)


@settings(max_examples=150, deadline=None)
@given(inst=budget_instances(), offsets=offsets, seats=seat_lists, name=st.sampled_from(FUTURE_MEMORY_POLICIES),
       chunking=st.sampled_from(["budget-left", "over-budget"]), block=st.sampled_from([1, 4]))
def test_a_limited_scan_under_a_token_budget_admits_the_first_admissions(inst, offsets, seats, name,
                                                                         chunking, block):
    rows, arrivals, capacity, budget = inst
    _check(name, rows, arrivals, capacity + block, offsets, seats, budget=budget, block=block,
           chunking=chunking)


def test_the_limit_cuts_decisions_in_these_runs():
    """The property above is not vacuous: limits of 0 and 1 shorten decisions of 4 requests at 0."""
    rows = [(2, 3), (2, 2), (1, 4), (3, 1)]
    probe = _check("mcsf", rows, [0] * 4, 40, [0] * 4, [0, 1])
    assert probe.num_cut > 0


# --------------------------------------------------------------------------- the residents' tokens

@settings(max_examples=300, deadline=None)
@given(uncomputed=st.lists(st.integers(0, 6), max_size=8), budget=st.none() | st.integers(0, 30))
def test_serving_every_resident_in_full_is_serve_residents_where_it_applies(uncomputed, budget):
    """`serve_all_residents` (the fast form, from the residents' uncomputed tokens) gives exactly
    `serve_residents` (the definition) whenever the budget holds every resident's tokens, and
    declines (None) otherwise."""
    from types import SimpleNamespace

    from kvsched.policies._future_memory import serve_all_residents, serve_residents
    running = [SimpleNamespace(request_id=10 + i, num_uncomputed_tokens=n) for i, n in enumerate(uncomputed)]
    view = SimpleNamespace(running=running, max_num_batched_tokens=budget)
    fast = serve_all_residents({r.request_id: r.num_uncomputed_tokens for r in running}, budget)
    applies = 0 not in uncomputed and (budget is None or sum(uncomputed) <= budget)
    assert (fast is not None) == applies
    if fast is not None:
        assert list(fast.items()) == list(serve_residents(view).items())
