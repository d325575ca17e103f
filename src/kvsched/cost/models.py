"""Iteration-time models. An iteration's time depends only on the batch's `BatchStats`.

Units: seconds (or rounds for `UnitTime`), tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What one iteration computes, aggregated over the scheduled requests.

    A *decode* is a request computing exactly its newest token (1 token, emits 1); everything else
    is *prefill* work (a prompt chunk, or recomputation after an eviction).

    - ``num_prefill_tokens``: tokens computed by prefill requests this iteration.
    - ``num_prefill_seqs`` / ``num_decode_seqs``: number of requests of each kind.
    - ``prefill_context_tokens``: sum over prefill requests of their context after this chunk.
    - ``prefill_attention_work``: sum over prefill requests of chunk × context-after (attention cost).
    - ``decode_context_tokens``: sum over decode requests of the context they attend to (incl. the
      token computed now).
    """

    num_prefill_tokens: int = 0
    num_prefill_seqs: int = 0
    num_decode_seqs: int = 0
    prefill_context_tokens: int = 0
    prefill_attention_work: int = 0
    decode_context_tokens: int = 0

    @property
    def num_seqs(self) -> int:
        return self.num_prefill_seqs + self.num_decode_seqs

    @property
    def num_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decode_seqs

    @property
    def kv_tokens(self) -> int:
        """KV tokens in the batch: the context each scheduled request attends to (WAIT's Σ l + s)."""
        return self.prefill_context_tokens + self.decode_context_tokens

    @property
    def prefill_chunk_squares(self) -> float:
        """Σ chunk² over the prefill chunks (0 without prefill work): exact for one prefill
        sequence (P²) or when no chunk has cached context (W); otherwise estimated assuming chunks
        and cached context are uncorrelated (Σ chunk·kv ≈ P·(C − P)/n), clipped to [P²/n, P²]."""
        n, p = self.num_prefill_seqs, self.num_prefill_tokens
        if n == 0 or p == 0:
            return 0
        work, cached = self.prefill_attention_work, self.prefill_context_tokens - p
        if n == 1:
            return p * p
        if cached == 0:
            return work
        return min(max(work - p * cached / n, p * p / n), p * p)


@runtime_checkable
class CostModel(Protocol):
    """Maps a batch to the wall time of the iteration that computes it."""

    def iteration_time(self, batch: BatchStats) -> float: ...


@dataclass(frozen=True, slots=True)
class UnitTime:
    """Every iteration lasts 1 (the theory papers' rounds)."""

    def iteration_time(self, batch: BatchStats) -> float:
        return 1.0


@dataclass(frozen=True, slots=True)
class LinearCost:
    """time = d0 + d1 · (KV tokens in the batch), the WAIT paper's model (Ao et al., 2025).

    d0: fixed seconds per iteration; d1: seconds per KV token in the batch.
    """

    d0: float
    d1: float

    def __post_init__(self) -> None:
        if self.d0 < 0 or self.d1 < 0 or (self.d0 == 0 and self.d1 == 0):
            raise ValueError("LinearCost needs d0 >= 0, d1 >= 0, not both 0")

    def iteration_time(self, batch: BatchStats) -> float:
        return self.d0 + self.d1 * batch.kv_tokens

