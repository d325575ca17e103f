"""`KVSchedScheduler`'s plan: the short cut for a decision that serves every resident in full (a
step of decodes) is the plan entry by entry, the definition; the sync's figures behind it are the
views' own. Scheduler level (`kvsched.integrations.vllm.harness`), no model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.engine


def _plan_fields(scheduler, plan, deferred_before: int) -> tuple:
    return (list(plan.tokens.items()), [r.request_id for r in plan.admit], [r.request_id for r in plan.evict],
            list(plan.gaps), scheduler.kvsched_num_seat_deferred - deferred_before)


def _variant(data, decision, view):
    """A decision near `decision`: the residents' entries as they are, one changed, dropped,
    reordered, after an admission, or with an eviction; admissions of waiting requests."""
    from kvsched.state import Decision
    full = view.residents_uncomputed()
    entries = list(decision.num_tokens.items())
    mode = data.draw(st.sampled_from(["as-is", "change", "drop", "reorder", "admission-first", "evict"]))
    resident = [kid for kid, _ in entries if kid in full]
    evict = ()
    if resident and mode == "change":
        i = data.draw(st.integers(0, len(entries) - 1))
        kid, n = entries[i]
        entries[i] = (kid, data.draw(st.sampled_from([0, 1, n - 1, n + 1, float(n), True, np.int64(n), 10**6])))
    elif entries and mode == "drop":
        del entries[data.draw(st.integers(0, len(entries) - 1))]
    elif len(entries) > 1 and mode == "reorder":
        entries = data.draw(st.permutations(entries))
    elif resident and mode == "evict":
        evict = (data.draw(st.sampled_from(resident)),)
    waiting = [r for r in view.waiting if r.request_id not in decision.num_tokens]
    if waiting and data.draw(st.booleans()):
        r = data.draw(st.sampled_from(waiting))
        admission = (r.request_id, data.draw(st.sampled_from([1, r.num_uncomputed_tokens, 10**4])))
        entries = [admission, *entries] if mode == "admission-first" else [*entries, admission]
    return Decision(num_tokens=dict(entries), evict=evict)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), policy=st.sampled_from(["vllm", "mcsf", "sarathi:chunk_size=32"]),
       num_blocks=st.sampled_from([24, 40, 400]))
def test_the_short_cut_for_residents_served_in_full_is_the_plan_entry_by_entry(tiny_model, data, policy, num_blocks):
    from kvsched.integrations.vllm import harness
    from kvsched.integrations.vllm.scheduler import KVSchedScheduler, _serves_residents_in_full
    from kvsched.integrations.vllm.view import resident_extra_blocks
    scheduler = harness.build_scheduler(harness.HarnessConfig(
        tiny_model, num_blocks=num_blocks, block_size=16, max_num_seqs=6, max_num_batched_tokens=96,
        additional_config={"kvsched_policy": policy}), KVSchedScheduler)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    for prompt, output in zip(rng.integers(8, 120, 14).tolist(), rng.integers(1, 16, 14).tolist()):
        scheduler.add_request(harness.make_request(prompt, output))
    taken = []

    def checked_plan(decision, view, residents):
        # the sync's figures are the views' own
        if residents.by_kid is not None:
            assert list(residents.by_kid.items()) == [(r.request_id, r.num_uncomputed_tokens) for r in view.running]
            assert list(residents.by_rid.values()) == list(residents.by_kid.values())
            assert residents.need == sum(resident_extra_blocks(r.num_computed_tokens, r.num_uncomputed_tokens, 16)
                                         for r in view.running)
            assert residents.num_tokens == sum(r.num_uncomputed_tokens for r in view.running)
        # fewer free blocks than the residents need (the plan reads them from the view)
        tight = dataclasses.replace(view, kv_used_tokens=view.kv_capacity_tokens - 16 * data.draw(
            st.integers(0, max(0, min(view.num_free_blocks, residents.need)))))
        for candidate, seen in ((decision, view), (_variant(data, decision, view), view),
                                (_variant(data, decision, view), view), (decision, tight)):
            before = scheduler.kvsched_num_seat_deferred
            fast = _plan_fields(scheduler, KVSchedScheduler._kvsched_plan(scheduler, candidate, seen, residents), before)
            before = scheduler.kvsched_num_seat_deferred
            plain = _plan_fields(scheduler, KVSchedScheduler._kvsched_plan(scheduler, candidate, seen), before)
            assert fast == plain
        taken.append(_serves_residents_in_full(decision.num_tokens.items(), residents,
                                               scheduler.max_num_scheduled_tokens, view.num_free_blocks))
        return KVSchedScheduler._kvsched_plan(scheduler, decision, view, residents)

    scheduler._kvsched_plan = checked_plan
    for _ in range(300):
        if not scheduler.has_requests():
            break
        harness.step(scheduler)
    assert not scheduler.has_requests()
    assert any(taken)           # the short cut was there to compare


def test_a_resident_with_nothing_to_compute_takes_the_plan_entry_by_entry(tiny_model):
    """The plan refuses a resident entry of 0 tokens (a gap), so a step whose residents include
    one with nothing left to compute (vLLM's async scheduling, which the adapter refuses, would
    give one) does not take the short cut, whatever the decision says."""
    # tiny_model: the engine tests' fixture, so this skips without vLLM (fails under KVSCHED_REQUIRE_ENGINE)
    from kvsched.integrations.vllm.scheduler import _Residents, _serves_residents_in_full
    served = _Residents([], {1: 1, 2: 0}, {"a": 1, "b": 0}, 0, 1)
    assert not _serves_residents_in_full({1: 1, 2: 0}.items(), served, 100, 100)
    assert _serves_residents_in_full({1: 1, 2: 3}.items(), _Residents([], {1: 1, 2: 3}, {"a": 1, "b": 3}, 1, 4), 100, 100)
