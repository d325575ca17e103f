"""`Plan`: a schedule in the round model (request id → start boundary), and its checks.

A plan is what every solver in `kvsched.bounds` returns; the `plan-replay` policy runs it through
the engine, which confirms its feasibility and its total latency independently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from .instance import Instance


def _freeze(starts: Mapping[int, float]) -> Mapping[int, float]:
    return MappingProxyType({int(k): float(v) for k, v in sorted(starts.items())})


@dataclass(frozen=True, slots=True)
class Plan:
    """``start_time[i]`` = the boundary (round number) at which request i is admitted.

    Starts are whole rounds in plans from the IP and heuristics; `bruteforce` may return a start
    at a fractional arrival time plus a whole number of rounds (see its docstring).
    """

    start_time: Mapping[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_time", _freeze(self.start_time))

    @classmethod
    def from_array(cls, starts) -> Plan:
        return cls({i: float(p) for i, p in enumerate(np.asarray(starts))})

    def as_array(self, n: int) -> np.ndarray:
        if sorted(self.start_time) != list(range(n)):
            raise ValueError(f"plan covers requests {sorted(self.start_time)}, expected 0..{n - 1}")
        return np.array([self.start_time[i] for i in range(n)], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.start_time)

    def to_json(self) -> dict[str, float]:
        return {str(k): v for k, v in self.start_time.items()}


def usage_profile(instance: Instance, starts: np.ndarray, horizon: int | None = None) -> np.ndarray:
    """KV in use during each round: ``profile[t]`` for round t (interval [t-1, t]), t >= 1.

    Starts must be whole rounds.
    """
    p = np.asarray(starts, dtype=np.int64)
    s, o = instance.num_prompt_tokens, instance.num_output_tokens
    end = int((p + o).max()) if len(p) else 0
    size = max(end, horizon or 0) + 2
    profile = np.zeros(size, dtype=np.int64)
    for pi, si, oi in zip(p.tolist(), s.tolist(), o.tolist()):
        add_request(profile, pi, si, oi)
    return profile


def request_profile(s: int, o: int) -> np.ndarray:
    """KV a request with prompt s holds in its o rounds: s + 1, …, s + o (the papers' s + j)."""
    return np.arange(s + 1, s + o + 1)


def add_request(profile: np.ndarray, p: int, s: int, o: int) -> None:
    """Add to `profile` a request started at round p (it is active in rounds p + 1 … p + o)."""
    profile[p + 1: p + o + 1] += request_profile(s, o)


def check_plan(instance: Instance, plan: Plan) -> float:
    """Validate a whole-round plan (releases, memory); return its total latency. Raises ValueError."""
    starts = plan.as_array(len(instance))
    if np.any(starts != np.round(starts)):
        raise ValueError("check_plan needs whole-round starts")
    p = starts.astype(np.int64)
    early = np.flatnonzero(p < instance.release)
    if early.size:
        i = int(early[0])
        raise ValueError(f"request {i} starts at {p[i]} before its release {instance.release[i]}")
    profile = usage_profile(instance, p)
    over = np.flatnonzero(profile > instance.capacity_tokens)
    if over.size:
        t = int(over[0])
        raise ValueError(f"round {t} uses {profile[t]} KV tokens > capacity {instance.capacity_tokens}")
    return instance.objective(p)
