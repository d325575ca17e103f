"""Chronological branch-and-bound for the round model (any release times), exact.

Used by `bounds.semionline` (all requests released together) and by `bounds.exact` (as its first,
often certifying, stage). See `bounds.semionline` for the recursion; with release times r_i:

- State at boundary t: unstarted counts per type (r, s, o), running requests as (type, rounds
  done), and t while some type is still unreleased (afterwards the cost to go is shift-invariant
  and t is dropped from the state key).
- Each round costs the number of released unfinished requests (sum_i (c_i - r_i) =
  sum_t #{i : r_i <= t < c_i}); sum (r_i - a_i) is added at the end for fractional arrivals.
- Branches at t: every start set of released types that keeps KV <= M in all future rounds. The
  empty set is skipped when nothing runs and every request is released (shifting the rest left
  is feasible and cheaper); when nothing runs and nothing is released the clock jumps to the next
  release (those rounds cost nothing).
- Lower bound at a state with cost so far g: g + remaining rounds of the running requests + o_i
  for each unstarted non-member + for the unstarted window members (`ip.window_sizes`) the
  preemptive-SRPT bound on their exclusive windows (`srpt_total`): each member's window has length
  a + b, cannot start before max(r, t) + o - a, and avoids the other members' windows, including
  the running members' (fixed) windows; its completion then costs at least
  (window end - b) - (max(r, t) - t) rounds in the system.
- Transposition: a state key reached again with a cost so far no smaller is cut.

Every cut is justified above, every schedule is reachable (up to permuting identical requests),
so a search that ends before the deadline has found the optimum (`optimal`); otherwise the best
schedule found is returned with `time_limit`.
"""

from __future__ import annotations

import heapq
import sys
import time
from collections import Counter

import numpy as np

from .instance import Instance
from .ip import window_sizes


class _Timeout(Exception):
    pass


def srpt_total(jobs, blocks) -> int:
    """Sum over jobs (release, processing, tail) of (SRPT completion - tail) on one machine that is
    unavailable during `blocks` (sorted [start, end) intervals). Preemptive-resume SRPT minimises
    the sum of completion times, also with unavailable periods (an interchange argument on the
    available time units), so this is a lower bound for any non-preemptive placement."""
    total, now, i, heap, b = 0, 0, 0, [], 0
    blocks = [(s, e) for s, e in blocks if e > 0]
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


def solve_chronological(inst: Instance, *, time_limit: float = 60.0,
                        upper_start: np.ndarray | None = None):
    """(sum (c_i - a_i), starts, status): status 'optimal' or 'time_limit' (best found)."""
    from .greedy import best_heuristic
    msg = inst.unfit_message()
    if msg:
        raise ValueError(msg)
    deadline = time.perf_counter() + time_limit
    r, s, o = inst.release.tolist(), inst.num_prompt_tokens.tolist(), inst.num_output_tokens.tolist()
    M = inst.capacity_tokens
    counts = Counter(zip(r, s, o))
    types = sorted(counts, key=lambda k: (k[2], k[0], k[1]))     # shortest first
    tr, ts, to = [k[0] for k in types], [k[1] for k in types], [k[2] for k in types]
    offset = inst.latency_offset
    start0 = best_heuristic(inst) if upper_start is None else np.asarray(upper_start)
    best = {"cost": inst.objective(start0) - offset + 1e-9, "path": None}
    wa, wb, wmembers = window_sizes(Instance.make(ts, to, M), [counts[k] for k in types])
    big = set(int(k) for k in wmembers)
    r_last = max(r)
    seen: dict = {}
    path: list = []

    def usage_of(R):
        use = [0] * max((to[k] - age for k, age in R), default=0)
        for k, age in R:
            for d in range(1, to[k] - age + 1):
                use[d - 1] += ts[k] + age + d
        return use

    def start_sets(U, use, t):
        """Yield every start set (counts per type) of released types that fits on top of `use`,
        larger sets first; lazily, since their number grows combinatorially."""
        pick = [0] * len(U)

        def walk(k, use):
            if time.perf_counter() > deadline:
                raise _Timeout
            if k == len(U):
                yield tuple(pick)
                return
            most = 0
            if U[k] and tr[k] <= t:
                for m in range(1, U[k] + 1):
                    if any(use[d - 1] + m * (ts[k] + d) > M if d <= len(use) else m * (ts[k] + d) > M
                           for d in range(1, to[k] + 1)):
                        break
                    most = m
            for m in range(most, -1, -1):               # more requests first
                pick[k] = m
                cur = use
                if m:
                    cur = list(use) + [0] * max(0, to[k] - len(use))
                    for d in range(1, to[k] + 1):
                        cur[d - 1] += m * (ts[k] + d)
                yield from walk(k + 1, cur)
            pick[k] = 0
        yield from walk(0, use)

    def lower_bound(U, R, t):
        lb = sum(to[k] - age for k, age in R)
        lb += sum(c * to[k] for k, c in enumerate(U) if k not in big)
        members = [(max(tr[k], t) - t + to[k] - wa[k], wa[k] + wb[k], wb[k] + max(tr[k], t) - t)
                   for k, c in enumerate(U) if k in big for _ in range(c)]
        if members:
            blocks = sorted((to[k] - age - wa[k], to[k] - age + wb[k]) for k, age in R if k in big)
            lb += srpt_total(sorted(members), blocks)
        return lb

    def dfs(U, R, t, g):
        if time.perf_counter() > deadline:
            raise _Timeout
        released = sum(c for k, c in enumerate(U) if tr[k] <= t)
        if sum(U) + len(R) == 0:
            if g < best["cost"]:
                best["cost"], best["path"] = g, list(path)
            return
        if not R and released == 0:                    # idle until the next release, for free
            dfs(U, R, min(tr[k] for k, c in enumerate(U) if c), g)
            return
        if g + lower_bound(U, R, t) >= best["cost"]:
            return
        key = (U, R) if t >= r_last else (t, U, R)
        if seen.get(key, float("inf")) <= g:
            return
        seen[key] = g
        cost = released + len(R)
        for pick in start_sets(U, usage_of(R), t):
            if not R and not any(pick) and t >= r_last:
                continue
            nU = tuple(c - p for c, p in zip(U, pick))
            started = [(k, 0) for k, p in enumerate(pick) for _ in range(p)]
            nR = tuple(sorted((k, age + 1) for k, age in list(R) + started if age + 1 < to[k]))
            path.append((t, pick))
            dfs(nU, nR, t + 1, g + cost)
            path.pop()

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 100_000))
    status = "optimal"
    try:
        dfs(tuple(counts[k] for k in types), (), min(r), 0)
    except _Timeout:
        status = "time_limit"
    finally:
        sys.setrecursionlimit(limit)
    if best["path"] is None:                          # nothing beat the starting schedule
        return inst.objective(start0), start0, status
    starts = _rebuild(best["path"], types, r, s, o)
    return inst.objective(starts), starts, status


def _rebuild(path, types, r, s, o) -> np.ndarray:
    """Starts per request id from the (boundary, start set) choices (identical ids in order)."""
    pool: dict = {}
    for i, key in enumerate(zip(r, s, o)):
        pool.setdefault(key, []).append(i)
    starts = np.zeros(len(s), dtype=np.int64)
    for t, pick in path:
        for k, p in enumerate(pick):
            for _ in range(p):
                starts[pool[types[k]].pop(0)] = t
    return starts
