"""Compiled (numba) simulations of the built-in policies `vllm`, `sarathi` and the future-memory
family (`mcsf`, `mc-benchmark`, `amax`, `amin`, `hsf`, without an engine token budget).

Imported only by `kvsched.engine.compiled`, and only when numba is installed (the ``fast`` extra, or the
numba the vLLM CPU build brings). Everything here repeats, in the same order and with the same
floating-point operations, what the Python engine (`kvsched.engine.simulator`), the policies
(`kvsched.policies.vllm`, `.sarathi`, `._waiting_queue`, `._future_memory`, `.mcsf`, `.amin`) and
the cost models (`kvsched.cost.models`, `kvsched.cost.calibrated`) do; the tests compare every per-request
record and run figure with the reference loop's, bit for bit. Read those modules for the rules;
comments here only say where the representation differs.

Representation. Request ids are the workload's row indices, and the workload is sorted by arrival,
so FCFS order ((arrival time, id)) is id order. State lives in arrays so that a run can stop after
a number of iterations and resume (progress reports):

- ``ints[r, field]`` per request (the ``R_*`` columns), ``times[r, field]`` (``T_*``, NaN = unset);
- the waiting queue: arrivals in id order (``queue``, with ``alive`` flags and a head index); a
  preempted request waits in ``front`` instead (the policies' front queue, latest first), which
  the Python engine's waiting list orders the same way for these policies: front first, then the
  rest by id;
- ``running``: resident ids in the policy's order (admission order for ``vllm`` and the
  future-memory policies, id order when vllm's victim is the last arrived and for ``sarathi``,
  which re-sort by arrival every iteration);
- the future-memory policies' queue ``pq`` (ids in priority order) and predicted timeline
  (``ent``: ids sorted by predicted end, with their ``peak`` loads; see `_entries_from`);
- ``scal_i`` / ``scal_f``: the engine's counters (``S_*`` / ``F_*``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# request status (kvsched.state.Status)
NOT_ARRIVED, WAITING, RUNNING, FINISHED, REJECTED = 0, 1, 2, 3, 4
# ints[r, ...]
(R_STATUS, R_COMPUTED, R_OUTPUTS, R_TOTAL, R_MAX, R_RECOMPUTED, R_EVICTIONS, R_HELD, R_FLAG,
 R_SEQ, R_EST, R_KEY_EST, R_SIZE, R_IN_MEM, R_MEM_BASE, R_MEM_END) = range(16)
NUM_R = 16
# times[r, ...]
T_SCHEDULED, T_FIRST_TOKEN, T_FINISH = range(3)
# scal_i[...]
(S_NEXT_ARRIVAL, S_DONE, S_ITERATION, S_USED, S_PEAK, S_NUM_RUNNING, S_NUM_FRONT, S_QUEUE_HEAD,
 S_QUEUE_LEN, S_QUEUE_ALIVE, S_ADMIT_SEQ, S_PQ_LEN, S_NUM_ENTRIES) = range(13)
NUM_S = 13
# scal_f[...]
F_NOW, F_BUSY, F_TOKEN_SECONDS = range(3)
# return codes
DONE, PAUSED, STALLED, INVALID = 0, 1, 2, 3
# cost kinds
UNIT, LINEAR, CALIBRATED = 0, 1, 2
# policy kinds and the integer parameters p[...]
VLLM, SARATHI, FUTURE = 0, 1, 2
(P_KIND, P_BUDGET, P_MAX_SEQS, P_RESERVE, P_FULL_PROMPT, P_CONTINUE, P_CHUNKED, P_PREFILL_FIRST,
 P_PADDED, P_LAST_ARRIVED, P_FLOOR, P_FCFS, P_SKIP, P_CAP, P_VICTIM, P_REFINE) = range(16)
NUM_P = 16
# FutureMemoryPolicy options: evict_victim, A_min's refine_rule
LEAST_PROGRESS, MOST_PROGRESS, NEWEST, LARGEST = range(4)
NO_REFINE, REFINE_NEXT, REFINE_DOUBLE, REFINE_MULTIPLY = range(4)


@njit(cache=True)
def _ceil_div(a, b):
    return -(-a // b)


@njit(cache=True)
def _segment(k, x):
    """(i, t): x lies at fraction t of knots k[i]..k[i + 1] (bisect_right, clipped to the end
    segments: BilinearTable.batch_segment and calibration._interpolate)."""
    lo, hi = 0, k.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if x < k[mid]:
            hi = mid
        else:
            lo = mid + 1
    i = min(max(lo - 1, 0), k.shape[0] - 2)
    return i, (x - k[i]) / (k[i + 1] - k[i])


@njit(cache=True)
def _interpolate(k, v, x):
    """calibration._interpolate."""
    i, t = _segment(k, x)
    return v[i] + t * (v[i + 1] - v[i])


@njit(cache=True)
def _clip(x):
    return x if x >= 0.0 else 0.0      # max(x, 0.0) as Python evaluates it


@njit(cache=True)
def _calibrated_time(c, tables, dec, pre_seqs, pre_tokens, pre_context, pre_work, dec_seqs, dec_context):
    """CalibratedCost.iteration_time. ``c``: scalar parameters (see `kvsched.engine.compiled`); ``tables``:
    knots and values of linear, elementwise and all-reduce; ``dec``: the decode table."""
    tokens = pre_tokens + dec_seqs
    lin_k, lin_v, el_k, el_v, ar_k, ar_v, batch_k, ctx_k = tables
    linear = _clip(_interpolate(lin_k, lin_v, tokens))
    elementwise = _clip(_interpolate(el_k, el_v, tokens))
    all_reduce = 0.0
    if c[0] > 0.0:                                    # has an all-reduce
        one = _interpolate(ar_k, ar_v, tokens * int(c[1]) * 2) + c[2]
        all_reduce = int(c[3]) * one
    all_reduce = _clip(all_reduce)
    head = linear + elementwise
    prefill = 0.0
    n, p = pre_seqs, pre_tokens
    if n != 0 and p != 0:
        work, cached = pre_work, pre_context - p
        if n == 1:
            squares = float(p * p)
        elif cached == 0:
            squares = float(work)
        else:
            squares = min(max(work - p * cached / n, p * p / n), float(p * p))
        ms = c[4] + c[5] * p + c[6] * max(work - squares, 0.0) + c[7] * squares
        prefill = ms * (1 + c[8] * (n > 1))
    prefill = _clip(prefill)
    decode = 0.0
    m = dec_seqs
    if m:
        i, t = _segment(batch_k, m)
        low0 = _interpolate(ctx_k, dec[i], 0.0)
        base = low0 + t * (_interpolate(ctx_k, dec[i + 1], 0.0) - low0)
        x = dec_context / m
        low = _interpolate(ctx_k, dec[i], x)
        high = _interpolate(ctx_k, dec[i + 1], x)
        decode = _clip((base + c[9] * ((low + t * (high - low)) - base)) * (1 + c[8] * (m > 1)))
    return ((((head + prefill) + decode) + all_reduce) * int(c[10])) * 1e-3 + c[11]


@njit(cache=True)
def _iteration_time(kind, c, tables, dec, pre_seqs, pre_tokens, pre_context, pre_work, dec_seqs, dec_context):
    if kind == UNIT:
        return 1.0
    if kind == LINEAR:
        return c[0] + c[1] * (pre_context + dec_context)
    return _calibrated_time(c, tables, dec, pre_seqs, pre_tokens, pre_context, pre_work, dec_seqs,
                            dec_context)


# ----------------------------------------------------------------------------- request helpers

@njit(cache=True)
def _kv_held(computed, prompt, outputs, emitted):
    """memory.kv_tokens_held."""
    if emitted and outputs >= 1 and computed == prompt + outputs - 1:
        return computed + 1
    return computed


@njit(cache=True)
def _extra_blocks(ints, prompt, r, n, emitted, bs):
    """SchedulerView.extra_blocks: blocks needed beyond those held after n more tokens."""
    outputs = ints[r, R_OUTPUTS]
    if ints[r, R_STATUS] == RUNNING:
        held = computed = ints[r, R_COMPUTED]
        if emitted and outputs >= 1 and computed == prompt[r] + outputs - 1:
            held += 1
    else:
        held = computed = 0
    after = computed + n
    if after == prompt[r] + outputs:
        outputs += 1
    if emitted and outputs >= 1 and after == prompt[r] + outputs - 1:
        after += 1
    return _ceil_div(after, bs) - _ceil_div(held, bs)


@njit(cache=True)
def _uncomputed(ints, prompt, r):
    return prompt[r] + ints[r, R_OUTPUTS] - ints[r, R_COMPUTED]


@njit(cache=True)
def _is_decode(ints, prompt, r):
    return ints[r, R_OUTPUTS] >= 1 and _uncomputed(ints, prompt, r) == 1


@njit(cache=True)
def _running_add(running, scal_i, r, by_id):
    """Append (admission order) or insert in id order."""
    k = scal_i[S_NUM_RUNNING]
    if by_id:
        while k > 0 and running[k - 1] > r:
            running[k] = running[k - 1]
            k -= 1
    running[k] = r
    scal_i[S_NUM_RUNNING] += 1


@njit(cache=True)
def _running_remove(running, scal_i, r):
    k = 0
    while running[k] != r:
        k += 1
    for j in range(k, scal_i[S_NUM_RUNNING] - 1):
        running[j] = running[j + 1]
    scal_i[S_NUM_RUNNING] -= 1


@njit(cache=True)
def _front_push(front, scal_i, r):
    """FrontQueue.push: a just-preempted request goes first."""
    for j in range(scal_i[S_NUM_FRONT], 0, -1):
        front[j] = front[j - 1]
    front[0] = r
    scal_i[S_NUM_FRONT] += 1


@njit(cache=True)
def _front_remove(front, scal_i, r):
    """FrontQueue.admitted."""
    k, n = 0, scal_i[S_NUM_FRONT]
    while k < n and front[k] != r:
        k += 1
    if k == n:
        return
    for j in range(k, n - 1):
        front[j] = front[j + 1]
    scal_i[S_NUM_FRONT] -= 1


@njit(cache=True)
def _front_snapshot(front, scal_i, ints):
    """The preempted requests still waiting, latest first (the start of FrontQueue.order)."""
    out = np.empty(scal_i[S_NUM_FRONT], dtype=np.int64)
    k = 0
    for j in range(scal_i[S_NUM_FRONT]):
        if ints[front[j], R_STATUS] == WAITING:
            out[k] = front[j]
            k += 1
    return out[:k]


# ----------------------------------------------------------------------------- vllm

@njit(cache=True)
def _vllm_admit(p, ints, prompt, running, front, scal_i, tokens, r, state, emitted, bs):
    """One candidate of VLLMPolicy._schedule_waiting. ``state`` = [count, free, budget,
    pass budget, prompts admitted, longest]; returns 0 (admitted), 1 (skip it) or 2 (stop)."""
    count, free, budget, pass_budget, num_prompts, longest = state
    if budget <= 0 or scal_i[S_NUM_RUNNING] >= p[P_MAX_SEQS]:
        return 2
    remaining = prompt[r] + ints[r, R_OUTPUTS]
    if p[P_PADDED]:
        if (num_prompts + 1) * max(remaining, longest) > pass_budget:
            return 2
    elif not p[P_CHUNKED] and remaining > budget:
        return 2
    n = min(remaining, budget)
    must_fit = remaining if p[P_FULL_PROMPT] else n
    reserve = p[P_RESERVE] if scal_i[S_NUM_RUNNING] > 0 else 0
    if _extra_blocks(ints, prompt, r, must_fit, emitted, bs) > free - reserve:
        return 1 if p[P_CONTINUE] else 2
    tokens[count, 0], tokens[count, 1] = r, n
    state[0] = count + 1
    state[1] = free - _extra_blocks(ints, prompt, r, n, emitted, bs)
    state[2] = budget - n
    state[4] = num_prompts + 1
    state[5] = max(longest, n)
    _running_add(running, scal_i, r, p[P_LAST_ARRIVED] == 1)
    _front_remove(front, scal_i, r)
    return 0


@njit(cache=True)
def _vllm_waiting(p, ints, prompt, running, front, queue, alive, scal_i, tokens, count, free, budget,
                  emitted, bs):
    """VLLMPolicy._schedule_waiting over the front queue, then the arrivals in id order."""
    state = np.array([count, free, budget, budget, 0, 0], dtype=np.int64)
    for r in _front_snapshot(front, scal_i, ints):
        if _vllm_admit(p, ints, prompt, running, front, scal_i, tokens, r, state, emitted, bs) == 2:
            return state[0]
    for j in range(scal_i[S_QUEUE_HEAD], scal_i[S_QUEUE_LEN]):
        if alive[j] and _vllm_admit(p, ints, prompt, running, front, scal_i, tokens, queue[j], state,
                                    emitted, bs) == 2:
            break
    return state[0]


@njit(cache=True)
def _vllm_decide(p, ints, prompt, running, front, queue, alive, scal_i, tokens, evicted,
                 budget, emitted, bs, cap_blocks):
    """VLLMPolicy.schedule; returns (tokens scheduled, evictions)."""
    count, num_evicted = 0, 0
    free = cap_blocks - scal_i[S_USED]
    if p[P_PREFILL_FIRST]:
        count = _vllm_waiting(p, ints, prompt, running, front, queue, alive, scal_i, tokens, 0, free,
                              budget, emitted, bs)
        if count:
            return count, 0
    floor = p[P_FLOOR]
    i = 0
    while i < scal_i[S_NUM_RUNNING] and budget > 0:
        r = running[i]
        n = min(_uncomputed(ints, prompt, r), budget)
        need = _extra_blocks(ints, prompt, r, n, emitted, bs)
        stop = False
        while max(need, floor) > free:
            scal_i[S_NUM_RUNNING] -= 1
            victim = running[scal_i[S_NUM_RUNNING]]
            evicted[num_evicted] = victim
            num_evicted += 1
            free += ints[victim, R_HELD]
            _front_push(front, scal_i, victim)
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
    if num_evicted == 0 and not p[P_PREFILL_FIRST]:
        count = _vllm_waiting(p, ints, prompt, running, front, queue, alive, scal_i, tokens, count, free,
                              budget, emitted, bs)
    return count, num_evicted


# ----------------------------------------------------------------------------- sarathi

@njit(cache=True)
def _reserved_blocks(ints, prompt, r, emitted, bs):
    if _is_decode(ints, prompt, r):
        return 0
    return _extra_blocks(ints, prompt, r, _uncomputed(ints, prompt, r), emitted, bs)


@njit(cache=True)
def _sarathi_admit(p, ints, prompt, running, front, scal_i, tokens, r, state, emitted, bs):
    """One candidate of SarathiPolicy._admit (state = [count, free, budget]); False: stop."""
    count, free, budget = state
    if budget <= 0 or scal_i[S_NUM_RUNNING] >= p[P_MAX_SEQS]:
        return False
    need = _extra_blocks(ints, prompt, r, prompt[r] + ints[r, R_OUTPUTS], emitted, bs)
    reserve = p[P_RESERVE] if scal_i[S_NUM_RUNNING] > 0 else 0
    if need > free - reserve:
        return False
    n = min(prompt[r] + ints[r, R_OUTPUTS], budget)
    tokens[count, 0], tokens[count, 1] = r, n
    state[0], state[1], state[2] = count + 1, free - need, budget - n
    _running_add(running, scal_i, r, True)
    _front_remove(front, scal_i, r)
    return True


@njit(cache=True)
def _sarathi_decide(p, ints, prompt, running, front, queue, alive, scal_i, tokens, evicted,
                    budget, emitted, bs, cap_blocks):
    """SarathiPolicy.schedule; returns (tokens scheduled, evictions)."""
    num_running = scal_i[S_NUM_RUNNING]
    decodes = np.empty(num_running, dtype=np.int64)
    partials = np.empty(num_running, dtype=np.int64)
    num_decodes = num_partials = reserved = 0
    for j in range(num_running):
        r = running[j]
        if _is_decode(ints, prompt, r):
            decodes[num_decodes] = r
            num_decodes += 1
        else:
            partials[num_partials] = r
            num_partials += 1
            reserved += _reserved_blocks(ints, prompt, r, emitted, bs)
    free = cap_blocks - scal_i[S_USED] - reserved
    count, num_evicted = 0, 0
    for j in range(num_decodes):
        r = decodes[j]
        if budget <= 0:
            break
        if ints[r, R_FLAG]:
            continue
        need = _extra_blocks(ints, prompt, r, 1, emitted, bs)
        while need > free and not ints[r, R_FLAG]:
            scal_i[S_NUM_RUNNING] -= 1
            victim = running[scal_i[S_NUM_RUNNING]]
            evicted[num_evicted] = victim
            num_evicted += 1
            ints[victim, R_FLAG] = 1
            _front_push(front, scal_i, victim)
            free += ints[victim, R_HELD] + _reserved_blocks(ints, prompt, victim, emitted, bs)
        if ints[r, R_FLAG]:
            break
        tokens[count, 0], tokens[count, 1] = r, 1
        count += 1
        free -= need
        budget -= 1
    for j in range(num_partials):
        r = partials[j]
        if budget <= 0:
            break
        if not ints[r, R_FLAG]:
            n = min(_uncomputed(ints, prompt, r), budget)
            tokens[count, 0], tokens[count, 1] = r, n
            count += 1
            budget -= n
    for j in range(num_evicted):
        ints[evicted[j], R_FLAG] = 0
    if num_evicted == 0:
        state = np.array([count, free, budget], dtype=np.int64)
        stopped = False
        for r in _front_snapshot(front, scal_i, ints):
            if not _sarathi_admit(p, ints, prompt, running, front, scal_i, tokens, r, state, emitted, bs):
                stopped = True
                break
        if not stopped:
            for j in range(scal_i[S_QUEUE_HEAD], scal_i[S_QUEUE_LEN]):
                if alive[j] and not _sarathi_admit(p, ints, prompt, running, front, scal_i, tokens, queue[j],
                                                   state, emitted, bs):
                    break
        count = state[0]
    return count, num_evicted


# ----------------------------------------------------------------------------- the future-memory policies
# `kvsched.policies._future_memory` (mcsf, mc-benchmark, amax, amin, hsf) without an engine token
# budget: every admitted request computes all its tokens in one iteration, every resident request
# every iteration. The predicted timeline is a set of entries (base, end) sorted by end with their
# peaks, kept as `FutureMemory` keeps them: only the set matters to `load_at` and `fits`, so the
# kernel re-derives every resident's entry each iteration and replaces those that changed (the
# Python policy skips the ones it knows are unchanged).

@njit(cache=True)
def _entries_from(ints, ent, scal_i, k, right):
    """First entry index whose end is >= k (right=False) or > k (right=True)."""
    lo, hi = 0, scal_i[S_NUM_ENTRIES]
    while lo < hi:
        mid = (lo + hi) // 2
        end = ints[ent[mid], R_MEM_END]
        if end < k or (right and end == k):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _load_at(ints, ent, scal_i, k, bs):
    """FutureMemory.load_at: predicted blocks in iteration k."""
    total = 0
    for i in range(_entries_from(ints, ent, scal_i, k, False), scal_i[S_NUM_ENTRIES]):
        total += _ceil_div(ints[ent[i], R_MEM_BASE] + k, bs)
    return total


@njit(cache=True)
def _fits(ints, ent, peak, scal_i, base, end, cap, bs):
    """FutureMemory.fits."""
    if _load_at(ints, ent, scal_i, end, bs) + _ceil_div(base + end, bs) > cap:
        return False
    for i in range(_entries_from(ints, ent, scal_i, end, True)):
        if peak[i] + _ceil_div(base + ints[ent[i], R_MEM_END], bs) > cap:
            return False
    return True


@njit(cache=True)
def _entry_add(ints, ent, peak, scal_i, r, base, end, bs):
    """FutureMemory.add."""
    own = _load_at(ints, ent, scal_i, end, bs) + _ceil_div(base + end, bs)
    j = _entries_from(ints, ent, scal_i, end, True)
    for i in range(j):
        peak[i] += _ceil_div(base + ints[ent[i], R_MEM_END], bs)
    for i in range(scal_i[S_NUM_ENTRIES], j, -1):
        ent[i], peak[i] = ent[i - 1], peak[i - 1]
    ent[j], peak[j] = r, own
    scal_i[S_NUM_ENTRIES] += 1
    ints[r, R_IN_MEM], ints[r, R_MEM_BASE], ints[r, R_MEM_END] = 1, base, end


@njit(cache=True)
def _entry_remove(ints, ent, peak, scal_i, r, bs):
    """FutureMemory.remove."""
    i = 0
    while ent[i] != r:
        i += 1
    for j in range(i, scal_i[S_NUM_ENTRIES] - 1):
        ent[j], peak[j] = ent[j + 1], peak[j + 1]
    scal_i[S_NUM_ENTRIES] -= 1
    ints[r, R_IN_MEM] = 0
    base, end = ints[r, R_MEM_BASE], ints[r, R_MEM_END]
    for j in range(_entries_from(ints, ent, scal_i, end, True)):
        peak[j] -= _ceil_div(base + ints[ent[j], R_MEM_END], bs)


@njit(cache=True)
def _estimate(ints, r):
    """FutureMemoryPolicy._estimate: the estimate, at least one more than generated."""
    return max(ints[r, R_EST], ints[r, R_OUTPUTS] + 1)


@njit(cache=True)
def _timeline(ints, prompt, r, iteration, emitted):
    """FutureMemoryPolicy._timeline with all uncomputed tokens now: (base, end)."""
    first = prompt[r] + ints[r, R_OUTPUTS] + emitted
    return first - iteration, iteration + _estimate(ints, r) - ints[r, R_OUTPUTS] - 1


@njit(cache=True)
def _refine(ints, r, rule, factor):
    """AMin.refine: raise the estimate once the request has generated that many tokens."""
    estimate, generated = ints[r, R_EST], ints[r, R_OUTPUTS]
    while estimate <= generated:
        if rule == REFINE_NEXT:
            estimate = generated + 1
        elif rule == REFINE_DOUBLE:
            estimate *= 2
        else:
            estimate = max(estimate + 1, int(np.ceil((1.0 + factor) * estimate)))
    ints[r, R_EST] = estimate


@njit(cache=True)
def _pq_before(ints, arrival, prompt, a, b, fcfs):
    """Queue order (FutureMemoryPolicy.priority, then id): is a before b?"""
    if not fcfs:
        if ints[a, R_KEY_EST] != ints[b, R_KEY_EST]:
            return ints[a, R_KEY_EST] < ints[b, R_KEY_EST]
    if arrival[a] != arrival[b]:
        return arrival[a] < arrival[b]
    if not fcfs and prompt[a] != prompt[b]:
        return prompt[a] < prompt[b]
    return a < b


@njit(cache=True)
def _pq_insert(p, ints, arrival, prompt, pq, scal_i, r):
    """FutureMemoryPolicy._enqueue: the key is fixed now (estimate, arrival, prompt)."""
    ints[r, R_KEY_EST] = _estimate(ints, r)
    ints[r, R_SIZE] = prompt[r] + ints[r, R_OUTPUTS]
    k = scal_i[S_PQ_LEN]
    while k > 0 and _pq_before(ints, arrival, prompt, r, pq[k - 1], p[P_FCFS] == 1):
        pq[k] = pq[k - 1]
        k -= 1
    pq[k] = r
    scal_i[S_PQ_LEN] += 1


@njit(cache=True)
def _victim_before(ints, prompt, a, b, order, emitted):
    """victim_key: is a evicted before b?"""
    if order == LEAST_PROGRESS and ints[a, R_OUTPUTS] != ints[b, R_OUTPUTS]:
        return ints[a, R_OUTPUTS] < ints[b, R_OUTPUTS]
    if order == MOST_PROGRESS and ints[a, R_OUTPUTS] != ints[b, R_OUTPUTS]:
        return ints[a, R_OUTPUTS] > ints[b, R_OUTPUTS]
    if order == LARGEST:
        ka = _kv_held(ints[a, R_COMPUTED], prompt[a], ints[a, R_OUTPUTS], emitted)
        kb = _kv_held(ints[b, R_COMPUTED], prompt[b], ints[b, R_OUTPUTS], emitted)
        if ka != kb:
            return ka > kb
    return ints[a, R_SEQ] > ints[b, R_SEQ]


@njit(cache=True)
def _future_decide(p, pf, ints, arrival, prompt, running, pq, ent, peak, scal_i, tokens, evicted,
                   emitted, bs, cap_blocks):
    """FutureMemoryPolicy.schedule without a token budget; returns (tokens scheduled, evictions)."""
    now = scal_i[S_ITERATION]
    # sync: entries of requests no longer resident or predicted to have ended go; the others are
    # re-derived (A_min first raises the estimates its residents have reached)
    i = 0
    while i < scal_i[S_NUM_ENTRIES]:
        r = ent[i]
        if ints[r, R_STATUS] != RUNNING or ints[r, R_MEM_END] < now:
            _entry_remove(ints, ent, peak, scal_i, r, bs)
        else:
            i += 1
    num_running = scal_i[S_NUM_RUNNING]
    for j in range(num_running):
        r = running[j]
        if p[P_REFINE] != NO_REFINE:
            _refine(ints, r, p[P_REFINE], pf[0])
        base, end = _timeline(ints, prompt, r, now, emitted)
        if ints[r, R_IN_MEM] and (ints[r, R_MEM_BASE] != base or ints[r, R_MEM_END] != end):
            _entry_remove(ints, ent, peak, scal_i, r, bs)
        if not ints[r, R_IN_MEM]:
            _entry_add(ints, ent, peak, scal_i, r, base, end, bs)
    # overflow guard: evict in victim order until the residents fit in this iteration
    num_evicted = 0
    load = _load_at(ints, ent, scal_i, now, bs)
    if load > cap_blocks:
        order = running[:num_running].copy()
        for a in range(1, num_running):          # insertion sort by the victim key
            x, b = order[a], a
            while b > 0 and _victim_before(ints, prompt, x, order[b - 1], p[P_VICTIM], emitted):
                order[b] = order[b - 1]
                b -= 1
            order[b] = x
        for j in range(num_running):
            r = order[j]
            base = ints[r, R_MEM_BASE]
            _entry_remove(ints, ent, peak, scal_i, r, bs)
            load -= _ceil_div(base + now, bs)
            evicted[num_evicted] = r
            num_evicted += 1
            ints[r, R_FLAG] = 1
            if load <= cap_blocks:
                break
    count = 0
    for j in range(num_running):                 # serve_residents: all their tokens
        r = running[j]
        if not ints[r, R_FLAG]:
            tokens[count, 0], tokens[count, 1] = r, _uncomputed(ints, prompt, r)
            count += 1
    if num_evicted == 0:
        count = _future_admit(p, ints, arrival, prompt, running, pq, ent, peak, scal_i, tokens, count,
                              emitted, bs, num_running)
    for j in range(num_evicted):                 # back to the queue, keeping their estimates
        r = evicted[j]
        ints[r, R_FLAG] = 0
        _running_remove(running, scal_i, r)
        _pq_insert(p, ints, arrival, prompt, pq, scal_i, r)
    return count, num_evicted


@njit(cache=True)
def _future_admit(p, ints, arrival, prompt, running, pq, ent, peak, scal_i, tokens, count, emitted, bs,
                  num_residents):
    """FutureMemoryPolicy._admit (and _admit_alone) without a token budget."""
    now, cap = scal_i[S_ITERATION], p[P_CAP]
    load_now = _load_at(ints, ent, scal_i, now, bs)
    admitted = np.empty(scal_i[S_PQ_LEN], dtype=np.int64)    # queue indices, increasing
    num_admitted, smallest = 0, -1
    for idx in range(scal_i[S_PQ_LEN]):
        r = pq[idx]
        base, end = _timeline(ints, prompt, r, now, emitted)
        own = _ceil_div(base + now, bs)
        if load_now + own <= cap and _fits(ints, ent, peak, scal_i, base, end, cap, bs):
            _entry_add(ints, ent, peak, scal_i, r, base, end, bs)
            tokens[count, 0], tokens[count, 1] = r, prompt[r] + ints[r, R_OUTPUTS]
            count += 1
            _running_add(running, scal_i, r, False)
            admitted[num_admitted] = idx
            num_admitted += 1
            load_now += own
            continue
        if not p[P_SKIP]:
            break
        if smallest < 0:                             # _smallest_blocks: the queue as it was
            smallest = ints[pq[0], R_SIZE]
            for j in range(scal_i[S_PQ_LEN]):
                smallest = min(smallest, ints[pq[j], R_SIZE])
        if load_now + _ceil_div(smallest + emitted, bs) > cap:
            break
    if num_admitted == 0 and num_residents == 0 and scal_i[S_PQ_LEN] > 0:
        r = pq[0]                                    # liveness: the head runs alone
        base, end = _timeline(ints, prompt, r, now, emitted)
        _entry_add(ints, ent, peak, scal_i, r, base, end, bs)
        tokens[count, 0], tokens[count, 1] = r, prompt[r] + ints[r, R_OUTPUTS]
        count += 1
        _running_add(running, scal_i, r, False)
        admitted[0] = 0
        num_admitted = 1
    if num_admitted:                                 # compact the queue past the first admitted
        k, a = admitted[0], 0
        for idx in range(admitted[0], scal_i[S_PQ_LEN]):
            if a < num_admitted and admitted[a] == idx:
                a += 1
            else:
                pq[k] = pq[idx]
                k += 1
        scal_i[S_PQ_LEN] = k
    return count


# ----------------------------------------------------------------------------- the engine

@njit(cache=True)
def simulate(arrival, prompt, true_output, p, pf, cap_blocks, bs, emitted, engine_budget,
             cost_kind, c, tables, dec, ints, times, running, front, queue, alive, pq, ent, peaks,
             scal_i, scal_f, max_iterations):
    """Run (or resume) a simulation for at most `max_iterations` more iterations.

    Returns DONE, PAUSED (iteration limit reached), STALLED (the Python engine would raise
    StalledError) or INVALID (a decision the Python engine would refuse; never expected)."""
    n = arrival.shape[0]
    budget_own = p[P_BUDGET] if engine_budget < 0 else min(p[P_BUDGET], engine_budget)
    tokens = np.empty((n + 1, 2), dtype=np.int64)
    evicted = np.empty(n + 1, dtype=np.int64)
    stop_at = scal_i[S_ITERATION] + max_iterations
    while scal_i[S_DONE] < n:
        if scal_i[S_ITERATION] >= stop_at:
            return PAUSED
        now = scal_f[F_NOW]
        # arrivals (engine._admit_arrivals): rejected if their peak cannot fit
        while scal_i[S_NEXT_ARRIVAL] < n and arrival[scal_i[S_NEXT_ARRIVAL]] <= now:
            r = scal_i[S_NEXT_ARRIVAL]
            scal_i[S_NEXT_ARRIVAL] += 1
            peak = prompt[r] + true_output[r] - 1 + emitted
            if _ceil_div(peak, bs) > cap_blocks:
                ints[r, R_STATUS] = REJECTED
                scal_i[S_DONE] += 1
                continue
            ints[r, R_STATUS] = WAITING
            if p[P_KIND] == FUTURE:
                _pq_insert(p, ints, arrival, prompt, pq, scal_i, r)
                continue
            queue[scal_i[S_QUEUE_LEN]] = r
            alive[scal_i[S_QUEUE_LEN]] = True
            scal_i[S_QUEUE_LEN] += 1
            scal_i[S_QUEUE_ALIVE] += 1
        if (scal_i[S_QUEUE_ALIVE] + scal_i[S_NUM_FRONT] + scal_i[S_PQ_LEN] == 0
                and scal_i[S_NUM_RUNNING] == 0):
            if scal_i[S_NEXT_ARRIVAL] < n:
                scal_f[F_NOW] = max(now, arrival[scal_i[S_NEXT_ARRIVAL]])
            continue
        if p[P_KIND] == VLLM:
            count, num_evicted = _vllm_decide(p, ints, prompt, running, front, queue, alive, scal_i,
                                              tokens, evicted, budget_own, emitted, bs, cap_blocks)
        elif p[P_KIND] == SARATHI:
            count, num_evicted = _sarathi_decide(p, ints, prompt, running, front, queue, alive, scal_i,
                                                 tokens, evicted, budget_own, emitted, bs, cap_blocks)
        else:
            count, num_evicted = _future_decide(p, pf, ints, arrival, prompt, running, pq, ent, peaks, scal_i,
                                                tokens, evicted, emitted, bs, cap_blocks)
        for j in range(num_evicted):          # engine._evict (the policy has left `running`)
            r = evicted[j]
            scal_i[S_USED] -= ints[r, R_HELD]
            ints[r, R_HELD] = 0
            ints[r, R_COMPUTED] = 0
            ints[r, R_EVICTIONS] += 1
            ints[r, R_STATUS] = WAITING
        if count == 0:
            if num_evicted == 0:              # engine._idle: jump to the next arrival
                if scal_i[S_NEXT_ARRIVAL] >= n:
                    return STALLED
                scal_f[F_NOW] = max(now, arrival[scal_i[S_NEXT_ARRIVAL]])
            continue
        # engine._validate: the batch and the KV after the iteration
        used, total = scal_i[S_USED], 0
        pre_seqs = pre_tokens = pre_context = pre_work = dec_seqs = dec_context = 0
        for j in range(count):
            r, k = tokens[j, 0], tokens[j, 1]
            outputs = ints[r, R_OUTPUTS]
            computed = ints[r, R_COMPUTED] if ints[r, R_STATUS] == RUNNING else 0
            uncomputed = prompt[r] + outputs - computed
            if k < 1 or k > uncomputed:
                return INVALID
            after = computed + k
            emits = 1 if k == uncomputed else 0
            used += _ceil_div(_kv_held(after, prompt[r], outputs + emits, emitted), bs) - ints[r, R_HELD]
            if emits and k == 1 and outputs >= 1:
                dec_seqs += 1
                dec_context += after
            else:
                pre_seqs += 1
                pre_tokens += k
                pre_context += after
                pre_work += k * after
            total += k
        if (engine_budget >= 0 and total > engine_budget) or used > cap_blocks:
            return INVALID
        duration = _iteration_time(cost_kind, c, tables, dec, pre_seqs, pre_tokens, pre_context, pre_work,
                                   dec_seqs, dec_context)
        start = now
        end = now + duration
        used_tokens = used * bs
        scal_i[S_PEAK] = max(scal_i[S_PEAK], used_tokens)
        scal_f[F_TOKEN_SECONDS] += used_tokens * duration
        scal_f[F_BUSY] += duration
        # engine._run_iteration / _advance
        for j in range(count):
            r, k = tokens[j, 0], tokens[j, 1]
            if ints[r, R_STATUS] == WAITING:      # admitted now (the policy put it in `running`)
                _dequeue(queue, alive, scal_i, r)
                ints[r, R_STATUS] = RUNNING
                ints[r, R_SEQ] = scal_i[S_ADMIT_SEQ]
                scal_i[S_ADMIT_SEQ] += 1
                if np.isnan(times[r, T_SCHEDULED]):
                    times[r, T_SCHEDULED] = start
            before = ints[r, R_COMPUTED]
            ints[r, R_COMPUTED] = before + k
            ints[r, R_TOTAL] += k
            if before < ints[r, R_MAX]:
                ints[r, R_RECOMPUTED] += min(k, ints[r, R_MAX] - before)
            ints[r, R_MAX] = max(ints[r, R_MAX], ints[r, R_COMPUTED])
            if ints[r, R_COMPUTED] == prompt[r] + ints[r, R_OUTPUTS]:
                ints[r, R_OUTPUTS] += 1
                if np.isnan(times[r, T_FIRST_TOKEN]):
                    times[r, T_FIRST_TOKEN] = end
                if ints[r, R_OUTPUTS] == true_output[r]:      # engine._finish
                    times[r, T_FINISH] = end
                    ints[r, R_STATUS] = FINISHED
                    _running_remove(running, scal_i, r)
                    scal_i[S_USED] -= ints[r, R_HELD]
                    ints[r, R_HELD] = 0
                    scal_i[S_DONE] += 1
                    continue
            held = _ceil_div(_kv_held(ints[r, R_COMPUTED], prompt[r], ints[r, R_OUTPUTS], emitted), bs)
            scal_i[S_USED] += held - ints[r, R_HELD]
            ints[r, R_HELD] = held
        scal_f[F_NOW] = end
        scal_i[S_ITERATION] += 1
    return DONE


@njit(cache=True)
def _dequeue(queue, alive, scal_i, r):
    """Mark request r's queue entry dead if it has one (arrivals only; ids are sorted)."""
    lo, hi = scal_i[S_QUEUE_HEAD], scal_i[S_QUEUE_LEN]
    while lo < hi:
        mid = (lo + hi) // 2
        if queue[mid] < r:
            lo = mid + 1
        else:
            hi = mid
    if lo < scal_i[S_QUEUE_LEN] and queue[lo] == r and alive[lo]:
        alive[lo] = False
        scal_i[S_QUEUE_ALIVE] -= 1
        while scal_i[S_QUEUE_HEAD] < scal_i[S_QUEUE_LEN] and not alive[scal_i[S_QUEUE_HEAD]]:
            scal_i[S_QUEUE_HEAD] += 1
