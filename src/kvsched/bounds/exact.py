"""``exact``: certified hindsight optimum of the round model, the strongest method we have.

Pipeline (each step keeps the best feasible schedule U and the best proven lower bound L; the
result is ``optimal`` only when U - L < 1 on an integral objective, or when the chronological
search finished):

1. Upper bound: the best list/serial heuristic (`greedy.best_heuristic`), then an insertion
   search over the serial-generation order (`greedy.insertion_search`).
2. The chronological branch-and-bound (`bounds.chrono`, exact; its lower bound uses the exclusive
   windows below through a single-machine SRPT relaxation) for a share of the time: if it
   finishes, its schedule is optimal; otherwise its best schedule improves U.
3. A short large-neighbourhood search (`improve`): slide a time window over the schedule, free
   the requests that start in it, keep the others fixed, and re-solve the time-indexed IP on
   the freed requests exactly (HiGHS) with the KV left by the fixed ones.
4. Lower bound: the LP relaxation of the time-indexed IP (`ip.py`) with **exclusive-window rows**,
   read as a Lagrangian bound from its duals; then, if time allows, the strengthened IP itself
   (HiGHS, warm-started from U).

Exclusive windows (the new valid inequalities; proof). Let peak_i = s_i + o_i and c_i the
completion round. For two requests with c_j <= c_i:
  (a) if i runs during round c_j, it holds peak_i - (c_i - c_j) then, and j holds peak_j, so
      c_i - c_j >= peak_i + peak_j - M;
  (b) otherwise i starts at or after c_j, so c_i - c_j >= o_i.
Hence c_i - c_j >= h(j,i) := min(o_i, max(0, peak_i + peak_j - M)). Give each request with
peak_i >= ceil(M/2) and s_i <= ceil(M/2) the window W_i = [c_i - a_i, c_i + b_i) with a_i = peak_i - ceil(M/2) and
b_i = min(peak_i - floor(M/2), ceil(M/2) - max_{k != i} s_k). Then a_i + b_j <= h(j,i) for every
ordered pair (a_i + b_j <= peak_i + peak_j - M, and b_j <= ceil(M/2) - s_i = o_i - a_i), so in
every feasible schedule the windows are pairwise disjoint, i.e. for every round tau

    sum_i sum_{k : tau in [k + o_i - a_i, k + o_i + b_i)} x[i,k] <= 1.

These rows cut off fractional solutions that spread the long requests' triangles thin (the plain
LP's weakness: it treats each request's KV like a fluid); they encode that the long requests'
final rounds, where each holds more than half of M, come one after the other, c_i - c_j >=
peak_i + peak_j - M — the staircase seen in optimal schedules. Measured on the paper's instances
(seeds 0-3): they raise the LP bound from ~68% to ~83% of the best schedule found at n = 40-50, and
from 83-90% to 92-98% of the optimum at n = 10; HiGHS then proves n = 10 optima in 5-30 s.

"At most two overlap" windows (`ip.triple_windows`, proof there) extend the idea to triples: three
requests running together need (c_j - c_i) + (c_k - c_i) >= sum of peaks - M at c_i, which the
pairwise windows miss; rows with rhs 2. They lift the LP from 86% to 95% of the optimum on ten equal
requests of peak 0.6 M; on the paper's instances (n = 40-60, bench/bounds_certify.py, 3 trials per
arrival model) the gaps fell from median 13.0% / 16.2% (zero / poisson) to 12.7% / 15.7%.
What stays weak, measured on n = 40 (LP as a share of the best schedule of the sub-instance):
requests of peak >= 0.75 M alone 99%, peaks in [0.5, 0.75) M alone 89%, peaks < 0.5 M alone 94%,
peaks < 0.75 M together 85%: the LP fills the mid-size staircase's saw-tooth with fractions of
small requests. Pairwise clique cuts (conflict graph of start columns), "at most three overlap"
windows and MIP branching on the mid-size requests only did not move it (< 0.4%).

The LP bound is read as a Lagrangian bound from the LP's row duals (`ip.lagrangian_bound`), so it
is valid even when the LP is stopped by the time limit and does not rest on solver tolerances.

Correctness: the IP with these rows has exactly the integer solutions of the paper's IP (the rows
are implied), the horizon cuts no schedule of cost <= U (`ip.horizon_from_upper_bound`), and the
status is `optimal` only on HiGHS's proof, so an `optimal` answer is the optimum and a
`time_limit` answer's bound is a valid lower bound.
"""

from __future__ import annotations

import time

import numpy as np

from .chrono import solve_chronological
from .greedy import best_heuristic, insertion_search
from .instance import Instance
from .ip import (PRESOLVE_MAX_NONZEROS, IPResult, _highs, _set_warm_start, _to_highs, build_model, horizon_from_upper_bound,
                 solve_ip, solve_lp_relaxation)
from .plan import usage_profile


def improve(inst: Instance, start: np.ndarray, deadline: float, *, window: int | None = None,
            margin: int = 8, max_free: int = 10, sub_time: float = 3.0) -> np.ndarray:
    """Large-neighbourhood search: re-solve time windows exactly while it helps (heuristic)."""
    n = len(inst)
    if n < 3:
        return start
    o = inst.num_output_tokens
    window = window or max(4, int(np.median(o)))
    best = start.copy()
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        makespan = int((best + o).max())
        for t0 in range(0, makespan, max(1, window // 2)):
            if time.perf_counter() >= deadline:
                break
            free = np.flatnonzero((best >= t0) & (best < t0 + window))
            if len(free) < 2:
                continue
            free = free[np.argsort(best[free], kind="stable")][:max_free]
            cand = _resolve(inst, best, free, t0 - margin, t0 + window + margin,
                            min(sub_time, deadline - time.perf_counter()))
            if (cand is not None and inst.objective(cand) < inst.objective(best) - 1e-9
                    and _feasible(inst, cand)):
                best, improved = cand, True
    return best


def _resolve(inst: Instance, start: np.ndarray, free: np.ndarray, lo: int, hi: int,
             time_limit: float) -> np.ndarray | None:
    """Best starts for `free` with the other requests fixed (None if nothing better is found)."""
    if time_limit <= 0.05:
        return None
    fixed = np.setdiff1d(np.arange(len(inst)), free)
    o = inst.num_output_tokens
    horizon = int(max((start + o).max(), hi + o[free].max())) + 1
    sub_fixed = inst.subset(fixed)
    used = usage_profile(sub_fixed, start[fixed], horizon) if fixed.size else np.zeros(horizon + 2, np.int64)
    sub = inst.subset(free)
    cap = inst.capacity_tokens - used
    lo_arr = np.full(len(free), lo)
    hi_arr = np.full(len(free), hi)
    cols, cost, rlo, rhi, matrix = build_model(sub, horizon, windows=True, start_lo=lo_arr,
                                               start_hi=hi_arr, capacity=cap)
    h = _highs(time_limit)
    h.setOptionValue("mip_rel_gap", 0.0)
    h.passModel(_to_highs(cost, rlo, rhi, matrix, integer=True))
    _set_warm_start(h, (cols.start == start[free][cols.job]).astype(np.float64))
    h.run()
    if h.getInfo().primal_solution_status != 2:
        return None
    x = np.asarray(h.getSolution().col_value) > 0.5
    if x.sum() != len(free):
        return None
    out = start.copy()
    out[free[cols.job[x]]] = cols.start[x]
    return out


def _feasible(inst: Instance, start: np.ndarray) -> bool:
    """Independent check of a schedule from a sub-solve (never trust floating point blindly)."""
    return bool(np.all(start >= inst.release)
                and usage_profile(inst, start).max() <= inst.capacity_tokens)


def solve_exact(inst: Instance, *, time_limit: float = 60.0, chrono_share: float = 0.4,
                search_share: float = 0.05, lp_share: float = 0.5) -> IPResult:
    """The pipeline of the module docstring; shares are fractions of `time_limit` (seconds)."""
    started = time.perf_counter()
    msg = inst.unfit_message()
    if msg:
        return IPResult(None, float("inf"), "infeasible", 0.0, None, message=msg)
    integral = inst.is_integral()
    tol = 1 - 1e-6 if integral else 1e-6

    def elapsed():
        return time.perf_counter() - started

    start = best_heuristic(inst, deadline=started + 0.1 * time_limit)
    if len(inst) > 6:
        start = insertion_search(inst, start, started + 0.15 * time_limit)
    value, found, status = solve_chronological(inst, time_limit=chrono_share * time_limit,
                                               upper_start=start)
    if status == "optimal":
        return IPResult(value, value, "optimal", elapsed(), found,
                        message="certified by the chronological branch-and-bound")
    start = found
    if len(inst) > 6:
        start = improve(inst, start, elapsed() + started + search_share * time_limit)
    upper = inst.objective(start)
    horizon = max(horizon_from_upper_bound(inst, upper - inst.latency_offset),
                  int((start + inst.num_output_tokens).max()))
    bound = inst.trivial_bound
    lp_started = elapsed()
    big = _num_nonzeros_estimate(inst, horizon) > PRESOLVE_MAX_NONZEROS
    share = 0.95 if big else lp_share       # a big IP would not pass its root: give the LP the time
    lp = solve_lp_relaxation(inst, horizon, windows=True,
                             time_limit=max(0.5, share * (time_limit - elapsed())))
    lp_time = elapsed() - lp_started
    if lp is not None:
        bound = max(bound, _round_bound(inst, lp, integral))
    bound = min(bound, upper)
    if upper - bound < tol:
        return IPResult(upper, upper, "optimal", elapsed(), start,
                        message="the window-strengthened LP bound meets the schedule")
    left = time_limit - elapsed()
    if left < max(1.0, 2 * lp_time):     # the IP would not get past its own root LP
        return IPResult(upper, bound, "time_limit", elapsed(), start,
                        message="time limit: LP bound only (too little time left for the IP)")
    res = solve_ip(inst, time_limit=left, windows=True, warm_start=start)
    best_bound = min(max(bound, res.bound), res.objective)
    solved = res.objective - best_bound < tol
    return IPResult(res.objective, res.objective if solved else best_bound,
                    "optimal" if solved else "time_limit", elapsed(), res.start, res.num_columns,
                    res.num_rows, "" if solved else res.message)


def _num_nonzeros_estimate(inst: Instance, horizon: int) -> int:
    """Nonzeros of the time-indexed model: each start column touches o_i memory rows (and as many
    window rows, at most)."""
    o = inst.num_output_tokens
    starts = np.maximum(1, horizon - o - inst.release + 1)
    return int(np.sum(starts * 2 * o))


def _round_bound(inst: Instance, value: float, integral: bool) -> float:
    if not integral:
        return value - 1e-6
    offset = inst.latency_offset
    return float(np.ceil(value - offset - 1e-6) + offset)
