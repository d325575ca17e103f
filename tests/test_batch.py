"""The tentative batch (`SchedulerView.new_batch`, `kvsched.state.Batch`): hand-worked examples
and a property tying `add` to the engine's own validation."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvsched import Decision, Simulator, UnitTime
from kvsched.engine.rules import KVConvention
from kvsched.errors import InfeasibleDecisionError, StalledError
from kvsched.policies.base import Policy, PolicyTags
from kvsched.state import Batch, RequestState, SchedulerView, Status

from sim_helpers import Scripted, tiny

COMPUTED, EMITTED = KVConvention.COMPUTED, KVConvention.EMITTED


def request(rid: int, prompt: int, *, outputs: int = 0, computed: int = 0,
            status: Status = Status.WAITING):
    """A request view in a given state (waiting: it holds no KV, computed = 0)."""
    state = RequestState(rid, 0.0, prompt, true_output_tokens=100)
    state.status, state.num_output_tokens, state.num_computed_tokens = status, outputs, computed
    return state.view


def decoding(rid: int, prompt: int, outputs: int = 1):
    """A resident request about to decode: prompt + outputs − 1 tokens computed."""
    return request(rid, prompt, outputs=outputs, computed=prompt + outputs - 1, status=Status.RUNNING)


def scheduler_view(running, waiting=(), *, capacity: int, block_size: int = 1,
                   convention: KVConvention = COMPUTED, budget: int | None = None) -> SchedulerView:
    """A view whose KV use is what the resident requests hold (in whole blocks)."""
    probe = SchedulerView(0.0, 0, tuple(waiting), tuple(running), capacity, 0, block_size, convention,
                          budget)
    used = sum(probe.blocks(probe.kv_tokens(r)) for r in running) * block_size
    return SchedulerView(0.0, 0, tuple(waiting), tuple(running), capacity, used, block_size,
                         convention, budget)


# --------------------------------------------------------------------------- hand-worked examples

def test_block_size_1_computed():
    # A holds 4 KV tokens (prompt 4, its first output not yet fed); capacity 10 → 6 free.
    a, b, c = decoding(0, 4), request(1, 5), request(2, 1)
    batch = scheduler_view([a], [b, c], capacity=10).new_batch()
    assert (batch.num_free_blocks, batch.num_scheduled_tokens, batch.token_budget) == (6, 0, None)
    assert batch.need(a, 1) == 1                    # 4 → 5 KV tokens
    assert batch.add(a, 1) and batch.num_free_blocks == 5
    assert batch.need(b, 5) == 5 and batch.add(b, 5) and batch.num_free_blocks == 0
    assert not batch.add(c, 1)                      # no block left: refused, nothing recorded
    assert batch.num_free_blocks == 0 and dict(batch.num_tokens) == {0: 1, 1: 5}
    assert batch.num_scheduled_tokens == 6
    assert batch.decision() == Decision(num_tokens={0: 1, 1: 5})


def test_block_size_1_emitted():
    # Under EMITTED the token being emitted holds KV: A holds 4 + 1; B's whole prompt emits, so 5 + 1.
    a, b = decoding(0, 4), request(1, 5)
    batch = scheduler_view([a], [b], capacity=10, convention=EMITTED).new_batch()
    assert batch.num_free_blocks == 5
    assert batch.add(a, 1) and batch.num_free_blocks == 4
    assert batch.need(b, 5) == 6 and not batch.add(b, 5)
    assert batch.need(b, 4) == 4                    # a chunk of 4 does not emit: 4 KV tokens
    assert batch.need(b, 3) == 3 and batch.add(b, 3) and batch.num_free_blocks == 1
    assert batch.decision().num_tokens == {0: 1, 1: 3}


def test_block_size_16_both_conventions():
    # A: 16 computed tokens, its block is full; B: 20 computed, its 2nd block has room.
    a, b, c = decoding(0, 16), decoding(1, 20), request(2, 1)
    view = scheduler_view([a, b], [c], capacity=64, block_size=16)     # 4 blocks, 3 used
    batch = view.new_batch()
    assert batch.num_free_blocks == 1
    assert batch.need(b, 1) == 0 and batch.add(b, 1) and batch.num_free_blocks == 1
    assert batch.need(a, 1) == 1 and batch.add(a, 1) and batch.num_free_blocks == 0
    assert not batch.add(c, 1)
    # EMITTED: A holds 17 tokens (2 blocks), decoding to 18 needs none; B holds 21, → 22: none.
    view = scheduler_view([a, b], [c], capacity=64, block_size=16, convention=EMITTED)
    batch = view.new_batch()
    assert batch.num_free_blocks == 0
    assert batch.need(a, 1) == 0 and batch.add(a, 1) and batch.add(b, 1)
    assert batch.need(c, 1) == 1 and not batch.add(c, 1)     # c's prefill emits: 2 KV tokens


def test_capacity_not_a_multiple_of_the_block_size():
    # 40 tokens in blocks of 16: 2 usable blocks, as the engine counts them.
    view = scheduler_view([], [request(0, 32), request(1, 1)], capacity=40, block_size=16)
    batch = view.new_batch()
    assert batch.num_free_blocks == 2
    assert batch.add(view.waiting[0], 32) and not batch.add(view.waiting[1], 1)


def test_evict_then_add():
    # Capacity 4 blocks of 16, all held: A (16 tokens, full block), D paused (40 tokens: 3 blocks).
    a, d, c = decoding(0, 16), decoding(1, 40), request(2, 20)
    batch = scheduler_view([a, d], [c], capacity=64, block_size=16).new_batch()
    assert batch.num_free_blocks == 0 and not batch.add(a, 1)
    batch.evict(d)
    assert batch.num_free_blocks == 3 and list(batch.evicted) == [1]
    assert batch.add(a, 1) and batch.num_free_blocks == 2
    assert batch.add(c, 20) and batch.num_free_blocks == 0
    assert batch.decision() == Decision(num_tokens={0: 1, 2: 20}, evict=(1,))


def test_seats_limit_admissions_and_an_eviction_frees_one():
    # An engine with 1 seat left (vLLM's max_num_seqs, less its running requests): the batch
    # admits one waiting request; a resident evicted leaves its seat to a second one. Residents
    # are scheduled whatever the seats.
    a, b, c, d = decoding(0, 4), decoding(1, 3), request(2, 2), request(3, 2)
    view = dataclasses.replace(scheduler_view([a, b], [c, d], capacity=40), max_num_admissions=1)
    batch = view.new_batch()
    assert batch.admissions_left == 1
    assert batch.add(c, 2) and batch.admissions_left == 0
    assert not batch.add(d, 2) and dict(batch.num_tokens) == {2: 2}     # refused, nothing recorded
    assert batch.add(a, 1)
    batch.evict(b)
    assert batch.admissions_left == 1 and batch.add(d, 2) and batch.admissions_left == 0
    assert scheduler_view([a], [c], capacity=40).new_batch().admissions_left is None


def test_engine_token_budget():
    a, b, c = decoding(0, 4), request(1, 5), request(2, 9)
    batch = scheduler_view([a], [b, c], capacity=100, budget=7).new_batch()
    assert batch.max_num_batched_tokens == 7 and batch.token_budget == 7
    assert batch.add(a, 1) and batch.add(b, 5) and batch.token_budget == 1
    free = batch.num_free_blocks
    assert not batch.add(c, 2)                      # memory fits, the budget does not
    assert batch.num_free_blocks == free and batch.num_scheduled_tokens == 6
    assert batch.add(c, 1) and batch.token_budget == 0      # exactly the budget: accepted
    assert not batch.add(request(3, 1), 1)


def test_own_budget_capped_by_the_engine_budget():
    view = scheduler_view([], [request(0, 50)], capacity=100, budget=7)
    assert view.new_batch(4).token_budget == 4
    assert view.new_batch(100).token_budget == 7
    unbudgeted = scheduler_view([], [request(0, 50)], capacity=100)
    assert unbudgeted.new_batch().token_budget is None
    assert unbudgeted.new_batch(12).max_num_batched_tokens == 12
    assert unbudgeted.new_batch().add(unbudgeted.waiting[0], 50)


def test_misuse_raises_naming_the_request():
    a, b = decoding(0, 4), request(1, 5)
    view = scheduler_view([a, decoding(5, 3)], [b], capacity=100)
    batch = view.new_batch()
    with pytest.raises(ValueError, match="request 1: 6 tokens"):
        batch.add(b, 6)                             # over its 5 uncomputed tokens
    with pytest.raises(ValueError, match="request 0: 2 tokens"):
        batch.add(a, 2)                             # a decode computes 1
    with pytest.raises(ValueError, match="request 1: 0 tokens"):
        batch.add(b, 0)
    with pytest.raises(ValueError, match="request 1"):
        batch.add(b, 2.0)
    with pytest.raises(ValueError, match="request 1"):
        batch.need(b, 9)
    assert batch.add(b, 5)
    with pytest.raises(ValueError, match="request 1 is already in the batch"):
        batch.add(b, 5)                             # twice
    with pytest.raises(ValueError, match="request 1 is not resident"):
        batch.evict(b)
    assert batch.add(a, 1)
    with pytest.raises(ValueError, match="request 0 is in the batch"):
        batch.evict(a)                              # evict before adding, not after
    resident = view.running[1]
    batch.evict(resident)
    with pytest.raises(ValueError, match="request 5 is already evicted"):
        batch.evict(resident)
    with pytest.raises(ValueError, match="request 5 was evicted"):
        batch.add(resident, 1)
    with pytest.raises(ValueError, match="request 7 is finished"):
        batch.add(request(7, 3, status=Status.FINISHED), 1)
    assert batch.decision() == Decision(num_tokens={1: 5, 0: 1}, evict=(5,))


def test_decision_is_a_snapshot_and_takes_a_wake_time():
    view = scheduler_view([], [request(0, 3), request(1, 3)], capacity=10)
    batch = view.new_batch()
    empty = batch.decision(wake_time=2.5)
    assert empty == Decision(wake_time=2.5)
    assert batch.add(view.waiting[0], 3)
    first = batch.decision()
    assert batch.add(view.waiting[1], 3)
    assert first.num_tokens == {0: 3} and batch.decision().num_tokens == {0: 3, 1: 3}
    with pytest.raises(TypeError):
        batch.num_tokens[5] = 1                     # read-only mapping
    assert isinstance(batch, Batch) and "Batch(" in repr(batch)


def test_engine_views_give_the_same_batch():
    """The engine's own view (inlined helpers) and the plain one give the same figures."""
    seen = []

    @dataclass(kw_only=True)
    class Probe(Policy):
        name: ClassVar[str] = "probe"
        tags: ClassVar[PolicyTags] = PolicyTags(preemptive=True, pauses=True)

        def schedule(self, view):
            plain = SchedulerView(view.now, view.iteration, view.waiting, view.running,
                                  view.kv_capacity_tokens, view.kv_used_tokens, view.block_size,
                                  view.kv_convention, view.max_num_batched_tokens)
            batch = view.new_batch()
            for r in [*view.running, *view.waiting]:
                n = r.num_uncomputed_tokens
                seen.append((batch.need(r, n), plain.new_batch().need(r, n)))
                batch.add(r, n)
            return batch.decision()

    for convention in KVConvention:
        Simulator(UnitTime(), 64, block_size=4, kv_convention=convention).run(
            tiny((0, 9, 5), (0, 3, 7), (1, 14, 2)), Probe())
    assert seen and all(a == b for a, b in seen)


# --------------------------------------------------------------------------- the engine agrees

class _Done(Exception):
    """Ends a recording run after its planned number of boundaries."""


@dataclass(kw_only=True)
class RandomBatches(Policy):
    """At each boundary: evict random resident requests, then try random (request, n) additions;
    records every decision and, for each `add`, the decision with that request added and the
    answer. The run stops after `num_boundaries` boundaries."""

    name: ClassVar[str] = "random-batches"
    tags: ClassVar[PolicyTags] = PolicyTags(preemptive=True, pauses=True)
    seed: int = 0
    num_boundaries: int = 6
    decisions: list = field(default_factory=list)
    trials: list = field(default_factory=list)     # (boundary, Decision with the request added, added)

    def reset(self, *, seed: int | None = None) -> None:
        self._rng = random.Random(self.seed)
        self.decisions.clear()
        self.trials.clear()

    def schedule(self, view: SchedulerView) -> Decision:
        rng, k = self._rng, len(self.decisions)
        if k == self.num_boundaries:
            raise _Done
        batch = view.new_batch(rng.choice([None, None, rng.randint(1, 30)]))
        for r in view.running:
            if rng.random() < 0.2:
                batch.evict(r)
        candidates = [r for r in [*view.running, *view.waiting] if r.request_id not in batch.evicted]
        rng.shuffle(candidates)
        for r in candidates:
            n = rng.choice([r.num_uncomputed_tokens, rng.randint(1, r.num_uncomputed_tokens)])
            trial = dict(batch.num_tokens) | {r.request_id: n}
            added = batch.add(r, n)
            self.trials.append((k, Decision(num_tokens=trial, evict=tuple(batch.evicted)), added,
                                batch.max_num_batched_tokens))
        self.decisions.append(batch.decision())
        return self.decisions[-1]


def _engine_accepts(sim: Simulator, workload, steps: list[Decision]) -> bool:
    """Whether the engine accepts the last of `steps` after replaying the others."""
    try:
        sim.run(workload, Scripted(steps=steps))
    except InfeasibleDecisionError:
        return False
    except StalledError:        # the script ran out with work left: every step was accepted
        pass
    return True


@st.composite
def small_runs(draw):
    n = draw(st.integers(1, 5))
    rows = [(draw(st.sampled_from([0, 0, 1, 2])), draw(st.integers(1, 40)), draw(st.integers(1, 6)))
            for _ in range(n)]
    block = draw(st.sampled_from([1, 4, 16]))
    capacity = draw(st.integers(block, 96))
    convention = draw(st.sampled_from(list(KVConvention)))
    budget = draw(st.one_of(st.none(), st.integers(1, 48)))
    sim = Simulator(UnitTime(), capacity, block_size=block, kv_convention=convention,
                    max_num_batched_tokens=budget, fast=False)
    return sim, tiny(*sorted(rows)), draw(st.integers(0, 2**32))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_runs())
def test_add_refuses_exactly_what_the_engine_refuses(case):
    sim, workload, seed = case
    policy = RandomBatches(seed=seed)
    try:
        sim.run(workload, policy)            # every batch's decision is accepted by the engine
    except (_Done, StalledError):
        pass
    for k, trial, added, own_budget in policy.trials:
        if own_budget is not None and sum(trial.num_tokens.values()) > own_budget:
            assert not added                 # over the policy's own budget: the batch refuses
            if sim.max_num_batched_tokens is None or own_budget < sim.max_num_batched_tokens:
                continue                     # ... a limit the engine does not know
        assert added == _engine_accepts(sim, workload, [*policy.decisions[:k], trial]), (k, trial)
