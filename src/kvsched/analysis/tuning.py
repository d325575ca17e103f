"""Pick policy parameters by simulation: WAIT's cap ``tl``, Nested WAIT's ``tl`` and segment count.

The paper tunes tl on {20, 30, …, 200} (ALGORITHMS.md §4). `tune` runs every combination of a
small grid on one workload and keeps the lowest mean latency (ties: fewer evictions, then the
first in grid order). Runs are deterministic, so the choice is reproducible.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..engine.simulator import Simulator
from ..policies.registry import make
from ..workload.synthetic import Workload

WAIT_TL_GRID: tuple[int, ...] = tuple(range(20, 201, 10))


@dataclass(frozen=True, slots=True)
class TuneResult:
    """The chosen parameters and every trial: (params, mean latency, evictions)."""

    policy: str
    params: dict
    mean_latency: float
    trials: tuple[tuple[dict, float, int], ...] = field(repr=False)


def tune(sim: Simulator, workload: Workload, policy: str, grid: Mapping[str, Sequence],
         base: Mapping | None = None) -> TuneResult:
    """Exhaustive search of `grid` (parameter → values) on top of `base` parameters."""
    names = list(grid)
    trials = []
    for values in itertools.product(*(grid[n] for n in names)):
        params = {**(base or {}), **dict(zip(names, values))}
        summary = sim.run(workload, make(policy, **params)).summary()
        trials.append((params, summary.mean_latency, summary.num_evictions))
    best = min(trials, key=lambda t: (math.inf if math.isnan(t[1]) else t[1], t[2]))
    return TuneResult(policy, best[0], best[1], tuple(trials))


def tune_wait(sim: Simulator, workload: Workload, types: str,
              tl_grid: Sequence[float] = WAIT_TL_GRID, **base) -> TuneResult:
    """WAIT's ``tl`` for a typed workload (``types``: the mix text, see `kvsched.workload.typed`)."""
    return tune(sim, workload, "wait", {"tl": tl_grid}, {"types": types, **base})


def tune_nested_wait(sim: Simulator, workload: Workload, *, tl_grid: Sequence[float] = WAIT_TL_GRID,
                     num_segments_grid: Sequence[int] = (1, 2, 5, 10), **base) -> TuneResult:
    """Nested WAIT's ``tl`` and segment count; segments split [0, max decode stages] evenly."""
    max_stages = int(workload.true_output_tokens.max()) - 1
    best = None
    for m in num_segments_grid:
        stages = max(1, math.ceil(max_stages / m))
        result = tune(sim, workload, "nested-wait", {"tl": tl_grid},
                      {"num_segments": m, "segment_stages": stages, **base})
        if best is None or result.mean_latency < best.mean_latency:
            best = result if best is None else TuneResult(result.policy, result.params,
                                                          result.mean_latency,
                                                          best.trials + result.trials)
        else:
            best = TuneResult(best.policy, best.params, best.mean_latency, best.trials + result.trials)
    return best
