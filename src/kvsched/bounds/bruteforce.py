"""Exact enumeration for tiny instances (n <= 6): the ground truth of the tests.

Two optima, both for the engine `Simulator(UnitTime(), M, block_size=1, kv_convention=EMITTED)`:

**Non-preemptive** (`solve`, the MC-SF paper's model and its integer program): each request runs
without interruption from its start. Pausing a resident request or chunking its prompt never
helps: to finish at c it must have emitted at least t - (c - o) tokens by the end of round t, so
it holds at least s + (t - (c - o)) KV then (EMITTED counts the emitted token) — exactly what the
uninterrupted run started at c - o holds, and that run holds nothing before. So the best schedule
without evictions is non-preemptive.

**With evictions** (`solve_preemptive`, what `optimal_total_latency` returns): the engine's
eviction keeps the generated tokens and recomputes the KV, and under `UnitTime` the recompute of
s + g tokens takes one iteration that also emits token g + 1. An evicted request therefore holds
no KV while out and s + g + 1 in the round it resumes — eviction is a free pause, and policies that
evict (vllm, sarathi) can beat the non-preemptive optimum (e.g. M = 4, two requests s = 1, o = 2,
both at 0: non-preemptive 6, evict-and-resume 5). The preemptive optimum is a shortest path over
(time, tokens emitted per request): each round runs any set of released unfinished requests with
sum (s_i + g_i + 1) <= M; shifting a busy period left until one of its rounds hits an arrival
shows that busy periods start on some arrival's grid a_j + k (k a whole number, possibly
negative), so idling jumps to any such time up to the last arrival. Pausing and partial prefills are dominated by eviction (same KV on resumption, none
meanwhile).

Start times of the non-preemptive search: requests whose runs overlap share the engine's round grid, so their starts differ
  by whole rounds. Shifting a maximal group of overlapping runs left (all together) keeps it
  feasible and lowers the cost until one of its requests hits its arrival or the group touches the
  previous one. So some optimal schedule starts every request at a_j + k for some request j
  and a whole number k, possibly negative (a request may start k rounds before another's arrival
  so that their rounds line up), and no start exceeds max_j a_j + sum of the other lengths (a gap of free time
  after the last arrival could be closed).

The enumeration is exhaustive over those candidate start times (depth-first over requests,
pruning only partial schedules that are infeasible or cannot beat the best found, with ties
between identical requests broken by requiring their starts in id order). Exponential: n <= 6
and short lengths only.
"""

from __future__ import annotations

import math

import numpy as np

from ..workload.synthetic import Workload
from .instance import Instance

MAX_REQUESTS = 6
_EPS = 1e-9


def _candidate_starts(inst: Instance, i: int) -> list[float]:
    a, o = inst.arrival_time, inst.num_output_tokens
    last = float(a.max()) + float(o.sum() - o[i])
    out = set()
    for aj in np.unique(a):
        k0 = math.ceil(a[i] - aj - _EPS)          # may be negative: a_j - k lines up with a_j
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


def _check_size(inst: Instance) -> int:
    """The number of requests; ValueError when there are too many or one cannot fit alone."""
    n = len(inst)
    if n > MAX_REQUESTS:
        raise ValueError(f"brute force handles at most {MAX_REQUESTS} requests, got {n}")
    msg = inst.unfit_message()
    if msg:
        raise ValueError(msg)
    return n


def solve(inst: Instance) -> tuple[float, list[float]]:
    """(optimal sum (c_i - a_i), starts). Raises ValueError when n > 6 or a request cannot fit."""
    n = _check_size(inst)
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


def solve_preemptive(inst: Instance, upper: float | None = None) -> float:
    """Least sum (c_i - a_i) when requests may be evicted and resumed (see module doc)."""
    import heapq
    n = _check_size(inst)
    s = inst.num_prompt_tokens.tolist()
    o = inst.num_output_tokens.tolist()
    a = inst.arrival_time.tolist()
    M = inst.capacity_tokens
    best = solve(inst)[0] if upper is None else upper
    grid = sorted({round(aj + k, 9) for aj in set(a)
                   for k in range(-math.ceil(max(a) - min(a)) - 1, math.ceil(max(a) - min(a)) + 2)
                   if min(a) - _EPS <= aj + k <= max(a) + _EPS})

    def idle_targets(t):
        return [x for x in grid if x > t + _EPS]
    start = (round(min(a), 9), (0,) * n)
    frontier = [(start[0], 0.0, start[1])]
    seen: dict = {start: 0.0}
    while frontier:
        t, cost, g = heapq.heappop(frontier)
        if seen.get((t, g), math.inf) < cost - _EPS:
            continue
        todo = [i for i in range(n) if g[i] < o[i]]
        if not todo:
            best = min(best, cost)
            continue
        lb = cost + sum(max(t, a[i]) + o[i] - g[i] - a[i] for i in todo)
        if lb >= best - _EPS:
            continue
        ready = [i for i in todo if a[i] <= t + _EPS]
        moves = []
        for mask in range(1, 1 << len(ready)):
            run = [ready[k] for k in range(len(ready)) if mask >> k & 1]
            if sum(s[i] + g[i] + 1 for i in run) <= M:
                moves.append(run)
        for target in idle_targets(t):
            moves.append(target)                # idle until a time on some arrival's grid
        for run in moves:
            if not isinstance(run, list):
                nt, ng, add = run, g, 0.0
            else:
                nt = round(t + 1, 9)
                ng = tuple(g[i] + (i in run) for i in range(n))
                add = sum(nt - a[i] for i in run if ng[i] == o[i])
            key = (nt, ng)
            if cost + add < seen.get(key, math.inf) - _EPS:
                seen[key] = cost + add
                heapq.heappush(frontier, (nt, cost + add, ng))
    return float(best)


def optimal_total_latency(workload: Workload, capacity_tokens: int) -> float:
    """The least total latency sum (c_i - a_i) any policy can reach on `workload` (n <= 6) in
    `Simulator(UnitTime(), capacity_tokens, block_size=1, kv_convention=EMITTED)`, evictions
    allowed (`solve_preemptive`; without evictions use `solve`, the paper's model).

    Raises ValueError if n > 6 or a request needs more than `capacity_tokens` KV on its own.
    """
    return solve_preemptive(Instance.from_workload(workload, capacity_tokens))


def optimal_nonpreemptive_total_latency(workload: Workload, capacity_tokens: int) -> float:
    """The least total latency without evictions (the MC-SF paper's model; n <= 6)."""
    return solve(Instance.from_workload(workload, capacity_tokens))[0]
