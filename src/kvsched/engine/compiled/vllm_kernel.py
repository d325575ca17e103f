"""The numba kernel of the `vllm` family (its fields and packing: `kvsched.engine.compiled.vllm`)."""

from __future__ import annotations

import numpy as np
from numba import njit

from .common import extra_blocks, front_push, front_remove, front_snapshot, running_add, uncomputed
from .engine import CONTINUE, queue_arrivals, run_decision
from .layout import DONE, PAUSED

_i = np.int64
#: One pass over the waiting queue (VLLMPolicy._schedule_waiting's running totals).
_PASS = np.dtype([("count", _i), ("free", _i), ("budget", _i), ("pass_budget", _i), ("num_prompts", _i),
                  ("longest", _i)])


@njit(cache=True)
def _admit(pp, rq, st, running, front, e, tokens, r, pass_state):
    """One candidate of VLLMPolicy._schedule_waiting; returns 0 (admitted), 1 (skip it) or 2 (stop)."""
    ps = pass_state[0]
    if ps.budget <= 0 or e.num_running >= pp.max_num_seqs:
        return 2
    remaining = rq[r].prompt + rq[r].outputs
    if pp.padded:
        if (ps.num_prompts + 1) * max(remaining, ps.longest) > ps.pass_budget:
            return 2
    elif not pp.chunked and remaining > ps.budget:
        return 2
    n = min(remaining, ps.budget)
    must_fit = remaining if pp.full_prompt_must_fit else n
    reserve = pp.reserve if e.num_running > 0 else 0
    if extra_blocks(rq, r, must_fit, st) > ps.free - reserve:
        return 1 if pp.continue_on_block else 2
    tokens[ps.count, 0], tokens[ps.count, 1] = r, n
    ps.count += 1
    ps.free -= extra_blocks(rq, r, n, st)
    ps.budget -= n
    ps.num_prompts += 1
    ps.longest = max(ps.longest, n)
    running_add(running, e, r, pp.last_arrived == 1)
    front_remove(front, e, r)
    return 0


@njit(cache=True)
def _waiting(pp, rq, st, running, front, queue, alive, e, tokens, count, free, budget):
    """VLLMPolicy._schedule_waiting over the front queue, then the arrivals in id order."""
    # An array, not a record taken from one: numba frees a temporary array under its records.
    ps = np.zeros(1, dtype=_PASS)
    ps[0].count, ps[0].free, ps[0].budget, ps[0].pass_budget = count, free, budget, budget
    for r in front_snapshot(front, e, rq):
        if _admit(pp, rq, st, running, front, e, tokens, r, ps) == 2:
            return ps[0].count
    for j in range(e.queue_head, e.queue_len):
        if alive[j] and _admit(pp, rq, st, running, front, e, tokens, queue[j], ps) == 2:
            break
    return ps[0].count


@njit(cache=True)
def decide(pp, rq, st, running, front, queue, alive, e, tokens, evicted, budget):
    """VLLMPolicy.schedule; returns (tokens scheduled, evictions)."""
    count, num_evicted = 0, 0
    free = st.cap_blocks - e.used
    if pp.prefill_first:
        count = _waiting(pp, rq, st, running, front, queue, alive, e, tokens, 0, free, budget)
        if count:
            return count, 0
    floor = pp.decode_needs_free_block
    i = 0
    while i < e.num_running and budget > 0:
        r = running[i]
        n = min(uncomputed(rq, r), budget)
        need = extra_blocks(rq, r, n, st)
        stop = False
        while max(need, floor) > free:
            e.num_running -= 1
            victim = running[e.num_running]
            evicted[num_evicted] = victim
            num_evicted += 1
            free += rq[victim].held
            front_push(front, e, victim)
            if victim == r:
                stop = True
                break
        if stop:
            break
        tokens[count, 0], tokens[count, 1] = r, n
        count += 1
        free -= need
        budget -= n
        i += 1
    if num_evicted == 0 and not pp.prefill_first:
        count = _waiting(pp, rq, st, running, front, queue, alive, e, tokens, count, free, budget)
    return count, num_evicted


@njit(cache=True)
def simulate(rq, engine, settings, params, cost, running, front, queue, alive, pq, ent, peaks, tokens,
             evicted, gaps, max_iterations):
    """Run (or resume) a simulation for at most `max_iterations` more iterations; returns DONE,
    PAUSED, STALLED or INVALID (`kvsched.engine.compiled.layout`)."""
    e, st, pp = engine[0], settings[0], params[0]
    budget = pp.budget if st.engine_budget < 0 else min(pp.budget, st.engine_budget)
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
