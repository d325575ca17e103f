"""Limited-preemption SRPT in the style of TRAIL (ALGORITHMS.md §6).

Paper: Shahout, Malach, Liu, Jiang, Yu, Mitzenmacher, "Don't Stop Me Now: Embedding Based
Scheduling for LLMs" (TRAIL), ICLR 2025, arXiv 2410.01035. Read: the abstract and summaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ..state import Batch, Decision, RequestView, SchedulerView
from ._future_memory import check_choice, require
from .base import Policy, PolicyTags
from .registry import register


@register
@dataclass(kw_only=True)
class Trail(Policy):
    """SRPT on predicted remaining length, preempting a request only while it is young (TRAIL).

    Certain (abstract): shortest predicted remaining processing time first, the remaining length
    re-predicted after every generated token; preemption allowed early in a request's execution,
    "when memory consumption is low", and restricted as it approaches completion.

    Rule, each iteration:

    1. *Protected* resident requests — age (tokens generated) ≥ ``age_limit``, or ≥
       ``age_fraction`` × their predicted length when that is set — are computed first, in
       admission order, never preempted for a shorter request. If one cannot get its blocks, a
       victim is evicted: the preemptible resident with the longest predicted remaining length, else
       the newest protected one (vLLM's LIFO; if that is the request itself, the pass stops).
    2. Then every other request — preemptible residents and waiting ones — in order of predicted
       remaining length (ties: earlier arrival, id). A waiting request that does not fit evicts
       preemptible residents predicted to take *longer* (longest first), but only if evicting all
       of them would make room; otherwise it waits, and with ``rule="stop"`` (default, strict SRPT)
       no later waiting request is admitted in this iteration ("skip": later ones may be). A
       preemptible resident that does not fit is evicted (it recomputes later).

    Reconstructed (parameters): ``age_limit`` in generated tokens (the paper's limit is on the
    request's progress; KV = prompt + age, so a limit on age is a limit on the KV it wastes when
    preempted), optional ``age_fraction``; the victim orders; ``rule``. The predicted remaining
    length is max(õ, g + 1) − g with õ = ``predicted_output_tokens`` (a point predictor; TRAIL's
    embedding classifier re-predicts from the model's hidden state, which a simulator lacks).
    Preemption recomputes (the engine's eviction), with the tokens already generated kept, so a
    preempted request keeps its age. Residents left without budget are paused.
    """

    name: ClassVar[str] = "trail"
    tags: ClassVar[PolicyTags] = PolicyTags(uses_predictions=True, preemptive=True, pauses=True)
    description: ClassVar[str] = "SRPT, preempting only young requests (TRAIL, Shahout et al., arXiv 2410.01035)"

    age_limit: int = 32
    age_fraction: float | None = None
    rule: str = "stop"

    def __post_init__(self) -> None:
        check_choice("rule", self.rule, ("stop", "skip"))
        if isinstance(self.age_limit, bool) or not isinstance(self.age_limit, int) or self.age_limit < 0:
            raise ValueError(f"age_limit must be an integer >= 0, got {self.age_limit!r}")
        if self.age_fraction is not None and not 0.0 <= self.age_fraction <= 1.0:
            raise ValueError(f"age_fraction must be in [0, 1], got {self.age_fraction}")

    # ------------------------------------------------------------------ predictions
    def predicted_total(self, request: RequestView) -> int:
        """max(⌈õ⌉, g + 1): a request that outlived its prediction needs at least one more token."""
        value = require(request.predicted_output_tokens, request, self.name, "predicted_output_tokens")
        return max(1, math.ceil(value), request.num_output_tokens + 1)

    def remaining(self, request: RequestView) -> int:
        return self.predicted_total(request) - request.num_output_tokens

    def preemptible(self, request: RequestView) -> bool:
        age = request.num_output_tokens
        if age >= self.age_limit:
            return False
        return self.age_fraction is None or age < self.age_fraction * self.predicted_total(request)

    def _key(self, request: RequestView) -> tuple:
        return (self.remaining(request), request.arrival_time, request.request_id)

    # ------------------------------------------------------------------ decision
    def schedule(self, view: SchedulerView) -> Decision:
        batch = view.new_batch()
        protected = [r for r in view.running if not self.preemptible(r)]
        young = sorted((r for r in view.running if self.preemptible(r)), key=self._key)
        self._serve_protected(batch, protected, young)
        admitting = True
        for r in sorted([*young, *view.waiting], key=self._key):
            if r.request_id in batch.evicted:
                continue
            n = batch.tokens_within_budget(r)
            if n == 0:
                break                                    # budget spent: the rest pause or wait
            if r.is_resident:
                if not batch.add(r, n):
                    batch.evict(r)
            elif admitting and not self._admit(view, batch, r, n, young):
                admitting = self.rule == "skip"
        return batch.decision()

    def _serve_protected(self, batch: Batch, protected: list[RequestView], young: list[RequestView]) -> None:
        """Step 1: protected residents in admission order; victims young-longest first, then LIFO."""
        queue = list(protected)
        i = 0
        while i < len(queue) and batch.token_budget != 0:
            r = queue[i]
            n = batch.tokens_within_budget(r)
            while not batch.add(r, n):
                victims = [v for v in young if v.request_id not in batch.evicted]
                victim = victims[-1] if victims else queue.pop()
                batch.evict(victim)
                if victim is r:
                    return
            i += 1

    def _admit(self, view: SchedulerView, batch: Batch, r: RequestView, n: int,
               young: list[RequestView]) -> bool:
        """Admit waiting `r`, evicting longer young residents not yet served if that makes room."""
        if batch.add(r, n):
            return True
        key = self._key(r)
        longer = [v for v in young if v.request_id not in batch.evicted
                  and v.request_id not in batch.num_tokens and self._key(v) > key]
        freeable = sum(view.blocks(view.kv_tokens(v)) for v in longer)
        if batch.need(r, n) > batch.num_free_blocks + freeable:
            return False
        for v in reversed(longer):                       # longest predicted remaining first
            batch.evict(v)
            if batch.add(r, n):
                return True
        return False
