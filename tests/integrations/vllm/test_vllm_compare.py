"""The engine/simulator comparison itself (no engine needed): hand-worked traces."""

from __future__ import annotations

import dataclasses

import numpy as np

from kvsched import Simulator, UnitTime, Workload
from kvsched.engine.simulator import IterationRecord
from kvsched.integrations.vllm.driver import _Replay, admission_order, compare
from kvsched.policies import make


def _it(tokens, evicted=(), kv=0):
    return IterationRecord(0.0, 1.0, dict(tokens), tuple(evicted), kv)


def test_admission_order_counts_readmissions_after_eviction():
    # prompts 4 and 4, outputs 3 and 3 (hand-worked with vLLM's token rule):
    # it0 admits 0 (4 tokens: first token); it1 decodes 0, admits 1; it2 evicts 1, 0 finishes;
    # it3 re-admits 1 with prompt + 1 generated = 5 tokens; it4 finishes 1.
    w = Workload.build(np.zeros(2), [4, 4], [3, 3])
    its = [_it({0: 4}), _it({0: 1, 1: 4}), _it({0: 1}, evicted=(1,)), _it({1: 5}), _it({1: 1})]
    assert admission_order(its, w) == [0, 1, 1]


def test_finished_requests_leave_the_resident_set():
    # outputs of 1 token: each request finishes in its prefill iteration; ids reused never happen,
    # but a request that finished must not count as resident (else a later id looks resident).
    w = Workload.build(np.zeros(3), [2, 2, 2], [1, 2, 1])
    its = [_it({0: 2, 1: 2}), _it({1: 1, 2: 2})]
    assert admission_order(its, w) == [0, 1, 2]


def test_replay_classifies_prefill_and_decode_and_counts_recomputation():
    w = Workload.build(np.zeros(2), [3, 2], [2, 2])
    r = _Replay(w)
    b = r.batch({0: 2, 1: 2})
    assert (b.num_prefill_seqs, b.num_decode_seqs, b.num_prefill_tokens) == (2, 0, 4)
    r.advance({0: 2, 1: 2}, 0.0, 1.0)            # 0: partial prefill; 1: prefill done, token 1
    b = r.batch({0: 1, 1: 1})
    assert (b.num_prefill_seqs, b.num_decode_seqs) == (1, 1)   # 0 finishes its prompt, 1 decodes
    r.advance({0: 1, 1: 1}, 1.0, 2.0)
    assert r.finish[1] == 2.0 and np.isnan(r.finish[0]) and r.first_token[0] == 2.0
    r.preempt([0])
    r.advance({0: 4}, 2.0, 3.0)                  # recompute 3 prompt + 1 generated
    assert r.finish[0] == 3.0 and r.recomputed[0] == 3 and r.evictions[0] == 1


def _sim_run():
    w = Workload.build(np.zeros(6), [40, 30, 50, 20, 35, 45], [20, 30, 10, 25, 15, 30])
    sim = Simulator(UnitTime(), 6 * 32, block_size=32, max_num_batched_tokens=64, record_iterations=True)
    return sim.run(w, make("vllm", max_num_batched_tokens=64))


def test_compare_accepts_identical_runs_and_flags_each_kind_of_difference():
    a = _sim_run()
    assert a.num_evictions.sum() > 0            # memory binds: the trace has preemptions
    assert compare(a, a).matches

    its = list(a.iterations)
    k = 3
    moved = dict(its[k].num_tokens)
    first = next(iter(moved))
    moved[first] += 1
    b = dataclasses.replace(a, iterations=its[:k] + [dataclasses.replace(its[k], num_tokens=moved)] + its[k + 1:])
    c = compare(b, a)
    assert not c.matches and c.num_batch_mismatches == 1 and c.first_divergence == k

    kv = its[:k] + [dataclasses.replace(its[k], kv_used_tokens=its[k].kv_used_tokens + 32)] + its[k + 1:]
    c = compare(dataclasses.replace(a, iterations=kv), a)
    assert c.num_kv_mismatches == 1 and c.num_batch_mismatches == 0 and not c.matches

    ev = a.num_evictions.copy()
    ev[0] += 1
    c = compare(dataclasses.replace(a, num_evictions=ev), a)
    assert not c.evictions_equal and not c.matches

    rej = a.rejected.copy()
    rej[1] = True
    c = compare(dataclasses.replace(a, rejected=rej), a)
    assert not c.rejections_equal and not c.matches

    c = compare(dataclasses.replace(a, iterations=its[:-1]), a)
    assert not c.matches and c.num_engine_iterations == len(its) - 1
