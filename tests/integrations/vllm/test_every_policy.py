"""Every registered policy serves through `KVSchedScheduler`, as a server runs it: requests
arrive between steps, a small KV pool preempts, clients abort requests that wait and requests
that run, prefix caching on and off. Each policy must serve every other request in full, never
schedule an aborted one, and keep nothing for the requests that left (`Policy.forget`).
Scheduler level (`kvsched.integrations.vllm.harness`), no model."""

from __future__ import annotations

import numpy as np
import pytest

from kvsched.policies.registry import registered

pytestmark = pytest.mark.engine

#: Specs for the policies that cannot be built from their name alone.
_SPECS = {"wait": "wait:thresholds=4"}
#: Policies a server cannot build from a spec string, and what the user is told.
_NOT_FROM_A_SPEC = {"plan-replay": "plan-replay needs plan="}
#: Per-request tables of the policies that keep them (attribute names, on the policy or its
#: wrapped `_inner`): empty once every request has left.
_PER_REQUEST = ("_lower", "_queued", "_dequeued", "_queue", "_by_size", "_views")


def _tables(policy) -> dict[str, int]:
    sizes = {}
    for owner in (policy, getattr(policy, "_inner", None)):
        for name in _PER_REQUEST:
            table = getattr(owner, name, None)
            if isinstance(table, (dict, list)):
                sizes[f"{type(owner).__name__}.{name}"] = len(table)
    return sizes


#: (max_num_seqs, token budget, KV blocks of 16, workload seed): a small pool that preempts, and
#: two seats that a policy without a seat limit of its own must not wait on with its residents
#: paused (trail did: vLLM deferred its admission, step after step).
_SHAPES = {"small-pool": (6, 96, 24, 7), "two-seats": (2, 32, 40, 3)}


def _build(tiny_model, spec: str, caching: bool, shape=_SHAPES["small-pool"]):
    from kvsched.integrations.vllm import harness
    from kvsched.integrations.vllm.scheduler import KVSchedScheduler
    seats, budget, blocks, _ = shape
    return harness.build_scheduler(harness.HarnessConfig(
        tiny_model, num_blocks=blocks, block_size=16, max_num_seqs=seats, max_num_batched_tokens=budget,
        enable_prefix_caching=caching, additional_config={"kvsched_policy": spec}), KVSchedScheduler)


def test_every_registered_policy_is_covered():
    assert set(_NOT_FROM_A_SPEC) <= set(registered())
    assert set(_SPECS) <= set(registered())


@pytest.mark.parametrize("shape", list(_SHAPES))
@pytest.mark.parametrize("caching", [False, True], ids=["plain", "prefix-caching"])
@pytest.mark.parametrize("name", sorted(registered()))
def test_the_policy_serves_with_aborts(tiny_model, name, caching, shape):
    from vllm.v1.request import RequestStatus

    from kvsched.integrations.vllm import harness
    if name in _NOT_FROM_A_SPEC:
        with pytest.raises(Exception, match=_NOT_FROM_A_SPEC[name]):
            _build(tiny_model, name, caching)
        return
    scheduler = _build(tiny_model, _SPECS.get(name, name), caching, _SHAPES[shape])
    rng = np.random.default_rng(_SHAPES[shape][3])
    hasher = harness.request_block_hasher(scheduler)
    pending = [harness.make_request(int(p), int(o), block_hasher=hasher, extra_args={"kvsched_type_id": 0})
               for p, o in zip(rng.integers(8, 120, 18).tolist(), rng.integers(1, 24, 18).tolist())]
    wanted = {r.request_id: r.max_tokens for r in pending}
    requests = {r.request_id: r for r in pending}
    scheduler.kvsched_has_future_arrivals = lambda: bool(pending)    # WAIT flushes when none
    aborted: set[str] = set()
    aborted_waiting = aborted_running = 0
    for step in range(1500):
        for _ in range(6 if step == 0 else 1 if step % 2 == 0 else 0):     # a burst, then one per 2 steps
            if pending:
                scheduler.add_request(pending.pop())
        if step >= 6 and aborted_waiting < 3:       # a client gives up on a queued request
            queued = [r.request_id for q in scheduler._kvsched_queues() for r in q]
            if len(queued) >= 2:
                scheduler.finish_requests(queued[len(queued) // 2], RequestStatus.FINISHED_ABORTED)
                aborted.add(queued[len(queued) // 2])
                aborted_waiting += 1
        if step >= 10 and aborted_running < 2 and scheduler.running:      # and one that runs
            rid = scheduler.running[-1].request_id
            scheduler.finish_requests(rid, RequestStatus.FINISHED_ABORTED)
            aborted.add(rid)
            aborted_running += 1
        if not pending and not scheduler.has_requests():
            break
        output, _ = harness.step(scheduler)
        assert not set(output.num_scheduled_tokens) & aborted
    assert not pending and not scheduler.has_requests(), f"{name}: requests left after 1500 steps"
    assert (aborted_waiting, aborted_running) == (3, 2)
    served = {rid: r.num_output_tokens for rid, r in requests.items() if rid not in aborted}
    assert served == {rid: n for rid, n in wanted.items() if rid not in aborted}
    assert not scheduler._kvsched_states and not scheduler._kvsched_by_id
    assert all(size == 0 for size in _tables(scheduler.kvsched_policy).values()), _tables(scheduler.kvsched_policy)
