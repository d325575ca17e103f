"""Helpers every compiled policy family shares: the request rules and the engine's queues (numba).

Each repeats a plain rule of `kvsched.engine.rules` (or a policy helper) with the same integer
arithmetic; the docstrings name it. ``rq`` holds the `layout.REQUEST` records, ``e`` the
`layout.ENGINE` record, ``st`` the `layout.SETTINGS` record.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .layout import RUNNING, WAITING


@njit(cache=True)
def ceil_div(a, b):
    return -(-a // b)


@njit(cache=True)
def kv_held(computed, prompt, outputs, emitted):
    """rules.kv_tokens_held."""
    if emitted and outputs >= 1 and computed == prompt + outputs - 1:
        return computed + 1
    return computed


@njit(cache=True)
def extra_blocks(rq, r, n, st):
    """rules.extra_blocks: blocks needed beyond those held after n more tokens."""
    q, emitted = rq[r], st.emitted
    outputs = q.outputs
    if q.status == RUNNING:
        held = computed = q.computed
        if emitted and outputs >= 1 and computed == q.prompt + outputs - 1:
            held += 1
    else:
        held = computed = 0
    after = computed + n
    if after == q.prompt + outputs:
        outputs += 1
    if emitted and outputs >= 1 and after == q.prompt + outputs - 1:
        after += 1
    return ceil_div(after, st.block_size) - ceil_div(held, st.block_size)


@njit(cache=True)
def uncomputed(rq, r):
    """rules.num_uncomputed_tokens."""
    return rq[r].prompt + rq[r].outputs - rq[r].computed


@njit(cache=True)
def is_decode(rq, r):
    """rules.is_decode."""
    return rq[r].outputs >= 1 and uncomputed(rq, r) == 1


# ----------------------------------------------------------------------------- the running list

@njit(cache=True)
def running_add(running, e, r, by_id):
    """Append (admission order) or insert in id order."""
    k = e.num_running
    if by_id:
        while k > 0 and running[k - 1] > r:
            running[k] = running[k - 1]
            k -= 1
    running[k] = r
    e.num_running += 1


@njit(cache=True)
def running_remove(running, e, r):
    k = 0
    while running[k] != r:
        k += 1
    for j in range(k, e.num_running - 1):
        running[j] = running[j + 1]
    e.num_running -= 1


# ----------------------------------------------------------------------------- the waiting queues
# Arrivals wait in id order in ``queue`` (with ``alive`` flags and a head index); a preempted request
# waits in ``front`` instead (the policies' FrontQueue, latest first), which the Python engine's
# waiting list orders the same way for vllm and sarathi: front first, then the rest by id.

@njit(cache=True)
def queue_push(queue, alive, e, r):
    queue[e.queue_len] = r
    alive[e.queue_len] = True
    e.queue_len += 1
    e.queue_alive += 1


@njit(cache=True)
def dequeue(queue, alive, e, r):
    """Mark request r's queue entry dead if it has one (arrivals only; ids are sorted)."""
    lo, hi = e.queue_head, e.queue_len
    while lo < hi:
        mid = (lo + hi) // 2
        if queue[mid] < r:
            lo = mid + 1
        else:
            hi = mid
    if lo < e.queue_len and queue[lo] == r and alive[lo]:
        alive[lo] = False
        e.queue_alive -= 1
        while e.queue_head < e.queue_len and not alive[e.queue_head]:
            e.queue_head += 1


@njit(cache=True)
def front_push(front, e, r):
    """FrontQueue.push: a just-preempted request goes first."""
    for j in range(e.num_front, 0, -1):
        front[j] = front[j - 1]
    front[0] = r
    e.num_front += 1


@njit(cache=True)
def front_remove(front, e, r):
    """FrontQueue.admitted."""
    k, n = 0, e.num_front
    while k < n and front[k] != r:
        k += 1
    if k == n:
        return
    for j in range(k, n - 1):
        front[j] = front[j + 1]
    e.num_front -= 1


@njit(cache=True)
def front_snapshot(front, e, rq):
    """The preempted requests still waiting, latest first (the start of FrontQueue.order)."""
    out = np.empty(e.num_front, dtype=np.int64)
    k = 0
    for j in range(e.num_front):
        if rq[front[j]].status == WAITING:
            out[k] = front[j]
            k += 1
    return out[:k]
