"""Separate batching with a fluid-derived prefill threshold (`separate-threshold`) — OUR rule.

Context: Jaillet, Jiang, Podimata, Zhou (v1/v2) and Zhou's talks describe separate batching (each
batch holds only prefill work or only decode work) with an online rule of constant regret under
stochastic arrivals; its text is not public (ALGORITHMS.md §2). This policy is our own threshold
rule for that mode, meant to run under ``Simulator(separate_batching=True)`` (it never mixes, so it
also runs without it):

- A *prefill batch* runs when at least ``threshold`` prompts wait, or when nothing resident can
  decode (so the server never idles with work): resident prompts whose prefill is unfinished come
  first (oldest admission first), then waiting prompts FCFS, while their KV fits (minus a
  ``watermark`` fraction of blocks); it stops at the first that does not fit (head-of-line). The
  token budget (the smaller of the engine's ``max_num_batched_tokens`` and ``max_prefill_tokens``)
  is filled in that order and the prompt that reaches it is *chunked* to the budget left; its rest
  is computed by the next prefill batches, which run before any decode batch (a prefill batch
  spans several iterations when a prompt exceeds the budget). Under an engine with a seat limit
  (the view's ``max_num_admissions``, vLLM's ``max_num_seqs``) the batch admits no more prompts
  than there are seats (`kvsched.state.Batch`): a prefill batch of prompts the engine would
  defer would leave every resident paused, step after step. If none fits, a decode batch runs.
- Otherwise a *decode batch*: resident requests compute one token each, FIFO by arrival, at most
  ``max_num_batched_tokens`` of them (the rest wait for the next decode batch). If the KV does not
  fit, the most recently admitted resident requests are evicted (recompute) until it does.

Threshold from the fluid model (`separate_threshold`): alternate one prefill batch with one decode
batch at equilibrium. A cycle then lasts T = 2·d0 + d1·K·Σ_j (share_j · (l'_j + 1)(l_j + l'_j/2))
with K = Λ·T prompts admitted per cycle, so T = 2·d0 / (1 − d1·X) = 2τ* and K = ⌈2·Λ·τ*⌉. A larger
threshold amortises d0 over more prefills (throughput) at the cost of waiting (latency); when the
decode batches run faster than the fluid estimate, more of them run between prefills.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ..state import Decision, SchedulerView
from .base import Policy, PolicyTags
from .registry import register
from .wait import add_evicting_newest


def separate_threshold(bound) -> int:
    """⌈2·Λ·τ*⌉ from a `kvsched.bounds.fluid.FluidBound` (at least 1)."""
    return max(1, math.ceil(2.0 * bound.total_rate * bound.iteration_time - 1e-9))


@register
@dataclass(kw_only=True)
class SeparateThresholdPolicy(Policy):
    """Prefill-only or decode-only iterations; prefill when ``threshold`` prompts wait (our rule)."""

    name: ClassVar[str] = "separate-threshold"
    tags: ClassVar[PolicyTags] = PolicyTags(preemptive=True, pauses=True)
    description: ClassVar[str] = "separate batching: prefill batch at a fluid-derived queue threshold"

    threshold: int = 1
    max_prefill_tokens: int | None = None
    watermark: float = 0.0

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {self.threshold}")
        if self.max_prefill_tokens is not None and self.max_prefill_tokens < 1:
            raise ValueError("max_prefill_tokens must be >= 1 or None")
        if not 0.0 <= self.watermark < 1.0:
            raise ValueError(f"watermark must be in [0, 1), got {self.watermark}")

    def schedule(self, view: SchedulerView) -> Decision:
        decodes = [r for r in view.running if r.is_decode]
        partial = sorted((r for r in view.running if not r.is_decode), key=lambda r: r.admitted_seq)
        if partial or (view.waiting and (len(view.waiting) >= self.threshold or not decodes)):
            tokens = self._prefill(view, partial + list(view.waiting))
            if tokens or not decodes:
                return Decision(num_tokens=tokens)
        return self._decode(view, decodes)

    def _prefill(self, view: SchedulerView, prompts) -> dict[int, int]:
        """Unfinished prefills, then waiting prompts; the last one chunked to the budget left."""
        batch = view.new_batch(self.max_prefill_tokens)
        reserve = int(self.watermark * view.kv_capacity_blocks)
        for r in prompts:
            n = r.num_uncomputed_tokens        # all known tokens when waiting (it holds no KV)
            if batch.token_budget is not None:
                n = min(n, batch.token_budget)
            if n < 1 or not batch.add(r, n, reserve_blocks=reserve):
                break
        return dict(batch.num_tokens)

    def _decode(self, view: SchedulerView, decodes) -> Decision:
        """One token each for the first ``max_num_batched_tokens`` decodes (FIFO by arrival),
        evicting the most recently admitted residents while they do not fit (`add_evicting_newest`)."""
        decodes = sorted(decodes, key=lambda r: (r.arrival_time, r.request_id))
        if view.max_num_batched_tokens is not None:
            decodes = decodes[:view.max_num_batched_tokens]
        batch = view.new_batch()
        add_evicting_newest(view, batch, dict.fromkeys((r.request_id for r in decodes), 1))
        return batch.decision()
