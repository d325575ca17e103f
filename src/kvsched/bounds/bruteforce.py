"""Exact enumeration for tiny instances (n <= 6): the ground truth of the tests.

What it optimises: the engine `Simulator(UnitTime(), M, block_size=1, kv_convention=EMITTED)`
with any policy. Such a policy can start a request at any boundary the engine reaches, pause or
evict it, or chunk its prompt; none of that beats a non-preemptive schedule:

- Pausing, chunking a prompt, or evicting (recompute) a request that completes at c: to finish at
  c it must have emitted at least t - (c - o) tokens by the end of each round t, so it holds at
  least s + (t - (c - o)) KV in round t (EMITTED counts the emitted token); the non-preemptive run
  started at c - o holds exactly that, and nothing before. Replacing the request by that run keeps
  every round feasible and every completion time.
- Start times: requests whose runs overlap share the engine's round grid, so their starts differ
  by whole rounds. Shifting a maximal group of overlapping runs left (all together) keeps it
  feasible and lowers the cost until one of its requests hits its arrival or the group touches the
  previous one. So some optimal schedule starts every request at a_j + k (k a whole number) for
  some request j, and no start exceeds max_j a_j + sum of the other lengths (a gap of free time
  after the last arrival could be closed).

The enumeration is exhaustive over those candidate start times (depth-first over requests,
pruning only partial schedules that are infeasible or cannot beat the best found, with ties
between identical requests broken by requiring their starts in id order). Exponential: n <= 6
and short lengths only.
"""

from __future__ import annotations

import math

import numpy as np

from ..workload import Workload
from .instance import Instance

MAX_REQUESTS = 6
_EPS = 1e-9


def _candidate_starts(inst: Instance, i: int) -> list[float]:
    a, o = inst.arrival_time, inst.num_output_tokens
    last = float(a.max()) + float(o.sum() - o[i])
    out = set()
    for aj in np.unique(a):
        k0 = max(0, math.ceil(a[i] - aj - _EPS))
        for k in range(k0, int(math.floor(last - aj + _EPS)) + 1):
            out.add(round(float(aj) + k, 9))
    return sorted(out)


def _compatible(p: float, o: int, s: int, q: float, o2: int, s2: int, M: int) -> bool:
    """Can two runs (start p, length o, prompt s) and (q, o2, s2) coexist (pairwise memory)?"""
    if p + o <= q + _EPS or q + o2 <= p + _EPS:
        return True
    d = q - p
    return abs(d - round(d)) < 1e-6


def _feasible(inst: Instance, starts: list[float], idx: list[int]) -> bool:
    """Memory check for the placed requests (grid-aligned where they overlap)."""
    M = inst.capacity_tokens
    s, o = inst.num_prompt_tokens, inst.num_output_tokens
    usage: dict[float, int] = {}
    for p, i in zip(starts, idx):
        for j in range(1, int(o[i]) + 1):
            key = round(p + j, 6)
            usage[key] = usage.get(key, 0) + int(s[i]) + j
            if usage[key] > M:
                return False
    return True


def solve(inst: Instance) -> tuple[float, list[float]]:
    """(optimal sum (c_i - a_i), starts). Raises ValueError when n > 6 or a request cannot fit."""
    n = len(inst)
    if n > MAX_REQUESTS:
        raise ValueError(f"brute force handles at most {MAX_REQUESTS} requests, got {n}")
    msg = inst.unfit_message()
    if msg:
        raise ValueError(msg)
    s, o, a, M = inst.num_prompt_tokens, inst.num_output_tokens, inst.arrival_time, inst.capacity_tokens
    cands = [_candidate_starts(inst, i) for i in range(n)]
    best = [math.inf, None]
    twin = [next((j for j in range(i) if (s[j], o[j], a[j]) == (s[i], o[i], a[i])), None)
            for i in range(n)]
    rest_min = [float(sum(o[i:])) for i in range(n)] + [0.0]   # each later request costs >= o

    def dfs(i: int, starts: list[float], cost: float) -> None:
        if cost + rest_min[i] >= best[0] - _EPS:
            return
        if i == n:
            best[0], best[1] = cost, list(starts)
            return
        low = starts[twin[i]] if twin[i] is not None else -math.inf
        for p in cands[i]:
            if p < low - _EPS:
                continue
            if not all(_compatible(p, o[i], s[i], starts[j], o[j], s[j], M) for j in range(i)):
                continue
            starts.append(p)
            if _feasible(inst, starts, list(range(i + 1))):
                dfs(i + 1, starts, cost + p + o[i] - a[i])
            starts.pop()

    dfs(0, [], 0.0)
    return float(best[0]), best[1]


def optimal_total_latency(workload: Workload, capacity_tokens: int) -> float:
    """The least total latency sum (c_i - a_i) any policy can reach on `workload` (n <= 6) in
    `Simulator(UnitTime(), capacity_tokens, block_size=1, kv_convention=EMITTED)`.

    Raises ValueError if n > 6 or a request needs more than `capacity_tokens` KV on its own.
    """
    return solve(Instance.from_workload(workload, capacity_tokens))[0]
