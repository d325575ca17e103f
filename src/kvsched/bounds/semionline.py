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

import numpy as np

from .chrono import solve_chronological
from .instance import Instance


def solve_semionline(inst: Instance, *, time_limit: float = 60.0,
                     upper_start: np.ndarray | None = None) -> tuple[float, np.ndarray, str]:
    """(least sum (c_i - a_i), starts, status) for an instance whose requests share one release.

    ``status`` is 'optimal', or 'time_limit' with the best schedule found (never a wrong
    'optimal'). `upper_start`: a known schedule to start from (default: the best heuristic).
    The search is `bounds.chrono.solve_chronological` (which also handles release times).
    """
    if not inst.all_at_zero:
        raise ValueError("the semi-online solver needs every request released at the same time")
    return solve_chronological(inst, time_limit=time_limit, upper_start=upper_start)
