"""The engine's part of a compiled run (numba): arrivals, evictions and the iteration itself.

Each family's ``simulate`` loop (`vllm`, `sarathi`, `future`) calls these around its policy's
decision; they repeat `kvsched.engine.simulation.Simulation`'s steps (`_admit_arrivals`, `_evict`,
`_validate`, `_run_iteration`, `_advance`, `finish`) with the rules of `kvsched.engine.rules`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import cost as cost_kernels
from .common import ceil_div, dequeue, kv_held, queue_push, running_remove
from .layout import FINISHED, INVALID, REJECTED, RUNNING, STALLED, WAITING

CONTINUE = -1     # run_decision: the run goes on


@njit(cache=True)
def next_arrival(rq, e, st):
    """The next request to become visible now (arrival_time <= now), rejecting on the way those
    whose peak KV cannot fit (rules.rejection_reason); -1 when none."""
    n = rq.shape[0]
    while e.next_arrival < n and rq[e.next_arrival].arrival <= e.now:
        r = e.next_arrival
        e.next_arrival += 1
        if ceil_div(rq[r].prompt + rq[r].true_output - 1 + st.emitted, st.block_size) > st.cap_blocks:
            rq[r].status = REJECTED
            e.done += 1
            continue
        rq[r].status = WAITING
        return r
    return -1


@njit(cache=True)
def queue_arrivals(rq, e, st, queue, alive):
    """The queue families' boundary start: the arrivals visible now join the waiting queue; if
    nothing waits or runs the clock jumps to the next arrival and False is returned."""
    r = next_arrival(rq, e, st)
    while r >= 0:
        queue_push(queue, alive, e, r)
        r = next_arrival(rq, e, st)
    if e.queue_alive + e.num_front == 0 and e.num_running == 0:
        jump_to_next_arrival(rq, e)
        return False
    return True


@njit(cache=True)
def jump_to_next_arrival(rq, e):
    """Nothing to run: the clock jumps to the next arrival (False: none is left)."""
    if e.next_arrival >= rq.shape[0]:
        return False
    e.now = max(e.now, rq[e.next_arrival].arrival)
    return True


@njit(cache=True)
def run_decision(rq, e, st, cost, running, queue, alive, tokens, count, evicted, num_evicted, gaps):
    """Carry out the policy's decision: the evictions (the policy has taken them out of
    `running`), then the iteration over ``tokens[:count]`` = (request, tokens) pairs, or an idle
    jump if it scheduled nothing. Returns CONTINUE, STALLED or INVALID."""
    for j in range(num_evicted):          # Simulation._evict
        q = rq[evicted[j]]
        e.used -= q.held
        q.held = 0
        q.computed = 0
        q.evictions += 1
        q.status = WAITING
    if count == 0:
        if num_evicted == 0 and not jump_to_next_arrival(rq, e):   # Simulation._idle
            return STALLED
        return CONTINUE
    # Simulation._validate: the batch and the KV after the iteration
    used, total = e.used, 0
    pre_seqs = pre_tokens = pre_context = pre_work = dec_seqs = dec_context = 0
    for j in range(count):
        q, k = rq[tokens[j, 0]], tokens[j, 1]
        outputs = q.outputs
        computed = q.computed if q.status == RUNNING else 0
        uncomputed = q.prompt + outputs - computed
        if k < 1 or k > uncomputed:
            return INVALID
        after = computed + k
        emits = 1 if k == uncomputed else 0
        used += ceil_div(kv_held(after, q.prompt, outputs + emits, st.emitted), st.block_size) - q.held
        if emits and k == 1 and outputs >= 1:
            dec_seqs += 1
            dec_context += after
        else:
            pre_seqs += 1
            pre_tokens += k
            pre_context += after
            pre_work += k * after
        total += k
    if (st.engine_budget >= 0 and total > st.engine_budget) or used > st.cap_blocks:
        return INVALID
    duration = cost_kernels.iteration_time(cost, pre_seqs, pre_tokens, pre_context, pre_work, dec_seqs,
                                           dec_context)
    start = e.now
    end = start + duration
    used_tokens = used * st.block_size
    e.peak = max(e.peak, used_tokens)
    e.token_seconds += used_tokens * duration
    e.busy += duration
    for j in range(count):                # Simulation._advance
        r, k = tokens[j, 0], tokens[j, 1]
        q = rq[r]
        if q.status == WAITING:           # admitted now (the policy put it in `running`)
            dequeue(queue, alive, e, r)
            q.status = RUNNING
            q.seq = e.admit_seq
            e.admit_seq += 1
            if np.isnan(q.scheduled):
                q.scheduled = start
        before = q.computed
        q.computed = before + k
        q.total += k
        if before < q.high_water:
            q.recomputed += min(k, q.high_water - before)
        q.high_water = max(q.high_water, q.computed)
        if q.computed == q.prompt + q.outputs:       # it emits a token
            q.outputs += 1
            if np.isnan(q.first_token):
                q.first_token = end
            if q.outputs >= 2 and st.record_gaps:
                gaps[q.gap_offset + q.outputs - 2] = end - q.last_token
            q.last_token = end
            if q.outputs == q.true_output:           # Simulation.finish
                q.finish = end
                q.status = FINISHED
                running_remove(running, e, r)
                e.used -= q.held
                q.held = 0
                e.done += 1
                continue
        held = ceil_div(kv_held(q.computed, q.prompt, q.outputs, st.emitted), st.block_size)
        e.used += held - q.held
        q.held = held
    e.now = end
    e.iteration += 1
    return CONTINUE
