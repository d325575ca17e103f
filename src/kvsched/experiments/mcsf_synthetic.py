"""Reproduction R1: MC-SF against the hindsight optimum on the MC-SF paper's synthetic instances.

Jaillet et al., arXiv 2502.07115, synthetic experiment (ALGORITHMS.md §5, R1 — a summary, not the
paper's text): 200 trials; M ~ U{30..50}, n ~ U{40..60}, s ~ U{1..5}, o ~ U{1..M-s}; arrivals all
at t = 0, or Poisson with rate λ ~ U[0.5, 1.5] per round. Reported: MC-SF / optimum mean 1.005,
worst 1.074, MC-SF optimal in 114/200 (t = 0); mean 1.047, worst 1.227 (Poisson).

Our choices (documented, not the paper's): Poisson arrival times are floored to whole rounds (the
paper's round model); each policy runs in `Simulator(UnitTime(), M, kv_convention=EMITTED)` with
block size 1 and the exact predictor (point and interval = the true length), so `amin` gets exact
intervals. A policy that is not registered yet is skipped with a note.

Evictions: under `UnitTime` the engine's eviction (recompute) is a free pause — the evicted
request keeps its tokens and recomputes its KV in one round — which the paper's non-preemptive
model does not allow, so a policy that evicts (vllm, sarathi) may score a ratio below 1. A policy
that never evicts and beats the proven bound stops the run (it would be a bug).

The optimum comes from `kvsched.bounds.compute_bound(method)` with a per-instance time limit. An
instance whose optimum is not certified keeps its best schedule and proven lower bound: the table
then shows the ratio to the best schedule found (a lower estimate of the true ratio, since that
schedule costs at least the optimum) and, beside it, the ratio to the proven lower bound (a
certified upper limit on the true ratio); the number of certified instances is printed.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

from ..workload.synthetic import Workload

PAPER_FIGURES = {
    "zero": {"mean": 1.005, "worst": 1.074, "num_optimal": 114, "num_trials": 200},
    "poisson": {"mean": 1.047, "worst": 1.227, "num_optimal": None, "num_trials": 200},
}
DEFAULT_POLICIES = ("mcsf", "hsf", "mc-benchmark", "amin", "vllm", "sarathi")
ARRIVAL_MODELS = ("zero", "poisson")
#: MC-SF's admission rule with exact lengths computed in kvsched.bounds.greedy and replayed through
#: the engine (plan-replay): the paper's algorithm independently of the `mcsf` policy module.
RULE = "mcsf-rule"


def paper_instance(rng: np.random.Generator, arrivals: str, num_requests: int | None = None,
                   capacity_tokens: int | None = None) -> tuple[Workload, int]:
    """One synthetic instance of the paper: (workload in rounds, M)."""
    M = int(rng.integers(30, 51)) if capacity_tokens is None else int(capacity_tokens)
    n = int(rng.integers(40, 61)) if num_requests is None else int(num_requests)
    s = rng.integers(1, 6, size=n)
    o = np.array([rng.integers(1, max(1, M - int(si)) + 1) for si in s], dtype=np.int64)
    if arrivals == "zero":
        a = np.zeros(n)
    elif arrivals == "poisson":
        rate = rng.uniform(0.5, 1.5)
        gaps = rng.exponential(1.0 / rate, size=n)
        gaps[0] = 0.0
        a = np.floor(np.cumsum(gaps))
    else:
        raise ValueError(f"arrivals must be one of {ARRIVAL_MODELS}, got {arrivals!r}")
    return Workload.build(a, s, o, name=f"mcsf-synthetic-{arrivals}"), M


@dataclass
class TrialResult:
    num_requests: int
    capacity_tokens: int
    objective: float
    bound: float
    certified: bool
    solve_time: float
    totals: dict[str, float] = field(default_factory=dict)


def run_trial(workload: Workload, capacity: int, policies, method: str, time_limit: float,
              include_rule: bool = True) -> TrialResult:
    """Bound one instance and run each policy on it (plus MC-SF's rule replayed, `RULE`)."""
    from ..bounds import compute_bound, instance_for
    from ..policies import make
    from ..cost.models import UnitTime
    from ..engine.simulator import Simulator
    from ..engine.rules import KVConvention
    from ..workload.predictors import apply_predictor
    sim = Simulator(UnitTime(), capacity, kv_convention=KVConvention.EMITTED)
    res = compute_bound(method, workload, sim, time_limit)
    predicted = apply_predictor(workload, "exact", 0)
    totals = {}
    if include_rule:
        from ..bounds.greedy import mcsf_schedule
        from ..bounds.plan import Plan
        plan = Plan.from_array(mcsf_schedule(instance_for(workload, sim)))
        totals[RULE] = sim.run(workload, make("plan-replay", plan=plan)).summary().total_latency
    for name, make_policy in policies:
        summary = sim.run(predicted, make_policy()).summary()
        totals[name] = summary.total_latency
        if summary.num_evictions == 0 and totals[name] < res.bound - 1e-6:
            raise RuntimeError(f"{name} without evictions beat the proven bound {res.bound} "
                               f"({totals[name]}): a bug in the bound or the engine")
    return TrialResult(len(workload), capacity, res.objective, res.bound, res.status == "optimal",
                       res.solve_time, totals)


def available_policies(names, note=print):
    """[(name, factory)] for the registered ones; prints a note for each that is not."""
    from ..policies import registered
    known = registered()
    out = []
    for name in names:
        if name not in known:
            note(f"note: policy {name!r} is not registered in this installation; skipped")
            continue
        out.append((name, lambda n=name: known[n]()))
    return out


def summarize(trials: list[TrialResult], policy: str) -> dict:
    ratios = [t.totals[policy] / t.objective for t in trials]
    to_bound = [t.totals[policy] / t.bound for t in trials]
    optimal = sum(1 for t in trials if t.certified and t.totals[policy] <= t.objective + 1e-9)
    return {"policy": policy, "mean": statistics.fmean(ratios), "worst": max(ratios),
            "num_optimal": optimal, "mean_vs_bound": statistics.fmean(to_bound),
            "worst_vs_bound": max(to_bound)}


def reproduce(*, trials: int = 200, seed: int = 0, method: str = "exact", time_limit: float = 60.0,
              policies=DEFAULT_POLICIES, arrival_models=ARRIVAL_MODELS, progress=None,
              note=print) -> dict:
    """Run the experiment; returns {model: {"rows": [...], "certified": k, "solve_times": [...]}}."""
    chosen = available_policies(policies, note)
    out = {}
    for model in arrival_models:
        rng = np.random.default_rng([seed, ARRIVAL_MODELS.index(model)])
        results = []
        for k in range(trials):
            workload, capacity = paper_instance(rng, model)
            results.append(run_trial(workload, capacity, chosen, method, time_limit))
            if progress is not None:
                progress(model, k + 1, trials)
        out[model] = {
            "rows": [summarize(results, name) for name in [RULE] + [n for n, _ in chosen]],
            "num_trials": trials,
            "num_certified": sum(t.certified for t in results),
            "max_gap": max((t.objective - t.bound) / t.objective for t in results),
            "solve_times": [t.solve_time for t in results],
            "certified_times": [t.solve_time for t in results if t.certified],
            "instances": [{"num_requests": t.num_requests, "kv_capacity_tokens": t.capacity_tokens,
                           "objective": t.objective, "bound": t.bound, "certified": t.certified,
                           "gap": (t.objective - t.bound) / t.objective, "solve_time": t.solve_time,
                           "total_latency": t.totals} for t in results],
        }
    return out


def timing_summary(times: list[float]) -> str:
    if not times:
        return "none"
    return f"median {statistics.median(times):.2f} s, max {max(times):.2f} s"


def render(report: dict, console) -> None:
    from rich.table import Table
    for model, data in report.items():
        paper = PAPER_FIGURES[model]
        title = ("all requests at t = 0" if model == "zero" else "Poisson arrivals, rate ~ U[0.5, 1.5]")
        table = Table(title=f"{title}: total latency / optimum over {data['num_trials']} instances")
        for col in ("policy", "mean", "worst", "optimal", "mean / bound", "worst / bound"):
            table.add_column(col, justify="left" if col == "policy" else "right")
        opt = paper["num_optimal"]
        table.add_row("MC-SF (paper)", f"{paper['mean']:.3f}", f"{paper['worst']:.3f}",
                      "—" if opt is None else f"{opt}/{paper['num_trials']}", "", "")
        for row in data["rows"]:
            table.add_row(row["policy"], f"{row['mean']:.3f}", f"{row['worst']:.3f}",
                          f"{row['num_optimal']}/{data['num_trials']}", f"{row['mean_vs_bound']:.3f}",
                          f"{row['worst_vs_bound']:.3f}")
        console.print(table)
        gaps = sorted(100 * i["gap"] for i in data["instances"] if not i["certified"])
        parts = [f"certified optimal: {data['num_certified']}/{data['num_trials']} instances"]
        if gaps:
            parts.append(f"gaps of the others: median {statistics.median(gaps):.2f}%, largest "
                         f"{gaps[-1]:.2f}% (each instance's gap is in --json)")
        parts.append(f"solve time {timing_summary(data['solve_times'])}")
        parts.append(f"certified ones {timing_summary(data['certified_times'])}")
        console.print("; ".join(parts))
        if data["num_certified"] < data["num_trials"]:
            console.print("  uncertified instances: 'mean'/'worst' use the best schedule found (the true "
                          "ratio may be higher); '/ bound' columns are certified upper limits.")


__all__ = ["ARRIVAL_MODELS", "DEFAULT_POLICIES", "PAPER_FIGURES", "paper_instance", "render",
           "reproduce", "run_trial"]
