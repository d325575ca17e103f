"""What a run produces: per-request records (`RunResult`) and, on request, per-iteration records."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..workload.synthetic import Workload


@dataclass(frozen=True, slots=True)
class IterationRecord:
    """One iteration, recorded when `Simulator(record_iterations=True)`. ``evicted``: the requests
    evicted since the previous iteration (by this boundary's decision, or by decisions that only
    evicted); ``kv_used_tokens``: KV in use after the iteration, in whole blocks."""

    start_time: float
    duration: float
    num_tokens: dict[int, int]
    evicted: tuple[int, ...]
    kv_used_tokens: int


@dataclass(frozen=True)
class RunResult:
    """Per-request records (columnar, indexed by request id) and run-level figures."""

    policy: str
    workload: Workload
    kv_capacity_tokens: int
    first_scheduled_time: np.ndarray
    first_token_time: np.ndarray
    finish_time: np.ndarray
    num_evictions: np.ndarray
    num_recomputed_tokens: np.ndarray
    total_computed_tokens: np.ndarray     # per request, over the run (recomputation included)
    rejected: np.ndarray
    reject_reasons: dict[int, str]
    num_iterations: int
    busy_time: float
    kv_peak_tokens: int
    kv_token_seconds: float
    wall_time: float
    iterations: list[IterationRecord] | None = field(default=None, repr=False)

    def summary(self):
        from ..metrics import summarize
        return summarize(self)
