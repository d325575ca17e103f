"""Semi-online exact solver: all requests at time 0, known lengths (Zhou & Jiang's setting).

The poster's polynomial algorithm (equal or monotone prompt sizes, "O(n^2) per period") is not
public; this is our own exact method, a branch-and-bound over the round model (`bounds.instance`)
that works for any prompt sizes; equal prompts make identical requests — which it merges — common.

State at a boundary: the number of not-yet-started requests of each type (s, o) (identical
requests are interchangeable, so counts suffice) and the multiset of running requests as (type,
rounds done). With every request released at the same time the cost to go does not depend on the
clock: sum_i c_i = sum_{t >= 0} #{i unfinished at t}, so each round costs the number of
unfinished requests and

    V(U, R) = |U| + |R| + min over feasible start sets S of V(U - S, advance(R + S)),

where S is feasible iff the running requests' known future KV plus S's stays <= M in every future
round (non-preemptive, EMITTED: s + j in the j-th round). V(empty) = 0.

Correctness of the search (depth-first over boundaries, every feasible start set tried, so every
non-preemptive schedule is reachable up to permuting identical requests):
- S = {} is skipped when nothing runs: idling then and shifting every later start left by one is
  feasible (all requests are released) and cheaper.
- Bound: a state with cost so far g is cut when g + sum of the remaining rounds of every
  unfinished request >= the best schedule found (each request still costs at least that).
- Transposition: V depends on (U, R) only, so a state reached again with a cost so far no smaller
  than before is cut (whatever could follow it was already available, at least as cheaply).
- Start sets are generated type by type with counts, stopping as soon as the KV check fails
  (adding requests only raises usage), larger sets first (good schedules early).

Complexity: states are bounded by prod_k (c_k + 1) (unstarted counts) times the running
configurations that fit in M, each expanding into at most prod_k (c_k + 1) start sets checked in
O(o_max) per request: exponential in the number of distinct types in the worst case, polynomial
(O(n^T)) for a fixed number T of types. Measured against the IP in `bench/bounds_semionline.py`.
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import numpy as np

from .instance import Instance
from .ip import window_sizes


class _Timeout(Exception):
    pass


def solve_semionline(inst: Instance, *, time_limit: float = 60.0,
                     upper_start: np.ndarray | None = None) -> tuple[float | None, np.ndarray | None, str]:
    """(least sum (c_i - a_i), starts, status) for an instance whose requests share one release.

    ``status`` is 'optimal', or 'time_limit' with the best schedule found (never a wrong
    'optimal'). `upper_start`: a known schedule to start from (default: the best heuristic).
    """
    from .greedy import best_heuristic
    if not inst.all_at_zero:
        raise ValueError("the semi-online solver needs every request released at the same time")
    msg = inst.unfit_message()
    if msg:
        raise ValueError(msg)
    deadline = time.perf_counter() + time_limit
    s, o, M = inst.num_prompt_tokens.tolist(), inst.num_output_tokens.tolist(), inst.capacity_tokens
    counts = Counter(zip(s, o))
    types = sorted(counts, key=lambda k: (k[1], k[0]))      # shortest first: good schedules early
    ts, to = [k[0] for k in types], [k[1] for k in types]
    r0 = int(inst.release[0])
    offset = float(np.sum(r0 - inst.arrival_time))           # sum (r - a): 0 for integer arrivals
    start0 = best_heuristic(inst) if upper_start is None else np.asarray(upper_start)
    best = {"cost": inst.objective(start0) - offset - r0 * len(inst) + 1e-9, "path": None}
    type_inst = Instance.make(ts, to, M)
    wa, wb, wmembers = window_sizes(type_inst, [counts[k] for k in types])
    big = set(int(k) for k in wmembers)
    seen: dict = {}
    path: list = []

    def usage_of(R):
        use = [0] * max((to[k] - age for k, age in R), default=0)
        for k, age in R:
            for d in range(1, to[k] - age + 1):
                use[d - 1] += ts[k] + age + d
        return use

    def start_sets(U, use):
        out, pick = [], [0] * len(U)

        def walk(k, use):
            if k == len(U):
                out.append(tuple(pick))
                return
            added = list(use)
            ok_counts = 0
            for m in range(1, U[k] + 1):
                if len(added) < to[k]:
                    added += [0] * (to[k] - len(added))
                fits = True
                for d in range(1, to[k] + 1):
                    added[d - 1] += ts[k] + d
                    fits = fits and added[d - 1] <= M
                if not fits:
                    break
                ok_counts = m
            snapshot = list(use)
            for m in range(ok_counts, -1, -1):     # more requests first
                pick[k] = m
                cur = list(snapshot) + [0] * max(0, to[k] - len(snapshot)) if m else snapshot
                for _ in range(m):
                    for d in range(1, to[k] + 1):
                        cur[d - 1] += ts[k] + d
                walk(k + 1, cur)
            pick[k] = 0
        walk(0, use)
        return out

    def window_bound(U, R):
        """Least sum of completion times (from now) of the unstarted window members: their
        exclusive windows (length a + b, starting no earlier than o - a) avoid each other and the
        running members' windows; preemptive SRPT on that single machine is a lower bound."""
        blocks = sorted((to[k] - age - wa[k], to[k] - age + wb[k]) for k, age in R if k in big)
        jobs = sorted((to[k] - wa[k], wa[k] + wb[k], wb[k]) for k, c in enumerate(U) if k in big
                      for _ in range(c))
        return srpt_total(jobs, blocks)

    def dfs(U, R, g):
        if time.perf_counter() > deadline:
            raise _Timeout
        unfinished = sum(U) + len(R)
        if unfinished == 0:
            if g < best["cost"]:
                best["cost"], best["path"] = g, list(path)
            return
        lower = g + sum(to[k] - age for k, age in R) + sum(c * to[k] for k, c in enumerate(U) if k not in big)
        lower += window_bound(U, R) if big else sum(c * to[k] for k, c in enumerate(U) if k in big)
        if lower >= best["cost"]:
            return
        key = (U, R)
        if seen.get(key, float("inf")) <= g:      # same state reached as cheaply before
            return
        seen[key] = g
        for pick in start_sets(U, usage_of(R)):
            if not R and not any(pick):
                continue                          # an empty round with nothing running never helps
            nU = tuple(c - p for c, p in zip(U, pick))
            started = [(k, 0) for k, p in enumerate(pick) for _ in range(p)]
            nR = tuple(sorted((k, age + 1) for k, age in list(R) + started if age + 1 < to[k]))
            path.append(pick)
            dfs(nU, nR, g + unfinished)
            path.pop()

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 100_000))
    status = "optimal"
    try:
        dfs(tuple(counts[k] for k in types), (), 0)
    except _Timeout:
        status = "time_limit"
    finally:
        sys.setrecursionlimit(limit)
    if best["path"] is None:                      # nothing better than the heuristic schedule
        return (inst.objective(start0) if status == "optimal" else None), start0, status
    starts = _rebuild(best["path"], types, s, o) + r0
    return inst.objective(starts), starts, status


def srpt_total(jobs, blocks) -> int:
    """Sum over jobs (release, processing, tail) of (SRPT completion - tail) on one machine that is
    unavailable during `blocks` (sorted [start, end) intervals); preemptive-resume SRPT minimises
    the sum of completion times, also with unavailable periods (an interchange on available time
    units), so this is a lower bound for any non-preemptive placement."""
    import heapq
    total, now, i, heap = 0, 0, 0, []
    blocks = [(s, e) for s, e in blocks if e > 0]
    b = 0
    while i < len(jobs) or heap:
        if not heap and jobs[i][0] > now:
            now = jobs[i][0]
        while i < len(jobs) and jobs[i][0] <= now:
            heapq.heappush(heap, [jobs[i][1], jobs[i][2]])
            i += 1
        while b < len(blocks) and blocks[b][1] <= now:
            b += 1
        if b < len(blocks) and blocks[b][0] <= now:
            now = blocks[b][1]
            continue
        job = heap[0]
        limit = min(jobs[i][0] if i < len(jobs) else float("inf"),
                    blocks[b][0] if b < len(blocks) else float("inf"))
        run = min(job[0], limit - now)
        now += run
        job[0] -= run
        if job[0] == 0:
            heapq.heappop(heap)
            total += now - job[1]
    return total


def _rebuild(picks, types, s, o) -> np.ndarray:
    """Starts per request id from the start sets chosen at boundaries 0, 1, ... (ids in order)."""
    pool: dict = {}
    for i, key in enumerate(zip(s, o)):
        pool.setdefault(key, []).append(i)
    starts = np.zeros(len(s), dtype=np.int64)
    for t, pick in enumerate(picks):
        for k, p in enumerate(pick):
            for _ in range(p):
                starts[pool[types[k]].pop(0)] = t
    return starts
