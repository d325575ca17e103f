"""Heuristic schedules with exact lengths: upper bounds and warm starts for the exact solvers.

`mcsf_schedule` is MC-SF's admission rule (Jaillet et al., arXiv 2502.07115, Algorithm 1) with the
true output lengths (the paper's hindsight shortest-first): at each boundary t, scan the released
waiting requests by (o, arrival, s, id) ascending and admit a request if, with the requests already
started and those admitted before it at t, memory stays <= M in every future round; stop at the
first that fails (``skip=True``: continue scanning). With exact lengths the future profile of the
started requests is known, so the check is an exact array comparison.

`best_heuristic` runs several orders and both scanning rules, then improves the best schedule by
a local search (move one request earlier / swap two requests' starts, re-packing greedily), and
returns the best feasible start vector found. Everything here is a heuristic: no optimality claim.
"""

from __future__ import annotations

import time

import numpy as np

from .instance import Instance
from .plan import add_request, request_profile


def _fits(profile: np.ndarray, p: int, s: int, o: int, capacity: int) -> bool:
    return bool(np.all(profile[p + 1: p + o + 1] + request_profile(s, o) <= capacity))


def list_schedule(inst: Instance, key: np.ndarray, *, skip: bool = False) -> np.ndarray:
    """Chronological greedy: at each boundary admit released waiting requests in `key` order."""
    n = len(inst)
    s, o, r, M = inst.num_prompt_tokens, inst.num_output_tokens, inst.release, inst.capacity_tokens
    profile = np.zeros(int(r.max() + o.sum()) + 2, dtype=np.int64)
    start = np.full(n, -1, dtype=np.int64)
    order = sorted(range(n), key=lambda i: key[i])
    waiting = order
    t = int(r.min())
    while waiting:
        rest = []
        blocked = False
        for i in waiting:
            if r[i] > t or blocked:
                rest.append(i)
                continue
            if _fits(profile, t, int(s[i]), int(o[i]), M):
                add_request(profile, t, int(s[i]), int(o[i]))
                start[i] = t
            else:
                rest.append(i)
                blocked = not skip
        waiting = rest
        t += 1
    return start


def mcsf_schedule(inst: Instance, *, skip: bool = False) -> np.ndarray:
    """MC-SF with exact lengths (ties: arrival, prompt, id)."""
    return list_schedule(inst, _candidate_keys(inst)[0], skip=skip)


def serial_schedule(inst: Instance, order) -> np.ndarray:
    """Serial generation: each request in `order` at its earliest feasible start given the others."""
    s, o, r, M = inst.num_prompt_tokens, inst.num_output_tokens, inst.release, inst.capacity_tokens
    profile = np.zeros(int(r.max() + o.sum()) + 2, dtype=np.int64)
    start = np.full(len(inst), -1, dtype=np.int64)
    for i in order:
        p = int(r[i])
        while not _fits(profile, p, int(s[i]), int(o[i]), M):
            p += 1
        add_request(profile, p, int(s[i]), int(o[i]))
        start[i] = p
    return start


def _candidate_keys(inst: Instance) -> list:
    s, o, a = inst.num_prompt_tokens, inst.num_output_tokens, inst.arrival_time
    v = inst.volume
    n = len(inst)
    return [
        [(o[i], a[i], s[i], i) for i in range(n)],
        [(v[i], a[i], i) for i in range(n)],
        [(o[i], -s[i], i) for i in range(n)],
        [(s[i] + o[i], o[i], i) for i in range(n)],
        [(a[i], o[i], i) for i in range(n)],
    ]


def best_heuristic(inst: Instance, *, local_search_rounds: int = 2,
                   deadline: float | None = None) -> np.ndarray:
    """The best start vector among list schedules, serial schedules and a local search
    (the local search stops at `deadline`, a `time.perf_counter()` value)."""
    best, best_cost = None, np.inf
    for key in _candidate_keys(inst):
        for skip in (False, True):
            cand = list_schedule(inst, key, skip=skip)
            cost = inst.objective(cand)
            if cost < best_cost:
                best, best_cost = cand, cost
        order = sorted(range(len(inst)), key=lambda i: key[i])
        cand = serial_schedule(inst, order)
        cost = inst.objective(cand)
        if cost < best_cost:
            best, best_cost = cand, cost
    for _ in range(local_search_rounds):
        improved = _local_search(inst, best, deadline)
        if inst.objective(improved) >= best_cost:
            break
        best, best_cost = improved, inst.objective(improved)
    return best


def _local_search(inst: Instance, start: np.ndarray, deadline: float | None = None) -> np.ndarray:
    """Serial re-generation from the start order with adjacent swaps (first improvement)."""
    order = list(np.lexsort((np.arange(len(inst)), start)))
    best = serial_schedule(inst, order)
    if inst.objective(best) > inst.objective(start):
        best = start
    best_cost = inst.objective(best)
    for k in range(len(order) - 1):
        if deadline is not None and time.perf_counter() > deadline:
            break
        trial = order[:]
        trial[k], trial[k + 1] = trial[k + 1], trial[k]
        cand = serial_schedule(inst, trial)
        cost = inst.objective(cand)
        if cost < best_cost:
            best, best_cost, order = cand, cost, trial
    return best


def insertion_search(inst: Instance, start: np.ndarray, deadline: float) -> np.ndarray:
    """Serial generation from the start order; move one request to another position of the
    order while that lowers the cost (first improvement), until `deadline` (perf_counter)."""
    order = list(np.lexsort((np.arange(len(inst)), start)))
    best = serial_schedule(inst, order)
    if inst.objective(start) <= inst.objective(best):
        best = start
    best_cost = inst.objective(best)
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        for k in range(len(order)):
            for pos in range(len(order)):
                if pos == k or time.perf_counter() > deadline:
                    continue
                trial = order[:]
                trial.insert(pos, trial.pop(k))
                cand = serial_schedule(inst, trial)
                cost = inst.objective(cand)
                if cost < best_cost:
                    best, best_cost, order, improved = cand, cost, trial, True
                    break
    return best
