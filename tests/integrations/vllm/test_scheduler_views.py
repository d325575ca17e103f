"""The views `KVSchedScheduler` hands its policy are vLLM's requests as they are at the step's
boundary: the progress is read from vLLM's request (no copy kept), ``running`` is vLLM's running
list in its order, ``waiting`` its waiting requests by (arrival, id). Scheduler level
(`kvsched.integrations.vllm.harness`), no model; small KV pools so that requests are preempted
and come back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsched.engine import rules
from kvsched.state import ReadOnlyList, Status

pytestmark = pytest.mark.engine


def _check_boundary(scheduler, view) -> None:
    from vllm.v1.request import RequestStatus
    states = scheduler._kvsched_states
    for rid, request in scheduler.requests.items():
        state = states.get(rid)
        if state is None:
            continue
        v = state.view
        assert (v.num_computed_tokens, v.num_output_tokens, v.num_tokens, v.num_evictions) == (
            request.num_computed_tokens, request.num_output_tokens, request.num_tokens, request.num_preemptions)
        assert v.num_uncomputed_tokens == request.num_tokens - request.num_computed_tokens    # caching off
        assert v.is_decode == rules.is_decode(request.num_prompt_tokens, request.num_output_tokens,
                                              request.num_computed_tokens)
        assert (state.num_computed_tokens, state.num_output_tokens, state.num_evictions) == (None, None, None)
        assert (v.status is Status.RUNNING) == (request.status == RequestStatus.RUNNING)
    running = [states[r.request_id].view for r in scheduler.running]
    assert list(view.running) == running and len(view.running) == len(running)
    assert list(reversed(view.running)) == running[::-1]
    assert view.running[1:] == tuple(running[1:])
    assert all(r in view.running for r in running)
    waiting = sorted((states[r.request_id].view for q in scheduler._kvsched_queues() for r in q),
                     key=lambda r: (r.arrival_time, r.request_id))
    assert isinstance(view.waiting, ReadOnlyList) and list(view.waiting) == waiting
    assert dict(view.residents_uncomputed()) == {r.request_id: r.num_uncomputed_tokens for r in running}


def _serve(tiny_model, seed: int, policy: str, num_blocks: int) -> int:
    """Serve 16 requests arriving over the first steps, checking every boundary the policy
    sees; the number of preemptions."""
    from kvsched.integrations.vllm import harness
    from kvsched.integrations.vllm.scheduler import KVSchedScheduler
    scheduler = harness.build_scheduler(harness.HarnessConfig(
        tiny_model, num_blocks=num_blocks, block_size=16, max_num_seqs=6, max_num_batched_tokens=96,
        additional_config={"kvsched_policy": policy}), KVSchedScheduler)
    rng = np.random.default_rng(seed)
    pending = list(zip(rng.integers(8, 120, 16).tolist(), rng.integers(1, 24, 16).tolist()))
    policy_schedule = scheduler.kvsched_policy.schedule
    num_running = []

    def checked_schedule(view):
        _check_boundary(scheduler, view)
        num_running.append(len(view.running))
        return policy_schedule(view)

    scheduler.kvsched_policy.schedule = checked_schedule
    preempted = 0
    for step in range(400):
        if pending and step % 3 == 0:       # arrivals between steps, as a server gets them
            scheduler.add_request(harness.make_request(*pending.pop()))
        if not pending and not scheduler.has_requests():
            break
        output, _ = harness.step(scheduler)
        preempted += len(output.preempted_req_ids or ())
    assert not pending and not scheduler.has_requests()
    assert max(num_running) > 1
    return preempted


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), policy=st.sampled_from(["vllm", "mcsf", "sarathi:chunk_size=32", "amin"]),
       num_blocks=st.sampled_from([12, 24, 400]))
def test_the_views_are_vllms_requests_at_every_step(tiny_model, seed, policy, num_blocks):
    _serve(tiny_model, seed, policy, num_blocks)


def test_the_views_follow_preempted_requests_back(tiny_model):
    """With 12 blocks vLLM's policy preempts: the views of the preempted requests (progress back
    to 0 computed tokens, one more eviction) and of their return are vLLM's too."""
    assert _serve(tiny_model, 0, "vllm", 12) > 0
