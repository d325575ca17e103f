"""Hindsight bounds: the least total latency any schedule can reach on a workload.

`compute_bound(name, workload, simulator, time_limit)` → `BoundResult`. Methods (``BOUND_METHODS``):

- ``ip``: the MC-SF paper's time-indexed integer program, HiGHS, warm-started (`bounds.ip`).
- ``ip-strong``: the same with clique rows (`bounds.ip`, ``strengthen=True``).
- ``exact``: heuristics + neighbourhood search, then the window-strengthened LP / IP
  (`bounds.exact`) — the strongest method.
- ``semionline``: branch-and-bound for requests that all arrive together (`bounds.semionline`).
- ``bruteforce``: exhaustive enumeration, n <= 6 (`bounds.bruteforce`; non-preemptive optimum).
- ``heuristic``: the best heuristic schedule only (an upper bound; `bound` is the trivial
  sum of lengths).

All are for the round model (`bounds.instance`): `Simulator(UnitTime(), M, block_size=1)`,
non-preemptive (the MC-SF paper's model). Under `UnitTime` the engine's eviction is a free pause
(see `bounds.bruteforce`), so a policy that evicts can finish below these optima;
`bruteforce.optimal_total_latency` gives the optimum with evictions for tiny instances. Under
``KVConvention.EMITTED`` a request holds s + j while emitting token j; under ``COMPUTED`` it holds
s + j - 1, which is the same model with prompt s - 1, so both are supported. Other cost models and
block sizes raise `ConfigError`. ``status``: ``optimal`` (objective proven equal to the bound),
``time_limit`` (best schedule and best proven bound so far; never a wrong ``optimal``) or
``infeasible`` (a request cannot fit even alone; reported in ``message``, nothing solved).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..workload.synthetic import Workload
from .instance import Instance
from .plan import Plan

__all__ = ["BOUND_METHODS", "BoundResult", "Plan", "compute_bound", "instance_for"]


@dataclass(frozen=True, slots=True)
class BoundResult:
    """``objective``: total latency sum (c_i - a_i) of ``plan`` (None if infeasible);
    ``bound``: proven lower bound on the optimum; ``gap`` = (objective - bound) / objective."""

    method: str
    objective: float | None
    bound: float | None
    gap: float | None
    status: str
    solve_time: float
    plan: Plan | None
    num_requests: int
    message: str = ""

    def as_dict(self) -> dict:
        return {"method": self.method, "objective": self.objective, "bound": self.bound,
                "gap": self.gap, "status": self.status, "solve_time": self.solve_time,
                "num_requests": self.num_requests, "message": self.message,
                "plan": None if self.plan is None else self.plan.to_json()}


def instance_for(workload: Workload, simulator) -> Instance:
    """The round-model instance of `workload` on `simulator` (checks the simulator's settings)."""
    from ..cost.models import UnitTime
    from ..engine.rules import KVConvention
    if not isinstance(simulator.cost, UnitTime):
        raise ConfigError(f"bounds are defined for the unit-time model; got cost {simulator.cost!r}")
    if simulator.block_size != 1:
        raise ConfigError(f"bounds need block_size 1, got {simulator.block_size}")
    if simulator.max_num_batched_tokens is not None or simulator.separate_batching:
        raise ConfigError("bounds assume no engine token budget and mixed batches")
    inst = Instance.from_workload(workload, simulator.kv_capacity_tokens)
    if KVConvention(simulator.kv_convention) is KVConvention.COMPUTED:
        inst = Instance(inst.arrival_time, inst.release, inst.num_prompt_tokens - 1,
                        inst.num_output_tokens, inst.capacity_tokens)
    return inst


def _from_ip(method: str, res, n: int) -> BoundResult:
    plan = None if res.start is None else Plan.from_array(res.start)
    return BoundResult(method, res.objective, None if res.objective is None else res.bound,
                       res.gap, res.status, res.solve_time, plan, n, res.message)


def _ip(inst: Instance, time_limit: float) -> BoundResult:
    from .ip import solve_ip
    return _from_ip("ip", solve_ip(inst, time_limit=time_limit), len(inst))


def _ip_strong(inst: Instance, time_limit: float) -> BoundResult:
    from .ip import solve_ip
    return _from_ip("ip-strong", solve_ip(inst, time_limit=time_limit, strengthen=True), len(inst))


def _exact(inst: Instance, time_limit: float) -> BoundResult:
    from .exact import solve_exact
    return _from_ip("exact", solve_exact(inst, time_limit=time_limit), len(inst))


def _semionline(inst: Instance, time_limit: float) -> BoundResult:
    from .semionline import solve_semionline
    if not inst.all_at_zero:
        raise ConfigError("bound 'semionline' needs every request to arrive at the same time")
    started = time.perf_counter()
    value, starts, status = solve_semionline(inst, time_limit=time_limit)
    trivial = inst.trivial_bound
    bound = value if status == "optimal" else trivial
    value = value if value is not None else inst.objective(starts)
    return BoundResult("semionline", value, bound, (value - bound) / value, status,
                       time.perf_counter() - started, Plan.from_array(starts), len(inst),
                       "" if status == "optimal" else "search stopped by the time limit")


def _bruteforce(inst: Instance, time_limit: float) -> BoundResult:
    from .bruteforce import solve
    started = time.perf_counter()
    value, starts = solve(inst)
    return BoundResult("bruteforce", value, value, 0.0, "optimal", time.perf_counter() - started,
                       Plan({i: p for i, p in enumerate(starts)}), len(inst))


def _heuristic(inst: Instance, time_limit: float) -> BoundResult:
    from .greedy import best_heuristic
    started = time.perf_counter()
    start = best_heuristic(inst)
    obj = inst.objective(start)
    bound = inst.trivial_bound
    return BoundResult("heuristic", obj, bound, (obj - bound) / obj, "optimal" if obj <= bound else
                       "time_limit", time.perf_counter() - started, Plan.from_array(start), len(inst),
                       "heuristic only: the bound is the sum of lengths")


BOUND_METHODS: dict[str, Callable[[Instance, float], BoundResult]] = {
    "ip": _ip, "ip-strong": _ip_strong, "exact": _exact, "semionline": _semionline,
    "bruteforce": _bruteforce,
    "heuristic": _heuristic,
}


def compute_bound(name: str, workload: Workload, simulator, time_limit: float = 60.0) -> BoundResult:
    """Solve for the hindsight optimum of `workload` on `simulator` with method `name`."""
    if name not in BOUND_METHODS:
        raise ConfigError(f"unknown bound {name!r}; expected one of: {', '.join(BOUND_METHODS)}")
    if time_limit <= 0:
        raise ConfigError(f"--time-limit must be > 0, got {time_limit}")
    fractional = np.flatnonzero(workload.arrival_time != np.round(workload.arrival_time))
    if fractional.size and name != "bruteforce":
        # Releasing at ceil(a) would not bound an engine that starts work at fractional times;
        # only the brute force searches the engine's own grid of boundaries.
        raise ConfigError(f"bound {name!r} is in whole rounds: request {int(fractional[0])} arrives at "
                          f"{workload.arrival_time[fractional[0]]:g}; use integer arrival times "
                          "(e.g. --rate 0, or a trace in rounds)")
    inst = instance_for(workload, simulator)
    msg = inst.unfit_message()
    if msg:
        return BoundResult(name, None, None, None, "infeasible", 0.0, None, len(inst), msg)
    return BOUND_METHODS[name](inst, time_limit)
