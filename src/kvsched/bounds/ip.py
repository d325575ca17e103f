"""The time-indexed integer program of the MC-SF paper, solved with HiGHS (highspy).

Variables x[i,k] = 1 iff request i starts at boundary k (k = r_i .. H_i). Objective
min sum_i sum_k (k + o_i - a_i) x[i,k]; sum_k x[i,k] = 1 for each i; and for every round t

    sum_i sum_{k = t-o_i}^{t-1} (s_i + t - k) x[i,k] <= M          (memory during round t)

(Jaillet et al., arXiv 2502.07115; ALGORITHMS.md §1). Rounds whose largest possible usage is <= M
get no row.

Horizon (safe, no optimal schedule cut off): with an upper bound U on sum_i (c_i - r_i) from a
feasible schedule, every schedule of cost <= U finishes by the boundary H found by
`horizon_from_upper_bound`, so x[i,k] is created only for k <= H - o_i. The counting argument:
sum_i (c_i - r_i) = sum_{t >= 0} #{i : r_i <= t < c_i}; at boundary t at most N(t) requests can be
complete, where N(t) counts the released requests with r_i + o_i <= t whose volumes, smallest first,
fit in M * (t - r_min); and for t >= max_i r_i at least one request (the last to finish) is in the
system until the makespan. So a schedule with makespan C pays at least
sum_{t < C} max(#{r_i <= t} - N(t), [t >= r_max]), which must be <= U.

Aggregation (default): identical requests (same arrival, prompt and output) share integer
columns x[k,t] in [0, count_k] with sum_t x[k,t] = count_k — the same schedules up to permuting
identical requests, without the symmetric copies. Exclusive-window rows (``windows=True``): see
`bounds.exact`, which uses them; with them come the "at most two overlap" window families of
`triple_windows` (rhs 2, proof there). LP bounds are computed as Lagrangian bounds from the duals
(`lagrangian_bound`), valid for any multipliers.

Strengthening (``strengthen=True``, the `ip-strong` method): clique rows. During round t, any
two (i,k) whose usage in round t exceeds M/2 cannot both be chosen, so the sum of those x is <= 1;
likewise at most q-1 of those with usage > M/q (q = 3, 4). They are implied for integer x and
tighten the LP relaxation. A wrong "optimal" is impossible: the status is `optimal` only when HiGHS
reports the MIP solved to a gap < 1 on an integer objective (or 0 otherwise), and the bound
returned is HiGHS's dual bound (rounded up when the objective is integral).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from .greedy import best_heuristic
from .instance import Instance


#: Above this many nonzeros HiGHS's MIP presolve is switched off: on the paper's n = 40-60
#: instances it ran 49 s past a 15 s time limit without reducing anything.
PRESOLVE_MAX_NONZEROS = 300_000


@dataclass(frozen=True)
class IPResult:
    objective: float | None        # best schedule found: sum (c_i - a_i)
    bound: float                   # proven lower bound on the optimum
    status: str                    # optimal / time_limit / infeasible
    solve_time: float
    start: np.ndarray | None       # best schedule's starts
    num_columns: int = 0
    num_rows: int = 0
    message: str = ""

    @property
    def gap(self) -> float | None:
        if self.objective is None:
            return None
        return max(0.0, (self.objective - self.bound) / max(abs(self.objective), 1e-9))


def completion_count_bound(inst: Instance, t: int, windows=None) -> int:
    """N(t): at most this many requests can be complete by boundary t.

    Volume: the requests complete by t fit their volumes in M * (t - r_min), so at most as many
    as the smallest volumes that fit. Windows (when given, `window_sizes`): the requests with
    disjoint exclusive windows complete by t have their windows inside [0, t + max b), so at most
    as many as the smallest window sizes that fit, plus the others by volume.
    """
    ok = inst.release + inst.num_output_tokens <= t
    budget = inst.capacity_tokens * (t - int(inst.release.min()))
    vols = np.sort(inst.volume[ok])
    count = int(np.searchsorted(np.cumsum(vols), budget, side="right"))
    if windows is not None:
        a, b, members = windows
        big = np.zeros(len(inst), dtype=bool)
        big[members] = True
        small = np.sort(inst.volume[ok & ~big])
        num_small = int(np.searchsorted(np.cumsum(small), budget, side="right"))
        sizes = np.sort((a + b)[ok & big])
        span = t + (int(b[members].max()) if members.size else 0)
        num_big = int(np.searchsorted(np.cumsum(sizes), span, side="right"))
        count = min(count, num_small + num_big)
    return count


def in_system_lower_bounds(inst: Instance, horizon: int) -> np.ndarray:
    """L[t] for t = 0..horizon-1: requests certainly in the system during [t, t+1) (makespan > t)."""
    r_max = int(inst.release.max())
    released = np.searchsorted(np.sort(inst.release), np.arange(horizon), side="right")
    out = np.empty(horizon, dtype=np.int64)
    win = window_sizes(inst)
    for t in range(horizon):
        out[t] = max(int(released[t]) - completion_count_bound(inst, t + 1, win), int(t >= r_max))
    return out


def horizon_from_upper_bound(inst: Instance, upper: float) -> int:
    """Largest makespan a schedule with sum (c_i - r_i) <= upper can have (see module doc)."""
    cap = inst.horizon() + int(inst.num_output_tokens.max()) + 1
    lows = in_system_lower_bounds(inst, cap)
    total = np.cumsum(lows)
    # makespan C is possible only if total[C-1] <= upper
    ok = np.flatnonzero(total <= upper + 1e-9)
    return int(ok[-1] + 1) if ok.size else int(inst.release.max() + inst.num_output_tokens.max())


@dataclass
class Columns:
    job: np.ndarray
    start: np.ndarray


def _columns(inst: Instance, horizon: int, start_lo=None, start_hi=None) -> Columns:
    jobs, starts = [], []
    for i in range(len(inst)):
        first = int(inst.release[i]) if start_lo is None else max(int(inst.release[i]), int(start_lo[i]))
        last = horizon - int(inst.num_output_tokens[i])
        if start_hi is not None:
            last = min(last, int(start_hi[i]))
        ks = np.arange(first, max(last, first) + 1)
        jobs.append(np.full(len(ks), i))
        starts.append(ks)
    return Columns(np.concatenate(jobs), np.concatenate(starts))


def window_sizes(inst: Instance, counts=None):
    """Exclusive completion windows (a_i, b_i) for the requests with peak >= ceil(M/2) and
    s <= ceil(M/2) (see `bounds.exact`).

    For j completing no later than i: c_i - c_j >= h(j,i) = min(o_i, max(0, peak_i + peak_j - M)).
    With a_i = peak_i - ceil(M/2) and b_j = min(peak_j - floor(M/2), ceil(M/2) - max_{i != j} s_i),
    a_i + b_j <= h(j,i), so the windows [c_i - a_i, c_i + b_i) of two such requests are disjoint.
    """
    M = inst.capacity_tokens
    peak, s = inst.peak_tokens, inst.num_prompt_tokens
    # a_i + b_j <= o_i needs b_j <= ceil(M/2) - s_i >= 0: requests with s_i > ceil(M/2) stay out
    members = np.flatnonzero((peak >= (M + 1) // 2) & (s <= (M + 1) // 2))
    a = np.zeros(len(inst), dtype=np.int64)
    b = np.zeros(len(inst), dtype=np.int64)
    counts = np.ones(len(inst), dtype=np.int64) if counts is None else np.asarray(counts)
    if counts[members].sum() < 2:
        return a, b, members[:0]
    a[members] = peak[members] - (M + 1) // 2
    s_m = s[members]
    top = np.sort(s_m)[::-1]
    num_top = int(counts[members][s_m == top[0]].sum())
    for i in members:
        # the largest prompt among the OTHER requests (a type with count >= 2 is its own other)
        others_max = top[0] if (s[i] != top[0] or num_top >= 2) else (top[1] if len(top) > 1 else 0)
        b[i] = min(peak[i] - M // 2, (M + 1) // 2 - others_max)
    assert (b[members] >= 0).all() and (a[members] >= 0).all()
    keep = members[(a[members] + b[members]) >= 1]
    return a, b, keep


def _window_entries(cols: Columns, col_o, a, b, members):
    """(column, round) pairs of the window rows: column (i, k) covers the rounds
    [k + o_i - a_i, k + o_i + b_i) of its completion window when i is a member (col_o: o per column)."""
    cs = np.flatnonzero(np.isin(cols.job, members))
    a_c, b_c = a[cols.job[cs]], b[cols.job[cs]]
    comp = cols.start[cs] + col_o[cs]
    lens = a_c + b_c
    rep = np.repeat(cs, lens)
    taus = np.repeat(comp - a_c, lens) + (np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens))
    return rep, taus


#: Peak thresholds (fractions of M) of the "at most two overlap" window families; 0 = all requests.
TRIPLE_THRESHOLDS = (0.0, 0.5, 0.6, 0.7)


def triple_windows(inst: Instance, counts=None) -> list:
    """"At most two overlap" windows: a list of (a, b, members), one per peak threshold.

    For a set S of requests let Pmin = min_S peak, sigma = max_S s, alpha = ceil(M/2), and for i in
    S: a_i = peak_i - alpha and b_i = min(alpha - sigma, max(B1_i, B2_i)) with
    B1_i = alpha + floor((peak_i - M + 1)/2) and B2_i = alpha - M + Pmin + floor((peak_i + 1)/2).
    Claim: no round lies in the windows [c - a, c + b) of three distinct requests of S. Proof:
    suppose it lies in those of i, j, k with c_i <= c_j <= c_k; let X = c_j - c_i, D = c_k - c_i.
    Meeting windows give X <= a_j + b_i - 1 and D <= a_k + b_i - 1 <= o_k + s_k - sigma - 1 < o_k
    (as b_i <= alpha - sigma), so k is running in round c_i, and likewise j. Round c_i: i holds
    peak_i, j holds peak_j - X, k holds peak_k - D, so (1) X + D >= peak_i + peak_j + peak_k - M.
    - If b_i <= B1_i: X + D <= peak_j + peak_k - 2 alpha + 2 b_i - 2 <= peak_j + peak_k + peak_i - M - 1,
      contradicting (1).
    - If b_i <= B2_i: in round c_j, j holds peak_j and k (running since before c_i) holds
      peak_k - (D - X), so D - X >= peak_j + peak_k - M; with (1), 2D >= peak_i + 2 peak_j +
      2 peak_k - 2M >= peak_i + 2 Pmin + 2 peak_k - 2M, but 2D <= 2(a_k + b_i - 1) <= 2 peak_k - 2M +
      2 Pmin + peak_i + 1 - 2: a contradiction.
    So for every round tau, sum over members of the x whose window covers tau is <= 2 (a request
    type with count c counts c times, as it should). Any subset of S keeps the claim.

    Why: the pairwise windows (`window_sizes`, rhs 1) only say c_j - c_i >= h(i,j); three requests
    running together also need the memory of all three at c_i, which fluid LP solutions ignore.
    B1 needs no pairwise conflict (peaks from ~M/3 up); B2 is longer when Pmin > M/2 (staircases of
    similar peaks: on 10 identical requests of peak 0.6 M the LP rises from 86% to 95% of the
    optimum). The all-requests family (threshold 0) is B1's; the threshold families keep only the
    members whose window is longer than twice their pairwise one (otherwise the pairwise rows say
    about as much), which keeps the LP small.
    """
    M = inst.capacity_tokens
    peak, s = inst.peak_tokens, inst.num_prompt_tokens
    counts = np.ones(len(inst), dtype=np.int64) if counts is None else np.asarray(counts)
    pa, pb, pmembers = window_sizes(inst, counts)
    pair_len = np.zeros(len(inst), dtype=np.int64)
    pair_len[pmembers] = (pa + pb)[pmembers]
    alpha = (M + 1) // 2
    out, seen = [], set()
    for frac in TRIPLE_THRESHOLDS:
        S = np.flatnonzero(peak >= int(np.ceil(frac * M)))
        if counts[S].sum() < 3 or tuple(S) in seen:      # the same S gives the same family
            continue
        seen.add(tuple(S))
        p_min, sigma = int(peak[S].min()), int(s[S].max())
        a = np.zeros(len(inst), dtype=np.int64)
        b = np.zeros(len(inst), dtype=np.int64)
        a[S] = peak[S] - alpha
        b1 = alpha + np.floor_divide(peak[S] - M + 1, 2)
        b2 = alpha - M + p_min + (peak[S] + 1) // 2
        b[S] = np.minimum(alpha - sigma, np.maximum(b1, b2))
        length = a[S] + b[S]
        useful = length >= 1
        if frac > 0:
            useful &= length > 2 * pair_len[S]
        keep = S[useful]
        if counts[keep].sum() >= 3:
            out.append((a, b, keep))
    return out


def build_model(inst: Instance, horizon: int, *, strengthen: bool = False, windows: bool = False,
                start_lo=None, start_hi=None, capacity=None, counts=None):
    """CSC arrays of the time-indexed program. Returns (cols, cost, rows_lo, rows_hi, matrix).

    ``start_lo``/``start_hi``: per-request start ranges (default: release .. horizon - o);
    ``capacity``: KV available in each round (default M everywhere; the large-neighbourhood
    search passes M minus the usage of the requests it keeps fixed); ``counts``: `inst` lists
    request types and x[k,t] is the number of type-k requests starting at t (aggregation).
    """
    cols = _columns(inst, horizon, start_lo, start_hi)
    s = inst.num_prompt_tokens[cols.job]
    o = inst.num_output_tokens[cols.job]
    cost = (cols.start + o).astype(np.float64) - inst.arrival_time[cols.job]
    M = inst.capacity_tokens
    n, ncol = len(inst), len(cols.job)
    mult = np.ones(n, dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
    # memory rows: column c touches rounds start+1..start+o with coefficient s + (t - start)
    entries_row, entries_col, entries_val = [], [], []
    entries_row.append(cols.job)
    entries_col.append(np.arange(ncol))
    entries_val.append(np.ones(ncol))
    lengths = o
    col_rep = np.repeat(np.arange(ncol), lengths)
    offs = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) + 1
    rounds = np.repeat(cols.start, lengths) + offs
    usage = np.repeat(s, lengths) + offs
    cap = np.full(horizon + 2, M, dtype=np.int64) if capacity is None else \
        np.concatenate([capacity, np.full(max(0, horizon + 2 - len(capacity)), M)])[:horizon + 2]
    # keep a memory row only where the total possible usage can exceed M
    best_per_job = np.zeros((n, horizon + 2), dtype=np.int64)
    np.maximum.at(best_per_job, (np.repeat(cols.job, lengths), rounds), usage)
    binding = (best_per_job * mult[:, None]).sum(axis=0) > cap
    row_of_round = np.full(horizon + 2, -1)
    binding_rounds = np.flatnonzero(binding)
    row_of_round[binding_rounds] = n + np.arange(len(binding_rounds))
    keep = binding[rounds]
    entries_row.append(row_of_round[rounds[keep]])
    entries_col.append(col_rep[keep])
    entries_val.append(usage[keep].astype(np.float64))
    lo = [mult.astype(np.float64), np.full(len(binding_rounds), -np.inf)]
    hi = [mult.astype(np.float64), cap[binding_rounds].astype(np.float64)]
    num_rows = n + len(binding_rounds)
    if strengthen:
        for q in (2, 3, 4):
            big = keep & (usage * q > M)
            rr, cc = rounds[big], col_rep[big]
            # a clique row for round t is useful only when >= q columns of >= q jobs qualify
            jobs_at = {}
            for t, c in zip(rr.tolist(), cc.tolist()):
                jobs_at.setdefault(t, []).append(c)
            for t, clist in sorted(jobs_at.items()):
                if mult[sorted(set(cols.job[clist].tolist()))].sum() < q:
                    continue
                entries_row.append(np.full(len(clist), num_rows))
                entries_col.append(np.asarray(clist))
                entries_val.append(np.ones(len(clist)))
                lo.append(np.array([-np.inf]))
                hi.append(np.array([float(q - 1)]))
                num_rows += 1
    if windows:
        # pairwise-exclusive windows (rhs 1), then the "at most two overlap" families (rhs 2)
        families = [(*window_sizes(inst, mult), 1.0)]
        families += [(a_w, b_w, members, 2.0) for a_w, b_w, members in triple_windows(inst, mult)]
        for a_w, b_w, members, rhs in families:
            if not members.size:
                continue
            rep, taus = _window_entries(cols, o, a_w, b_w, members)
            taus_u, tau_rows = np.unique(taus, return_inverse=True)
            entries_row.append(num_rows + tau_rows)
            entries_col.append(rep)
            entries_val.append(np.ones(len(rep)))
            lo.append(np.full(len(taus_u), -np.inf))
            hi.append(np.full(len(taus_u), rhs))
            num_rows += len(taus_u)
    row = np.concatenate(entries_row)
    col = np.concatenate(entries_col)
    val = np.concatenate(entries_val)
    return cols, cost, np.concatenate(lo), np.concatenate(hi), (row, col, val, num_rows)


def _to_highs(cost, lo, hi, matrix, integer: bool, col_upper=None):
    import highspy
    row, col, val, num_rows = matrix
    order = np.lexsort((row, col))
    row, col, val = row[order], col[order], val[order]
    ncol = len(cost)
    lp = highspy.HighsLp()
    lp.num_col_ = ncol
    lp.num_row_ = num_rows
    lp.col_cost_ = cost
    lp.col_lower_ = np.zeros(ncol)
    lp.col_upper_ = np.ones(ncol) if col_upper is None else np.asarray(col_upper, dtype=np.float64)
    lp.row_lower_ = lo
    lp.row_upper_ = hi
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.concatenate([[0], np.cumsum(np.bincount(col, minlength=ncol))]).astype(np.int32)
    lp.a_matrix_.index_ = row.astype(np.int32)
    lp.a_matrix_.value_ = val
    if integer:
        lp.integrality_ = [highspy.HighsVarType.kInteger] * ncol
    return lp


def _quiet_highs():
    """A `highspy.Highs()` whose creation prints nothing: HiGHS writes its banner from C on file
    descriptor 1 when the first instance is created, before any option can be set, which would
    break ``--json`` stdout. The descriptor points at /dev/null while the object is built."""
    import highspy
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:                      # no usable descriptor 1: nothing to protect
        return highspy.Highs()
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            h = highspy.Highs()
            h.setOptionValue("output_flag", False)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    return h


def _highs(time_limit: float, threads: int | None = None):
    h = _quiet_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(max(time_limit, 0.01)))
    if threads:
        h.setOptionValue("threads", int(threads))
    return h


def solve_lp_relaxation(inst: Instance, horizon: int, *, strengthen: bool = False,
                        windows: bool = False, time_limit: float = 60.0) -> float | None:
    """A valid lower bound from the LP relaxation, even when the LP is stopped by the time limit.

    The bound is recomputed from HiGHS's row duals as a Lagrangian bound: for any multipliers
    u >= 0 on the <= rows, L(u) = sum_i min_k (c_ik + sum_r u_r A_r,ik) - sum_r u_r b_r is a lower
    bound (each request picks its best start under the penalised costs), so the value does not
    rely on the LP having been solved to optimality or on floating-point tolerances; at the LP
    optimum it equals the LP value. None when HiGHS returned no duals.
    """
    types = Types.of(inst)
    cols, cost, lo, hi, matrix = build_model(types.instance, horizon, strengthen=strengthen,
                                             windows=windows, counts=types.counts)
    h = _highs(time_limit)
    if len(matrix[0]) > PRESOLVE_MAX_NONZEROS:
        # first-order PDLP: its iterates' duals give a strong Lagrangian bound long before the
        # simplex finishes (n = 50: 99% of the LP value in 5 s; dual simplex 85%)
        h.setOptionValue("solver", "pdlp")
        h.setOptionValue("presolve", "off")     # a presolved LP stopped by the clock has no duals
    h.passModel(_to_highs(cost, lo, hi, matrix, integer=False, col_upper=types.counts[cols.job]))
    h.run()
    sol = h.getSolution()
    if not sol.dual_valid:
        return None
    return lagrangian_bound(cols, cost, matrix, hi, types.counts, np.asarray(sol.row_dual))


def lagrangian_bound(cols: Columns, cost, matrix, row_upper, counts, row_dual) -> float:
    """L(u) with u = max(0, -dual) on the inequality rows (rows 0..n-1 are the assignments)."""
    row, col, val, num_rows = matrix
    n = len(counts)
    u = np.maximum(0.0, -np.asarray(row_dual, dtype=np.float64))
    u[:n] = 0.0
    u[~np.isfinite(row_upper)] = 0.0
    adjusted = cost + np.bincount(col, weights=val * u[row], minlength=len(cost))
    best = np.full(n, np.inf)
    np.minimum.at(best, cols.job, adjusted)
    return float(np.dot(counts, best) - np.dot(u[n:], np.asarray(row_upper)[n:]))


@dataclass(frozen=True)
class Types:
    """Identical requests (same arrival, prompt, output) grouped: one row of `instance` per type."""

    instance: Instance
    counts: np.ndarray
    members: list          # request ids of each type, in id order

    @classmethod
    def of(cls, inst: Instance) -> Types:
        keys = list(zip(inst.arrival_time.tolist(), inst.num_prompt_tokens.tolist(),
                        inst.num_output_tokens.tolist()))
        index: dict = {}
        members: list = []
        for i, key in enumerate(keys):
            if key not in index:
                index[key] = len(members)
                members.append([])
            members[index[key]].append(i)
        rep = np.array([m[0] for m in members], dtype=np.int64)
        return cls(inst.subset(rep), np.array([len(m) for m in members], dtype=np.int64), members)

    def column_values(self, cols: Columns, start: np.ndarray) -> np.ndarray:
        """x[k,t] = number of type-k requests starting at t in the request-level `start`."""
        table: dict = {}
        for k, ids in enumerate(self.members):
            for i in ids:
                table[(k, int(start[i]))] = table.get((k, int(start[i])), 0) + 1
        return np.array([table.get((int(k), int(p)), 0) for k, p in zip(cols.job, cols.start)],
                        dtype=np.float64)

    def starts(self, cols: Columns, x: np.ndarray, n: int) -> np.ndarray | None:
        """Request-level starts from integer column values (None if they do not add up)."""
        counts = np.rint(x).astype(np.int64)
        out = np.full(n, -1, dtype=np.int64)
        per_type: dict = {}
        for c in np.flatnonzero(counts > 0):
            per_type.setdefault(int(cols.job[c]), []).extend([int(cols.start[c])] * int(counts[c]))
        for k, ids in enumerate(self.members):
            got = sorted(per_type.get(k, []))
            if len(got) != len(ids):
                return None
            out[ids] = got
        return out


def solve_ip(inst: Instance, *, time_limit: float = 60.0, strengthen: bool = False,
             windows: bool = False, warm_start: np.ndarray | None = None,
             threads: int | None = None, aggregate: bool = True) -> IPResult:
    """Solve the time-indexed IP; never reports `optimal` without HiGHS's proof.

    ``aggregate``: identical requests (same arrival, prompt and output) share integer columns
    x[k,t] in [0, count_k] (the same integer solutions up to permuting identical requests, and
    no symmetric copies for the branch-and-bound to explore).
    """
    started = time.perf_counter()
    msg = inst.unfit_message()
    if msg:
        return IPResult(None, float("inf"), "infeasible", 0.0, None, message=msg)
    if warm_start is None:
        warm_start = best_heuristic(inst, deadline=started + 0.2 * time_limit)
    upper = inst.objective(warm_start)
    horizon = horizon_from_upper_bound(inst, upper - inst.latency_offset)
    horizon = max(horizon, int((warm_start + inst.num_output_tokens).max()))
    types = Types.of(inst) if aggregate else Types(inst, np.ones(len(inst), dtype=np.int64),
                                                    [[i] for i in range(len(inst))])
    cols, cost, lo, hi, matrix = build_model(types.instance, horizon, strengthen=strengthen,
                                             windows=windows, counts=types.counts)
    h = _highs(time_limit - (time.perf_counter() - started), threads)
    integral = inst.is_integral()
    if integral:
        h.setOptionValue("mip_abs_gap", 1.0 - 1e-6)
    h.setOptionValue("mip_rel_gap", 0.0)
    if len(matrix[0]) > PRESOLVE_MAX_NONZEROS:
        h.setOptionValue("presolve", "off")     # HiGHS's presolve ignores the time limit on big models
    h.passModel(_to_highs(cost, lo, hi, matrix, integer=True, col_upper=types.counts[cols.job]))
    _set_warm_start(h, types.column_values(cols, warm_start))
    h.run()
    return _read_result(h, inst, types, cols, cost, matrix[3], warm_start, upper, integral, started)


def _set_warm_start(h, value: np.ndarray) -> None:
    import highspy
    sol = highspy.HighsSolution()
    sol.col_value = value
    sol.value_valid = True
    h.setSolution(sol)


def _read_result(h, inst, types, cols, cost, num_rows, warm_start, upper, integral, started) -> IPResult:
    import highspy
    info = h.getInfo()
    status = h.getModelStatus()
    best_start, objective = warm_start, upper
    if info.primal_solution_status == 2:    # feasible point available
        cand = types.starts(cols, np.asarray(h.getSolution().col_value), len(inst))
        if cand is not None:
            if inst.objective(cand) < objective:
                best_start, objective = cand, inst.objective(cand)
    bound = float(info.mip_dual_bound)
    trivial = inst.trivial_bound
    bound = max(bound, trivial) if np.isfinite(bound) else trivial    # each c_i >= r_i + o_i
    if integral and np.isfinite(bound):
        offset = inst.latency_offset
        bound = float(np.ceil(bound - offset - 1e-6) + offset)
    bound = min(bound, objective)
    solved = status == highspy.HighsModelStatus.kOptimal and objective - bound < (1 - 1e-6 if integral else 1e-6)
    return IPResult(objective, bound, "optimal" if solved else "time_limit",
                    time.perf_counter() - started, best_start, len(cost), num_rows,
                    "" if solved else f"HiGHS status: {h.modelStatusToString(status)}")
