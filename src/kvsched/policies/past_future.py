"""LightLLM's Past-Future scheduler (ALGORITHMS.md §6).

Paper: Gong et al., "Past-Future Scheduler for LLM Serving under SLA Guarantees", ASPLOS 2025,
arXiv 2507.10150. Read: the authors' artifact, github.com/WuSiYu/lightllm-ae,
``behavior-analysis/scheduler_pastfuture_dist1-3.py`` (its behaviour simulator) — the rule below is
what that file does, described in our words; constants are its values.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..state import Batch, Decision, RequestView, SchedulerView, Status
from ._waiting_queue import FrontQueue
from .base import Policy, PolicyTags
from .registry import register


def future_peak_tokens(current_tokens, remaining_tokens) -> int:
    """Peak KV of requests holding `current_tokens` now, each growing one token per iteration for
    its `remaining_tokens` more: with the requests sorted by remaining length, longest first, the
    peak is max_k (k · remaining_k + Σ_{j ≤ k} current_j) (the artifact's formula: when the k-th
    longest finishes, exactly k requests have grown by remaining_k). 0 for no requests."""
    if len(current_tokens) == 0:
        return 0
    order = np.argsort(-np.asarray(remaining_tokens, dtype=np.int64), kind="stable")
    remaining = np.asarray(remaining_tokens, dtype=np.int64)[order]
    current = np.cumsum(np.asarray(current_tokens, dtype=np.int64)[order])
    return int((remaining * np.arange(1, len(order) + 1) + current).max())


def sample_final_length(history_sorted: list[int], generated: int, max_output_tokens: int,
                        rng: np.random.Generator) -> int:
    """A final output length for a request that has generated `generated` tokens, drawn from the
    empirical distribution of finished lengths conditioned on exceeding it (the artifact's rule):
    the support is [generated] + the finished lengths above it + [max(max_output, largest)], and a
    uniform position on that sorted list is interpolated linearly between its neighbours."""
    support = [generated, *history_sorted[bisect.bisect_right(history_sorted, generated):]]
    support.append(max(max_output_tokens, support[-1]))
    position = rng.random() * (len(support) - 1)
    i = int(position)
    low, high = support[i], support[i + 1]
    return round(low + (high - low) * (position - i))


@register
@dataclass(kw_only=True)
class PastFuture(Policy):
    """Past-Future admission (Gong et al., LightLLM, ASPLOS 2025; artifact ``WuSiYu/lightllm-ae``).

    The past: a window of the last ``window_size`` finished output lengths (initially
    ``window_size // 2`` (at least 1) copies of ``initial_output_tokens``). The future: at an admission step,
    ``min(max_sample_sets, min_samples // R + 1)`` sample sets are drawn for the R resident
    requests, each giving every resident a final length from the window conditioned on what it has
    generated (`sample_final_length`). Waiting requests are taken FCFS (evicted ones first); a
    candidate draws a final length uniformly from the window for each set, is appended to it, and is
    admitted only if, in every set, the predicted future peak (`future_peak_tokens`, current KV
    prompt + generated) stays below (1 − ``reserve``)·M; the first that fails stops admission (an
    admitted candidate stays in the sets for the next one).

    Every iteration computes the resident requests in admission order; if one cannot get its
    blocks the newest resident is evicted (LIFO, the artifact's ``batch.pop()``) and goes to the
    front of the queue. Admission steps happen every ``prefill_interval`` iterations (artifact: 10
    decode steps between prefill steps) and admit at most ``max_prefill_tokens`` prompt tokens
    (artifact: 32,768; None: no cap besides the engine's budget).

    Deviations (parameters or stated): the artifact's evictions are free (the evicted request keeps
    its progress); here the engine's eviction applies (recompute: the engine's
    setting is recompute only). A candidate that was evicted before (g > 0) samples conditioned on g, like a resident.
    The peak is in tokens with the papers' s + o at the last token (an upper bound under the computed
    convention); blocks are checked by the engine's arithmetic (`SchedulerView.new_batch`) for the
    tokens scheduled now. Liveness (ours): with nothing resident the queue head is admitted even if
    its sampled peak exceeds the limit (the artifact's capacity, 120,000 tokens, never needs it).
    """

    name: ClassVar[str] = "past-future"
    tags: ClassVar[PolicyTags] = PolicyTags(preemptive=True, pauses=True)
    description: ClassVar[str] = "Admit by the future peak sampled from finished lengths (LightLLM, arXiv 2507.10150)"

    window_size: int = 1000
    initial_output_tokens: int = 512
    max_output_tokens: int = 4096
    min_samples: int = 200
    max_sample_sets: int = 5
    reserve: float = 0.03
    prefill_interval: int = 1
    max_prefill_tokens: int | None = None

    def __post_init__(self) -> None:
        for field in ("window_size", "initial_output_tokens", "max_output_tokens", "min_samples",
                      "max_sample_sets", "prefill_interval"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be an integer >= 1, got {value!r}")
        if not 0.0 <= self.reserve < 1.0:
            raise ValueError(f"reserve must be in [0, 1), got {self.reserve}")
        if self.max_prefill_tokens is not None and self.max_prefill_tokens < 1:
            raise ValueError(f"max_prefill_tokens must be >= 1 or None, got {self.max_prefill_tokens}")

    def reset(self, *, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        self._history: deque[int] = deque([self.initial_output_tokens] * max(1, self.window_size // 2),
                                          maxlen=self.window_size)
        self._resident: dict[int, RequestView] = {}
        self._front = FrontQueue()

    # ------------------------------------------------------------------ the past
    def _observe(self) -> None:
        """Append the output length of every request run in the last decision that has finished
        since (request views are live: their status is the current one)."""
        for r in self._resident.values():
            if r.status is Status.FINISHED:
                self._history.append(r.num_output_tokens)

    def _remember(self, view: SchedulerView, batch: Batch) -> None:
        """The requests resident after this decision (the admitted ones included)."""
        scheduled = batch.num_tokens
        self._resident = {r.request_id: r for r in (*view.running, *view.waiting)
                          if r.request_id in scheduled or (r.is_resident and r.request_id not in batch.evicted)}

    # ------------------------------------------------------------------ decision
    def schedule(self, view: SchedulerView) -> Decision:
        self._observe()
        batch = view.new_batch()
        served = self._serve_residents(batch, list(view.running))
        if not view.running or view.iteration % self.prefill_interval == 0:
            self._admit(view, batch, served)
        self._remember(view, batch)
        return batch.decision()

    def _serve_residents(self, batch: Batch, running: list[RequestView]) -> list[RequestView]:
        """Residents in admission order; evict the newest when one cannot grow. Returns those kept."""
        i = 0
        while i < len(running) and batch.token_budget != 0:
            r = running[i]
            n = batch.tokens_within_budget(r)
            while not batch.add(r, n):
                victim = running.pop()
                batch.evict(victim)
                self._front.push(victim)
                if victim is r:
                    return running
            i += 1
        return running

    def _admit(self, view: SchedulerView, batch: Batch, residents: list[RequestView]) -> None:
        limit = view.kv_capacity_tokens * (1.0 - self.reserve)
        history = sorted(self._history)
        sets = self._sample_sets(residents, history)
        prefilled = 0
        for r in self._front.order(view):
            if self.max_prefill_tokens is not None and prefilled >= self.max_prefill_tokens:
                break
            n = batch.tokens_within_budget(r)
            if n == 0:
                break
            for current, remaining in sets:        # one draw per set, as the artifact
                current.append(r.num_tokens)
                remaining.append(self._candidate_length(r, history) - r.num_output_tokens)
            alone = not residents and not batch.num_tokens
            peak = max(future_peak_tokens(c, m) for c, m in sets)
            if not (peak < limit or alone) or not batch.add(r, n):
                break
            self._front.admitted(r)
            prefilled += n

    def _sample_sets(self, residents: list[RequestView], history: list[int]):
        """Sample sets for the residents: lists (current KV tokens, remaining tokens)."""
        if not residents:
            return [([], [])]
        count = min(self.max_sample_sets, self.min_samples // len(residents) + 1)
        sets = []
        for _ in range(count):
            current = [r.num_tokens for r in residents]
            remaining = [sample_final_length(history, r.num_output_tokens, self.max_output_tokens, self._rng)
                         - r.num_output_tokens for r in residents]
            sets.append((current, remaining))
        return sets

    def _candidate_length(self, request: RequestView, history: list[int]) -> int:
        """A fresh request's final length is one finished length drawn uniformly (the artifact's
        ``random.choice``); a request that had generated tokens samples as a resident does."""
        if request.num_output_tokens == 0:
            return history[int(self._rng.integers(len(history)))]
        return sample_final_length(history, request.num_output_tokens, self.max_output_tokens, self._rng)
