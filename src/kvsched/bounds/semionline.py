"""Semi-online exact solver: all requests at time 0, known lengths (Zhou & Jiang's setting).

The poster's polynomial algorithm (equal or monotone prompt sizes, "O(n^2) per period") is not
public; this is our own exact method, a dynamic program over the round model (`bounds.instance`)
that works for any prompt sizes and is fastest when many requests share a (prompt, output) type —
equal prompt sizes make that common.

State at a boundary: the number of not-yet-started requests of each type (s, o) (identical
requests are interchangeable, so counts suffice — the aggregation) and the multiset of running
requests as (type, rounds done). All requests are released at 0, so the cost to go does not depend
on the clock: with sum_i c_i = sum_{t >= 0} #{i unfinished at t}, each round costs the number of
unfinished requests, and

    V(U, R) = |U| + |R| + min over feasible start sets S of V(U - S, advance(R + S)),

where S is feasible iff the running requests' known future KV plus S's stays <= M in every future
round (non-preemptive, EMITTED: s + j in the j-th round). S = {} is allowed only while something
runs: with nothing running, idling a round and shifting everything left by one is feasible and
cheaper (all requests are released), so the empty choice is never optimal then. V(empty) = 0.

Correctness: the recursion enumerates every non-preemptive schedule up to permuting identical
requests (each boundary's start set is a choice), so its minimum is the optimum. Start sets are
enumerated by a depth-first walk over types with counts, pruned as soon as the KV check fails
(adding requests only raises usage). Branch and bound: a state is cut when its cost so far plus
the trivial remaining cost (sum of remaining rounds) cannot beat the best schedule found; memoised
values are exact (a state's value is stored only when its subtree was searched without a cut).

Complexity: the number of states is at most prod_k (c_k + 1) times the running configurations
(at most the number of (type, age) multisets that fit in M), each with up to prod_k (c_k + 1)
start sets, times O(o_max) for the KV check: exponential in the number of distinct types in the
worst case, polynomial — O(n^T) — for T fixed types (equal prompts and few distinct lengths).
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import numpy as np

from .instance import Instance


class _Timeout(Exception):
    pass


def solve_semionline(inst: Instance, *, time_limit: float = 60.0,
                     upper: float | None = None) -> tuple[float | None, np.ndarray | None, str]:
    """(optimal sum c_i, starts, status) for an all-at-zero instance; status 'optimal' or
    'time_limit' (then value and starts are None)."""
    if not inst.all_at_zero:
        raise ValueError("the semi-online solver needs every request released at the same time")
    msg = inst.unfit_message()
    if msg:
        raise ValueError(msg)
    s, o, M = inst.num_prompt_tokens.tolist(), inst.num_output_tokens.tolist(), inst.capacity_tokens
    types = sorted(Counter(zip(s, o)))
    counts = Counter(zip(s, o))
    ts = [t[0] for t in types]
    to = [t[1] for t in types]
    U0 = tuple(counts[t] for t in types)
    deadline = time.perf_counter() + time_limit
    memo: dict = {}
    choice: dict = {}

    def usage_of(R):
        """KV of the running requests in each future round d = 1.. (list index d-1)."""
        horizon = max((to[k] - age for k, age in R), default=0)
        use = [0] * horizon
        for k, age in R:
            base = ts[k] + age
            for d in range(1, to[k] - age + 1):
                use[d - 1] += base + d
        return use

    def start_sets(U, use):
        """Every multiset of types (as count tuples) that fits on top of `use`."""
        out = []
        cur = list(U)
        pick = [0] * len(U)

        def walk(k, use):
            if k == len(U):
                out.append(tuple(pick))
                return
            walk(k + 1, use)
            added = list(use)
            for m in range(1, U[k] + 1):
                length = to[k]
                if len(added) < length:
                    added += [0] * (length - len(added))
                ok = True
                for d in range(1, length + 1):
                    added[d - 1] += ts[k] + d
                    if added[d - 1] > M:
                        ok = False
                if not ok:
                    break
                pick[k] = m
                walk(k + 1, added)
            pick[k] = 0
        del cur
        walk(0, use)
        return out

    def value(U, R):
        key = (U, R)
        if key in memo:
            return memo[key]
        if time.perf_counter() > deadline:
            raise _Timeout
        unfinished = sum(U) + len(R)
        if unfinished == 0:
            return 0
        use = usage_of(R)
        best, best_pick = None, None
        for pick in start_sets(U, use):
            if not R and not any(pick):
                continue
            nU = tuple(c - p for c, p in zip(U, pick))
            started = [(k, 0) for k, p in enumerate(pick) for _ in range(p)]
            nR = tuple(sorted((k, age + 1) for k, age in list(R) + started if age + 1 < to[k]))
            v = unfinished + value(nU, nR)
            if best is None or v < best:
                best, best_pick = v, pick
        memo[key] = best
        choice[key] = best_pick
        return best

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 100_000))
    try:
        total = value(U0, ())
    except _Timeout:
        return None, None, "time_limit"
    finally:
        sys.setrecursionlimit(limit)
    return float(total), _rebuild(U0, choice, ts, to, s, o), "optimal"


def _rebuild(U0, choice, ts, to, s, o) -> np.ndarray:
    """Starts per request id from the stored choices (identical requests in id order)."""
    pool = {}
    for i, key in enumerate(zip(s, o)):
        pool.setdefault(key, []).append(i)
    starts = np.zeros(len(s), dtype=np.int64)
    U, R, t = U0, (), 0
    while sum(U) + len(R):
        pick = choice[(U, R)]
        started = []
        for k, p in enumerate(pick):
            for _ in range(p):
                starts[pool[(ts[k], to[k])].pop(0)] = t
                started.append((k, 0))
        U = tuple(c - p for c, p in zip(U, pick))
        R = tuple(sorted((k, age + 1) for k, age in list(R) + started if age + 1 < to[k]))
        t += 1
    return starts
