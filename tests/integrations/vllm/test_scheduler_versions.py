"""The adapter against the shapes vLLM 0.33/0.34 give what it reads (read from their source; only
0.32 has a CPU build, so these run on 0.32 with those shapes built by hand):

- 0.34 sends a request resumed after a preemption as a new one (`SchedulerOutput.
  scheduled_new_reqs`) and drops ``CachedRequestData.resumed_req_ids``; 0.32/0.33 flag it there;
- 0.33+ call ``_get_local_prefix_cache_hit(request, max_cache_hit_length)`` with a second argument.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.engine

if os.environ.get("KVSCHED_REQUIRE_ENGINE") != "1":
    pytest.importorskip("vllm", reason="needs the vllm extra (pip install 'kvsched[vllm]')")


def _output(new, cached, resumed=None):
    """A SchedulerOutput's two request lists: new (req_id, computed) and cached (req_id, computed);
    `resumed` None: the 0.34 shape (no resumed_req_ids)."""
    data = SimpleNamespace(req_ids=[r for r, _ in cached], num_computed_tokens=[c for _, c in cached])
    if resumed is not None:
        data.resumed_req_ids = set(resumed)
    return SimpleNamespace(scheduled_new_reqs=[SimpleNamespace(req_id=r, num_computed_tokens=c) for r, c in new],
                           scheduled_cached_reqs=data)


def test_admission_hits_read_resumed_requests_where_each_version_sends_them():
    from kvsched.integrations.vllm.scheduler import _admission_hits
    ids = {"a": 0, "b": 1, "c": 2}
    # 0.32/0.33: b resumed among the cached requests, c an ordinary running one
    old = _output(new=[("a", 64)], cached=[("b", 32), ("c", 90)], resumed={"b"})
    assert _admission_hits(old, ids) == {0: 64, 1: 32}
    # 0.34: b resumed, sent as new; the cached list holds running requests only
    new = _output(new=[("a", 64), ("b", 32)], cached=[("c", 90)])
    assert _admission_hits(new, ids) == {0: 64, 1: 32}
    assert _admission_hits(_output(new=[], cached=[("c", 90)]), ids) == {}


def _adapter(monkeypatch, caps, found):
    """A bare `KVSchedScheduler` (no engine) over vLLM 0.33+'s base hook, which records its calls,
    with the state the adapter's hook reads."""
    from vllm.v1.core.sched.scheduler import Scheduler

    from kvsched.integrations.vllm.scheduler import KVSchedScheduler
    calls = []

    def base_hook(self, request, max_cache_hit_length=None):      # 0.33+'s signature
        calls.append((request.request_id, max_cache_hit_length))
        return "base", 0, 0, False

    monkeypatch.setattr(Scheduler, "_get_local_prefix_cache_hit", base_hook)
    adapter = object.__new__(KVSchedScheduler)
    adapter.block_size = 16
    adapter._kvsched_caps, adapter._kvsched_hit_blocks, adapter._kvsched_hit_shrunk = caps, found, {}
    return adapter, calls


def test_the_prefix_hit_hook_takes_the_second_argument_of_vllm_033(monkeypatch):
    request = SimpleNamespace(request_id="r", num_tokens=40)
    outside, calls = _adapter(monkeypatch, None, {})      # outside the adapter's step: the base rule
    assert outside._get_local_prefix_cache_hit(request, None)[0] == "base"
    assert outside._get_local_prefix_cache_hit(request)[0] == "base"
    assert calls == [("r", None), ("r", None)]
    blocks = [SimpleNamespace(block_hash=h, ref_cnt=1) for h in (7, 8)]
    found = {"r": (SimpleNamespace(blocks=(blocks,)), (7, 8))}
    told, calls = _adapter(monkeypatch, {"r": 8}, found)  # the boundary hit the policy was told
    result = told._get_local_prefix_cache_hit(request, None)
    assert result[1:] == (32, 0, False) and result[0].blocks == (blocks,) and calls == []
    capped, calls = _adapter(monkeypatch, {"r": 8}, found)   # a cap on hits: the base rule decides
    assert capped._get_local_prefix_cache_hit(request, 16)[0] == "base"
    assert calls == [("r", 16)]
