"""Shared helpers for the MC-SF / A_min policy tests: tiny workloads and run records."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from kvsched import KVConvention, Simulator, UnitTime, Workload
from kvsched.policies import registered


def workload(rows, arrivals=None, **predictions) -> Workload:
    """rows: (prompt, output) pairs; arrivals default to 0; predictions: column name → list."""
    n = len(rows)
    arrival = np.zeros(n) if arrivals is None else np.asarray(arrivals, dtype=float)
    cols = {k: np.asarray(v) for k, v in predictions.items()}
    return Workload(arrival, [r[0] for r in rows], [r[1] for r in rows], **cols)


def paper_sim(capacity: int, **kw) -> Simulator:
    """The papers' model: unit-time rounds, KV s + j while emitting token j, token accounting."""
    return Simulator(UnitTime(), capacity, kv_convention=KVConvention.EMITTED, record_iterations=True, **kw)


def run(sim: Simulator, w: Workload, policy):
    result = sim.run(w, policy, seed=0)
    memory = [it.kv_used_tokens for it in result.iterations]
    return result, memory


def finish(result) -> list[int]:
    return [int(x) for x in result.finish_time]


@st.composite
def instances(draw, max_requests=10, online=True):
    """Small random instances: (rows, arrivals, capacity) with every request fitting alone."""
    n = draw(st.integers(1, max_requests))
    rows = [(draw(st.integers(1, 6)), draw(st.integers(1, 9))) for _ in range(n)]
    arrivals = sorted(draw(st.integers(0, 12)) for _ in range(n)) if online and draw(st.booleans()) \
        else [0] * n
    peak = max(s + o for s, o in rows)
    capacity = draw(st.integers(max(peak, 8), peak + 30))
    return rows, arrivals, capacity


FUTURE_MEMORY_POLICIES = ("mcsf", "mc-benchmark", "amax", "amin", "hsf")


@st.composite
def budget_instances(draw, max_requests=8):
    """Small random instances under a small engine token budget: (rows, arrivals, capacity,
    budget), prompts often longer than the budget so prefills (and recomputations) are chunked."""
    n = draw(st.integers(1, max_requests))
    rows = [(draw(st.integers(1, 20)), draw(st.integers(1, 9))) for _ in range(n)]
    arrivals = sorted(draw(st.integers(0, 12)) for _ in range(n)) if draw(st.booleans()) else [0] * n
    peak = max(s + o for s, o in rows)
    capacity = draw(st.integers(peak, peak + 20))
    budget = draw(st.integers(1, 8))
    return rows, arrivals, capacity, budget


def predictions(rows, offsets) -> dict[str, list]:
    """Every prediction column the future-memory policies read: point õ = o + offset (at least
    1) and the interval [min(õ, o), max(õ, o)]."""
    point = [max(1, o + d) for (_, o), d in zip(rows, offsets)]
    return {"predicted_output_tokens": point,
            "predicted_lo": [min(p, o) for p, (_, o) in zip(point, rows)],
            "predicted_hi": [max(p, o) for p, (_, o) in zip(point, rows)]}


#: Parameters for policies that cannot run on their defaults (the suite's workloads have two types).
SETUP = {"wait": {"thresholds": "2/1"}}
#: Policies that need a per-workload input and are covered by their own tests instead.
NEEDS_INPUT = {"plan-replay": "replays a Plan solved for one workload (tests/test_bounds*.py)"}


def livelocks_under_restart(name: str, params: dict) -> bool:
    """Policies that can evict the same requests forever once an eviction discards progress:

    - `alpha-protection` with ``clear_mode="all"`` clears every resident request on overflow;
      under restart they lose their progress, the same batch is admitted and overflows again,
      and no request ever finishes (tests/engine/test_eviction.py shows it);
    - `trail` (and `repredict`, which runs it by default) preempts only young requests, and a
      restarted request is young again, so it can be preempted again and again (found on tiny
      random workloads: 5 of 60 under restart, none under recompute).

    Recompute keeps their progress, so they finish."""
    if name == "alpha-protection":
        return params.get("clear_mode", "all") == "all"
    return name == "trail" or (name == "repredict" and params.get("policy", "trail") == "trail")


def with_settings(policies, settings: dict) -> list[tuple[str, dict, str]]:
    """(policy id, parameters, setting name) for every pair but those that never finish."""
    return [(name, params, key) for name, params in policies for key in sorted(settings)
            if not (settings[key].get("eviction") == "restart" and livelocks_under_restart(name, params))]


def conformance_policies() -> list[tuple[str, dict]]:
    """(id, parameters) of every registered policy the suite runs on."""
    return [(name, SETUP.get(name, {})) for name in registered() if name not in NEEDS_INPUT]
