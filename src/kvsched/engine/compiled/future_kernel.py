"""The numba kernel of the `future` family (its fields and packing: `kvsched.engine.compiled.future`)."""

from __future__ import annotations

import numpy as np
from numba import njit

from .common import ceil_div, kv_held, running_add, running_remove, uncomputed
from .engine import CONTINUE, jump_to_next_arrival, next_arrival, run_decision
from .layout import DONE, PAUSED, RUNNING
from .future import LARGEST, LEAST_PROGRESS, MOST_PROGRESS, NO_REFINE, REFINE_DOUBLE, REFINE_NEXT

# `kvsched.policies._future_memory` (mcsf, mc-benchmark, amax, amin, hsf) without an engine token
# budget: every admitted request computes all its tokens in one iteration, every resident request
# every iteration. The predicted timeline is a set of entries (base, end) sorted by end with their
# peaks, kept as `FutureMemory` keeps them: only the set matters to `load_at` and `fits`, so the
# kernel re-derives every resident's entry each iteration and replaces those that changed (the
# Python policy skips the ones it knows are unchanged).

@njit(cache=True)
def _entries_from(rq, ent, e, k, right):
    """First entry index whose end is >= k (right=False) or > k (right=True)."""
    lo, hi = 0, e.num_entries
    while lo < hi:
        mid = (lo + hi) // 2
        end = rq[ent[mid]].memory_end
        if end < k or (right and end == k):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _load_at(rq, ent, e, k, bs):
    """FutureMemory.load_at: predicted blocks in iteration k."""
    total = 0
    for i in range(_entries_from(rq, ent, e, k, False), e.num_entries):
        total += ceil_div(rq[ent[i]].memory_base + k, bs)
    return total


@njit(cache=True)
def _fits(rq, ent, peak, e, base, end, cap, bs):
    """FutureMemory.fits."""
    if _load_at(rq, ent, e, end, bs) + ceil_div(base + end, bs) > cap:
        return False
    for i in range(_entries_from(rq, ent, e, end, True)):
        if peak[i] + ceil_div(base + rq[ent[i]].memory_end, bs) > cap:
            return False
    return True


@njit(cache=True)
def _entry_add(rq, ent, peak, e, r, base, end, bs):
    """FutureMemory.add."""
    own = _load_at(rq, ent, e, end, bs) + ceil_div(base + end, bs)
    j = _entries_from(rq, ent, e, end, True)
    for i in range(j):
        peak[i] += ceil_div(base + rq[ent[i]].memory_end, bs)
    for i in range(e.num_entries, j, -1):
        ent[i], peak[i] = ent[i - 1], peak[i - 1]
    ent[j], peak[j] = r, own
    e.num_entries += 1
    rq[r].in_memory, rq[r].memory_base, rq[r].memory_end = 1, base, end


@njit(cache=True)
def _entry_remove(rq, ent, peak, e, r, bs):
    """FutureMemory.remove."""
    i = 0
    while ent[i] != r:
        i += 1
    for j in range(i, e.num_entries - 1):
        ent[j], peak[j] = ent[j + 1], peak[j + 1]
    e.num_entries -= 1
    rq[r].in_memory = 0
    base, end = rq[r].memory_base, rq[r].memory_end
    for j in range(_entries_from(rq, ent, e, end, True)):
        peak[j] -= ceil_div(base + rq[ent[j]].memory_end, bs)


@njit(cache=True)
def _estimate(rq, r):
    """FutureMemoryPolicy._estimate: the estimate, at least one more than generated."""
    return max(rq[r].estimate, rq[r].outputs + 1)


@njit(cache=True)
def _timeline(rq, r, iteration, emitted):
    """FutureMemoryPolicy._timeline with all uncomputed tokens now: (base, end)."""
    first = rq[r].prompt + rq[r].outputs + emitted
    return first - iteration, iteration + _estimate(rq, r) - rq[r].outputs - 1


@njit(cache=True)
def _refine(rq, r, rule, factor):
    """AMin.refine: raise the estimate once the request has generated that many tokens."""
    estimate, generated = rq[r].estimate, rq[r].outputs
    while estimate <= generated:
        if rule == REFINE_NEXT:
            estimate = generated + 1
        elif rule == REFINE_DOUBLE:
            estimate *= 2
        else:
            estimate = max(estimate + 1, int(np.ceil((1.0 + factor) * estimate)))
    rq[r].estimate = estimate


@njit(cache=True)
def _pq_before(rq, a, b, fcfs):
    """Queue order (FutureMemoryPolicy.priority, then id): is a before b?"""
    if not fcfs:
        if rq[a].key_estimate != rq[b].key_estimate:
            return rq[a].key_estimate < rq[b].key_estimate
    if rq[a].arrival != rq[b].arrival:
        return rq[a].arrival < rq[b].arrival
    if not fcfs and rq[a].prompt != rq[b].prompt:
        return rq[a].prompt < rq[b].prompt
    return a < b


@njit(cache=True)
def pq_insert(pp, rq, pq, e, r):
    """FutureMemoryPolicy._enqueue: the key is fixed now (estimate, arrival, prompt)."""
    rq[r].key_estimate = _estimate(rq, r)
    rq[r].size = rq[r].prompt + rq[r].outputs
    k = e.pq_len
    while k > 0 and _pq_before(rq, r, pq[k - 1], pp.fcfs == 1):
        pq[k] = pq[k - 1]
        k -= 1
    pq[k] = r
    e.pq_len += 1


@njit(cache=True)
def _victim_before(rq, a, b, order, emitted):
    """victim_key: is a evicted before b?"""
    if order == LEAST_PROGRESS and rq[a].outputs != rq[b].outputs:
        return rq[a].outputs < rq[b].outputs
    if order == MOST_PROGRESS and rq[a].outputs != rq[b].outputs:
        return rq[a].outputs > rq[b].outputs
    if order == LARGEST:
        ka = kv_held(rq[a].computed, rq[a].prompt, rq[a].outputs, emitted)
        kb = kv_held(rq[b].computed, rq[b].prompt, rq[b].outputs, emitted)
        if ka != kb:
            return ka > kb
    return rq[a].seq > rq[b].seq


@njit(cache=True)
def decide(pp, rq, st, running, pq, ent, peak, e, tokens, evicted):
    """FutureMemoryPolicy.schedule without a token budget; returns (tokens scheduled, evictions)."""
    bs, emitted, now = st.block_size, st.emitted, e.iteration
    # sync: entries of requests no longer resident or predicted to have ended go; the others are
    # re-derived (A_min first raises the estimates its residents have reached)
    i = 0
    while i < e.num_entries:
        r = ent[i]
        if rq[r].status != RUNNING or rq[r].memory_end < now:
            _entry_remove(rq, ent, peak, e, r, bs)
        else:
            i += 1
    num_running = e.num_running
    for j in range(num_running):
        r = running[j]
        if pp.refine != NO_REFINE:
            _refine(rq, r, pp.refine, pp.refine_factor)
        base, end = _timeline(rq, r, now, emitted)
        if rq[r].in_memory and (rq[r].memory_base != base or rq[r].memory_end != end):
            _entry_remove(rq, ent, peak, e, r, bs)
        if not rq[r].in_memory:
            _entry_add(rq, ent, peak, e, r, base, end, bs)
    # overflow guard: evict in victim order until the residents fit in this iteration
    num_evicted = 0
    load = _load_at(rq, ent, e, now, bs)
    if load > st.cap_blocks:
        order = running[:num_running].copy()
        for a in range(1, num_running):          # insertion sort by the victim key
            x, b = order[a], a
            while b > 0 and _victim_before(rq, x, order[b - 1], pp.victim, emitted):
                order[b] = order[b - 1]
                b -= 1
            order[b] = x
        for j in range(num_running):
            r = order[j]
            base = rq[r].memory_base
            _entry_remove(rq, ent, peak, e, r, bs)
            load -= ceil_div(base + now, bs)
            evicted[num_evicted] = r
            num_evicted += 1
            rq[r].evicting = 1
            if load <= st.cap_blocks:
                break
    count = 0
    for j in range(num_running):                 # serve_residents: all their tokens
        r = running[j]
        if not rq[r].evicting:
            tokens[count, 0], tokens[count, 1] = r, uncomputed(rq, r)
            count += 1
    if num_evicted == 0:
        count = _admit(pp, rq, st, running, pq, ent, peak, e, tokens, count, num_running)
    for j in range(num_evicted):                 # back to the queue, keeping their estimates
        r = evicted[j]
        rq[r].evicting = 0
        running_remove(running, e, r)
        pq_insert(pp, rq, pq, e, r)
    return count, num_evicted


@njit(cache=True)
def _admit(pp, rq, st, running, pq, ent, peak, e, tokens, count, num_residents):
    """FutureMemoryPolicy._admit (and _admit_alone) without a token budget."""
    bs, emitted, now, cap = st.block_size, st.emitted, e.iteration, pp.cap
    load_now = _load_at(rq, ent, e, now, bs)
    admitted = np.empty(e.pq_len, dtype=np.int64)    # queue indices, increasing
    num_admitted, smallest = 0, -1
    for idx in range(e.pq_len):
        r = pq[idx]
        base, end = _timeline(rq, r, now, emitted)
        own = ceil_div(base + now, bs)
        if load_now + own <= cap and _fits(rq, ent, peak, e, base, end, cap, bs):
            _entry_add(rq, ent, peak, e, r, base, end, bs)
            tokens[count, 0], tokens[count, 1] = r, rq[r].prompt + rq[r].outputs
            count += 1
            running_add(running, e, r, False)
            admitted[num_admitted] = idx
            num_admitted += 1
            load_now += own
            continue
        if not pp.skip:
            break
        if smallest < 0:                             # _smallest_blocks: the queue as it was
            smallest = rq[pq[0]].size
            for j in range(e.pq_len):
                smallest = min(smallest, rq[pq[j]].size)
        if load_now + ceil_div(smallest + emitted, bs) > cap:
            break
    if num_admitted == 0 and num_residents == 0 and e.pq_len > 0:
        r = pq[0]                                    # liveness: the head runs alone
        base, end = _timeline(rq, r, now, emitted)
        _entry_add(rq, ent, peak, e, r, base, end, bs)
        tokens[count, 0], tokens[count, 1] = r, rq[r].prompt + rq[r].outputs
        count += 1
        running_add(running, e, r, False)
        admitted[0] = 0
        num_admitted = 1
    if num_admitted:                                 # compact the queue past the first admitted
        k, a = admitted[0], 0
        for idx in range(admitted[0], e.pq_len):
            if a < num_admitted and admitted[a] == idx:
                a += 1
            else:
                pq[k] = pq[idx]
                k += 1
        e.pq_len = k
    return count


@njit(cache=True)
def simulate(rq, engine, settings, params, cost, running, front, queue, alive, pq, ent, peaks, tokens,
             evicted, gaps, max_iterations):
    """As `kvsched.engine.compiled.vllm.simulate`, with the family's decision (arrivals wait in
    the priority queue `pq`)."""
    e, st, pp = engine[0], settings[0], params[0]
    stop_at = e.iteration + max_iterations
    while e.done < rq.shape[0]:
        if e.iteration >= stop_at:
            return PAUSED
        r = next_arrival(rq, e, st)
        while r >= 0:
            pq_insert(pp, rq, pq, e, r)
            r = next_arrival(rq, e, st)
        if e.pq_len == 0 and e.num_running == 0:
            jump_to_next_arrival(rq, e)
            continue
        count, num_evicted = decide(pp, rq, st, running, pq, ent, peaks, e, tokens, evicted)
        code = run_decision(rq, e, st, cost, running, queue, alive, tokens, count, evicted, num_evicted, gaps)
        if code != CONTINUE:
            return code
    return DONE
