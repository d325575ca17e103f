"""The paper's round model of a workload, shared by every solver in `kvsched.bounds`.

Model (Jaillet et al., MC-SF, arXiv 2502.07115; ALGORITHMS.md §1): unit-time rounds, one worker,
non-preemptive. Request i started at boundary p (an integer, p >= ceil(a_i)) occupies
s_i + (t - p) KV tokens during round t for t = p+1 .. p+o_i (round t is the interval [t-1, t]) and
completes at c_i = p + o_i. A schedule is feasible iff the KV in use during every round is <= M.
Objective: total latency sum_i (c_i - a_i).

This is exactly what the engine does with `Simulator(UnitTime(), M, kv_convention=EMITTED)` and
block size 1 when each request is admitted with its whole prompt and decoded every iteration.

Arrival times that are not whole rounds: solvers release request i at r_i = ceil(a_i) and count
the latency from the true a_i; the optimum is then the optimum over schedules that start requests at
whole rounds (the paper's model). `bruteforce` handles fractional arrivals exactly (see there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..workload.synthetic import Workload


@dataclass(frozen=True)
class Instance:
    """Arrays indexed by request id (= workload row). ``release`` = ceil(arrival), as int."""

    arrival_time: np.ndarray
    release: np.ndarray
    num_prompt_tokens: np.ndarray
    num_output_tokens: np.ndarray
    capacity_tokens: int

    @classmethod
    def from_workload(cls, workload: Workload, capacity_tokens: int) -> Instance:
        return cls.make(workload.num_prompt_tokens, workload.true_output_tokens, capacity_tokens,
                        workload.arrival_time)

    @classmethod
    def make(cls, s, o, capacity_tokens: int, arrival=None) -> Instance:
        s = np.asarray(s, dtype=np.int64)
        a = np.zeros(len(s)) if arrival is None else np.asarray(arrival, dtype=np.float64)
        return cls(a, np.ceil(a - 1e-9).astype(np.int64), s, np.asarray(o, dtype=np.int64),
                   int(capacity_tokens))

    def __len__(self) -> int:
        return len(self.num_prompt_tokens)

    @property
    def peak_tokens(self) -> np.ndarray:
        """KV a request holds in its last round: s + o."""
        return self.num_prompt_tokens + self.num_output_tokens

    @property
    def volume(self) -> np.ndarray:
        """KV-rounds of a request: sum_{j=1..o} (s + j) = o*s + o(o+1)/2."""
        s, o = self.num_prompt_tokens, self.num_output_tokens
        return o * s + o * (o + 1) // 2

    def unfit_requests(self) -> list[int]:
        """Requests that cannot run even alone (s + o > M)."""
        return [int(i) for i in np.flatnonzero(self.peak_tokens > self.capacity_tokens)]

    def unfit_message(self) -> str | None:
        bad = self.unfit_requests()
        if not bad:
            return None
        i = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return (f"request {i} needs {int(self.peak_tokens[i])} KV tokens at its last token "
                f"(s={int(self.num_prompt_tokens[i])}, o={int(self.num_output_tokens[i])}); the KV "
                f"capacity is {self.capacity_tokens} tokens{more}")

    @property
    def all_at_zero(self) -> bool:
        return bool(np.all(self.release == self.release.min())) if len(self) else True

    @property
    def latency_offset(self) -> float:
        """sum_i (r_i - a_i): what fractional arrivals add to sum_i (c_i - r_i)."""
        return float(np.sum(self.release - self.arrival_time))

    def horizon(self) -> int:
        """A boundary by which some optimal schedule has started every request.

        In an optimal schedule no round after the last release is empty while a request waits
        (shifting every later start left by one would stay feasible and gain), so each start is at
        most max_r + sum of the other requests' lengths. Used only as a safe fallback.
        """
        return int(self.release.max() + self.num_output_tokens.sum())

    def objective(self, start: np.ndarray) -> float:
        """sum_i (p_i + o_i - a_i)."""
        return float(np.sum(start + self.num_output_tokens - self.arrival_time))

    def subset(self, idx) -> Instance:
        """The instance of the requests `idx` (same capacity)."""
        return Instance(self.arrival_time[idx], self.release[idx], self.num_prompt_tokens[idx],
                        self.num_output_tokens[idx], self.capacity_tokens)

    @property
    def trivial_bound(self) -> float:
        """Every request starting at its release: a lower bound on any schedule's objective."""
        return self.objective(self.release)

    def is_integral(self) -> bool:
        return bool(np.all(self.release == self.arrival_time))


def ceil_int(x: float) -> int:
    return int(math.ceil(x - 1e-9))
