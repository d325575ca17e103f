"""The numba kernel of the `sarathi` family (its fields and packing: `kvsched.engine.compiled.sarathi`)."""

from __future__ import annotations

import numpy as np
from numba import njit

from .common import (extra_blocks, front_push, front_remove, front_snapshot, is_decode, running_add,
                     uncomputed)
from .engine import CONTINUE, queue_arrivals, run_decision
from .layout import DONE, PAUSED

_i = np.int64
_PASS = np.dtype([("count", _i), ("free", _i), ("budget", _i)])    # SarathiPolicy._admit's totals


@njit(cache=True)
def _reserved_blocks(rq, r, st):
    """SarathiPolicy._reserved_blocks: what a partial prefill still needs."""
    if is_decode(rq, r):
        return 0
    return extra_blocks(rq, r, uncomputed(rq, r), st)


@njit(cache=True)
def _admit(pp, rq, st, running, front, e, tokens, r, pass_state):
    """One candidate of SarathiPolicy._admit; False: stop."""
    ps = pass_state[0]
    if ps.budget <= 0 or e.num_running >= pp.max_num_seqs:
        return False
    need = extra_blocks(rq, r, rq[r].prompt + rq[r].outputs, st)
    reserve = pp.reserve if e.num_running > 0 else 0
    if need > ps.free - reserve:
        return False
    n = min(rq[r].prompt + rq[r].outputs, ps.budget)
    tokens[ps.count, 0], tokens[ps.count, 1] = r, n
    ps.count += 1
    ps.free -= need
    ps.budget -= n
    running_add(running, e, r, True)
    front_remove(front, e, r)
    return True


@njit(cache=True)
def decide(pp, rq, st, running, front, queue, alive, e, tokens, evicted, budget):
    """SarathiPolicy.schedule; returns (tokens scheduled, evictions)."""
    num_running = e.num_running
    decodes = np.empty(num_running, dtype=np.int64)
    partials = np.empty(num_running, dtype=np.int64)
    num_decodes = num_partials = reserved = 0
    for j in range(num_running):
        r = running[j]
        if is_decode(rq, r):
            decodes[num_decodes] = r
            num_decodes += 1
        else:
            partials[num_partials] = r
            num_partials += 1
            reserved += _reserved_blocks(rq, r, st)
    free = st.cap_blocks - e.used - reserved
    count, num_evicted = 0, 0
    for j in range(num_decodes):
        r = decodes[j]
        if budget <= 0:
            break
        if rq[r].evicting:
            continue
        need = extra_blocks(rq, r, 1, st)
        while need > free and not rq[r].evicting:
            e.num_running -= 1
            victim = running[e.num_running]
            evicted[num_evicted] = victim
            num_evicted += 1
            rq[victim].evicting = 1
            front_push(front, e, victim)
            free += rq[victim].held + _reserved_blocks(rq, victim, st)
        if rq[r].evicting:
            break
        tokens[count, 0], tokens[count, 1] = r, 1
        count += 1
        free -= need
        budget -= 1
    for j in range(num_partials):
        r = partials[j]
        if budget <= 0:
            break
        if not rq[r].evicting:
            n = min(uncomputed(rq, r), budget)
            tokens[count, 0], tokens[count, 1] = r, n
            count += 1
            budget -= n
    for j in range(num_evicted):
        rq[evicted[j]].evicting = 0
    if num_evicted == 0:
        ps = np.zeros(1, dtype=_PASS)     # an array: see vllm._waiting
        ps[0].count, ps[0].free, ps[0].budget = count, free, budget
        stopped = False
        for r in front_snapshot(front, e, rq):
            if not _admit(pp, rq, st, running, front, e, tokens, r, ps):
                stopped = True
                break
        if not stopped:
            for j in range(e.queue_head, e.queue_len):
                if alive[j] and not _admit(pp, rq, st, running, front, e, tokens, queue[j], ps):
                    break
        count = ps[0].count
    return count, num_evicted


@njit(cache=True)
def simulate(rq, engine, settings, params, cost, running, front, queue, alive, pq, ent, peaks, tokens,
             evicted, gaps, max_iterations):
    """As `kvsched.engine.compiled.vllm.simulate`, with Sarathi's decision."""
    e, st, pp = engine[0], settings[0], params[0]
    budget = pp.chunk_size if st.engine_budget < 0 else min(pp.chunk_size, st.engine_budget)
    stop_at = e.iteration + max_iterations
    while e.done < rq.shape[0]:
        if e.iteration >= stop_at:
            return PAUSED
        if not queue_arrivals(rq, e, st, queue, alive):
            continue
        count, num_evicted = decide(pp, rq, st, running, front, queue, alive, e, tokens, evicted, budget)
        code = run_decision(rq, e, st, cost, running, queue, alive, tokens, count, evicted, num_evicted, gaps)
        if code != CONTINUE:
            return code
    return DONE
