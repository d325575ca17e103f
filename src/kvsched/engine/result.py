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
    #: Every gap between two consecutive output tokens of a request (seconds), when
    #: ``Simulator(record_token_gaps=True)``: request r's o_r - 1 gaps follow request r - 1's
    #: (`token_gap_offsets`); NaN where a token was never emitted (rejected or unfinished).
    token_gaps: np.ndarray | None = field(default=None, repr=False)
    #: Per request, the generated tokens discarded by restarts (``Simulator(eviction="restart")``;
    #: None: the run evicted by recompute, nothing discarded).
    num_restarted_tokens: np.ndarray | None = field(default=None, repr=False)
    #: Per request, with ``Simulator(prefix_caching=True)`` (None otherwise): the prompt tokens
    #: served from the prefix cache, summed over the request's admissions (a request evicted and
    #: admitted again looks the cache up again) ...
    num_cached_tokens: np.ndarray | None = field(default=None, repr=False)
    #: ... and the tokens it looked up (its ``num_tokens`` at each admission, summed).
    num_lookup_tokens: np.ndarray | None = field(default=None, repr=False)
    #: When each request arrived, where that differs from the workload's ``arrival_time``: the
    #: follow-up turns of a closed-loop workload (`Workload.parent`) arrive a think time after
    #: their previous turn finishes (NaN: never arrived). None: as the workload says.
    realized_arrival_time: np.ndarray | None = field(default=None, repr=False)

    @property
    def arrival_time(self) -> np.ndarray:
        """When each request arrived (the realised times of closed-loop follow-ups)."""
        if self.realized_arrival_time is not None:
            return self.realized_arrival_time
        return self.workload.arrival_time

    def token_gap_offsets(self) -> np.ndarray:
        """Where each request's gaps start in `token_gaps`."""
        return token_gap_offsets(self.workload.true_output_tokens)

    def summary(self):
        from ..metrics import summarize
        return summarize(self)


def token_gap_offsets(true_output: np.ndarray) -> np.ndarray:
    """Request r's o_r - 1 token gaps start where request r - 1's end."""
    counts = np.maximum(np.asarray(true_output, dtype=np.int64) - 1, 0)
    return np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64) if len(counts) else counts


def num_token_gaps(true_output: np.ndarray) -> int:
    return int(np.maximum(np.asarray(true_output, dtype=np.int64) - 1, 0).sum())
