"""The adapter's removal of admissions from vLLM's waiting queue (`scheduler._remove`): the same
queue as vLLM's own ``remove_requests`` (a filter), whatever order the queue is in."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.engine

if os.environ.get("KVSCHED_REQUIRE_ENGINE") != "1":
    pytest.importorskip("vllm", reason="needs the vllm extra (pip install 'kvsched[vllm]')")


class _Request:
    """Stands in for vLLM's `Request` (compared by identity, as vLLM's is)."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id

    def __repr__(self) -> str:
        return self.request_id


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 40), front=st.lists(st.integers(0, 39), max_size=5, unique=True),
       picks=st.lists(st.integers(0, 39), max_size=8, unique=True), unknown=st.booleans(),
       data=st.data())
def test_removing_admissions_leaves_the_queue_vllms_own_filter_would(n, front, picks, unknown, data):
    from vllm.v1.core.sched.request_queue import FCFSRequestQueue

    from kvsched.integrations.vllm.scheduler import _remove
    requests = [_Request(f"r{i}") for i in range(n)]
    added = {r.request_id: i for i, r in enumerate(requests)}
    if unknown and requests:                       # a request the adapter never numbered
        del added[requests[data.draw(st.integers(0, n - 1))].request_id]
    queue = FCFSRequestQueue(requests)
    moved = [requests[i] for i in front if i < n]     # put back at the front (preemptions)
    for r in moved:
        queue.remove(r)
    queue.prepend_requests(moved)
    targets = [requests[i] for i in picks if i < n]
    expect = [r for r in queue if r not in targets]
    _remove(queue, targets, lambda r: added.get(r.request_id, -1))
    assert list(queue) == expect
    queue = FCFSRequestQueue(expect + targets)
    _remove(queue, targets)                            # no positions: by identity
    assert list(queue) == expect


def test_an_admission_is_found_by_bisection_in_order_and_by_identity_out_of_order(monkeypatch):
    """Both ways are taken (the property above holds for both)."""
    from vllm.v1.core.sched.request_queue import FCFSRequestQueue

    from kvsched.integrations.vllm import scheduler as module
    requests = [_Request(f"r{i}") for i in range(10)]
    added = {r.request_id: i for i, r in enumerate(requests)}
    position = lambda r: added[r.request_id]      # noqa: E731
    scans = []
    real_map = map
    monkeypatch.setattr(module, "map", lambda f, xs: scans.append(1) or real_map(f, xs), raising=False)
    queue = FCFSRequestQueue(requests)
    module._remove(queue, [requests[7], requests[3]], position)
    assert list(queue) == [r for r in requests if r not in (requests[3], requests[7])] and not scans
    queue = FCFSRequestQueue(reversed(requests))
    module._remove(queue, [requests[2]], position)
    assert list(queue) == [r for r in reversed(requests) if r is not requests[2]] and scans
