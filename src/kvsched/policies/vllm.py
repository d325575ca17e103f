"""vLLM V1's scheduler (`vllm`), as a kvsched policy.

Source: vLLM's V1 ``Scheduler.schedule()`` (vllm/v1/core/sched/scheduler.py, 2025–2026), the
FCFS policy; ALGORITHMS.md §0. Per iteration, with a token budget ``max_num_batched_tokens``
(capped by the engine's own budget when it has one):

1. RUNNING requests first, in admission order: each gets ``min(uncomputed tokens, budget left)``
   (a decode is 1). If its blocks cannot be allocated, the most recently admitted running request
   is preempted (LIFO), its KV dropped, and put at the FRONT of the waiting queue; retry. If the
   victim is the request itself, the running pass stops.
2. WAITING requests next, only if nothing was preempted this iteration: FCFS from the head,
   allocating blocks for the tokens scheduled now (a chunk of the prompt); stop at the first that
   does not fit (head-of-line blocking), or at ``max_num_seqs`` running, or when the budget is spent.

``full_prompt_must_fit`` (on by default, as vLLM 0.32's ``scheduler_reserve_full_isl=True``):
admit a waiting request only if blocks for its whole remaining input (prompt + generated tokens)
fit, though only the chunk scheduled now is allocated; ``False`` is the older chunk-only rule.
ALGORITHMS.md §0 lists it as off upstream: that was true before vLLM added the option; the real
engine (tests/integrations/vllm) confirms the new default.

Options (off by default, as upstream): ``watermark`` (fraction of blocks that admissions must leave
free while some request is running — vLLM V0's ``BlockSpaceManager`` rule, which with an
empty cache would instead drop a prompt that fits only by dipping into it; V1 had none until 0.32, whose own
``watermark`` option also defaults to 0), ``continue_on_block`` (skip a waiting request whose blocks cannot
be allocated instead of stopping — the waiting-phase part of the unmerged head-of-line fix for
vllm-project/vllm#31731, PRs #33499/#35852; a prompt over the budget with chunked prefill off
still stops admission, as in those PRs), ``enable_chunked_prefill=False`` (a prompt is admitted
whole or not at all: admission stops at one longer than the budget left; a prompt longer than
``max_num_batched_tokens`` is never admitted — upstream forbids that configuration — and the
engine raises ``StalledError``).

V0 / Vidur options (off by default). Vidur's ``VLLMReplicaScheduler`` (microsoft/vidur,
vidur/scheduler/replica_scheduler/vllm_replica_scheduler.py) follows vLLM V0's scheduler as it was
around vLLM 0.2 (vllm/core/scheduler.py ``_schedule``; later V0 releases, ``_schedule_default``,
keep prefill-first but sum the tokens). All four, with ``enable_chunked_prefill=False``,
reproduce Vidur's rules:

- ``prefill_first``: the WAITING pass runs first; if it admits anything, the iteration holds only
  those prefills and running requests wait; running requests are served only in iterations that
  admit nothing (V0: "don't schedule decodes if prefills are scheduled"). With chunked prefill on
  (V0 itself turns decode-first then), a partial prefill also continues only in such iterations.
- ``padded_prefill_budget`` (needs ``enable_chunked_prefill=False``): the prompts admitted in one
  iteration count as ``num_prompts × longest prompt`` against the budget left (vLLM 0.2 padded
  prompts to the longest; Vidur keeps that rule), instead of the sum of their tokens. vLLM 0.2's
  extra ``max_paddings`` cap is not modelled (Vidur has none).
- ``preempt_victim="last_arrived"``: running requests are served oldest arrival first, and the
  victim is the latest-arrived running request not yet served in this iteration (the request
  itself when none is left) — Vidur sorts its running list by arrival, as vLLM 0.2's FCFS
  ``sort_by_priority`` did.
  The default ``"last_admitted"`` is V1's LIFO over admission order. Both put the victim at the
  front of the waiting queue, latest victim first.
- ``decode_needs_free_block``: a running request is served only while at least one block is
  free, even when its tokens fit in the blocks it holds (V0's ``can_append_slot(s)`` asks for a
  free block per running sequence; Vidur's ``_can_allocate_request`` likewise); otherwise the
  usual preemption follows.

Deviations: only the FCFS policy (not ``priority``); prefix caching, speculative decoding, async
scheduling, LoRA, encoder inputs, structured output, ``long_prefill_token_threshold`` and
``max_model_len`` are not modelled (requests that can never fit are rejected by the engine on
arrival); blocks are the engine's (``block_size`` of the simulator), the policy keeps no block
table of its own. The engine's waiting view is in arrival order, so the policy keeps its own list
of preempted requests, served before the rest in the order upstream's ``prepend_request`` gives.
V0 / Vidur: swap preemption is not modelled (recompute only, as Vidur); Vidur applies the watermark
to a prompt entering an empty cache too, so it never admits one within the watermark of the whole
capacity (here the watermark applies only while a request is running, as above).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..state import Batch, Decision, RequestView, SchedulerView
from .base import Policy, PolicyTags
from ._waiting_queue import FrontQueue, admission_reserve, fcfs_key
from .registry import register


@register
@dataclass(kw_only=True)
class VLLMPolicy(Policy):
    """vLLM V1's scheduler (vllm/v1/core/sched/scheduler.py), with V0/Vidur options.

    The rule, its sources and every deviation are in this module's docstring.
    """

    name: ClassVar[str] = "vllm"
    tags: ClassVar[PolicyTags] = PolicyTags(preemptive=True, event_stable=True)
    description: ClassVar[str] = "vLLM V1: running first, LIFO preemption, FCFS admission with head-of-line blocking"

    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    watermark: float = 0.0
    full_prompt_must_fit: bool = True
    continue_on_block: bool = False
    enable_chunked_prefill: bool = True
    prefill_first: bool = False
    padded_prefill_budget: bool = False
    preempt_victim: str = "last_admitted"
    decode_needs_free_block: bool = False

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens < 1 or self.max_num_seqs < 1:
            raise ValueError("max_num_batched_tokens and max_num_seqs must be >= 1")
        if not 0.0 <= self.watermark < 1.0:
            raise ValueError(f"watermark must be in [0, 1), got {self.watermark}")
        if self.preempt_victim not in ("last_admitted", "last_arrived"):
            raise ValueError(f"preempt_victim must be 'last_admitted' or 'last_arrived', got {self.preempt_victim!r}")
        if self.padded_prefill_budget and self.enable_chunked_prefill:
            raise ValueError("padded_prefill_budget needs enable_chunked_prefill=False")

    def reset(self, *, seed: int | None = None) -> None:
        self._running: list[RequestView] = []      # admission order
        self._queue = FrontQueue()

    def schedule(self, view: SchedulerView) -> Decision:
        batch = view.new_batch(self.max_num_batched_tokens)     # capped by the engine's budget
        resident = {r.request_id for r in view.running}
        self._running = [r for r in self._running if r.request_id in resident]
        known = {r.request_id for r in self._running}
        self._running += [r for r in view.running if r.request_id not in known]
        if self.preempt_victim == "last_arrived":
            self._running.sort(key=fcfs_key)
        if self.prefill_first:
            self._schedule_waiting(view, batch)
            if batch.num_tokens:
                return batch.decision()
        self._schedule_running(batch)
        if not batch.evicted and not self.prefill_first:
            self._schedule_waiting(view, batch)
        return batch.decision()

    def stable_reserve_blocks(self) -> int:
        """Hook of the engine's fast path (`kvsched.engine.simulator`, ``event_stable``). With
        ``decode_needs_free_block`` a decode also needs one free block, so the pure decode step
        stays this policy's answer while its KV leaves a block free (a sufficient condition: each
        request then finds ``max(its new blocks, 1)`` free, whatever the order); else 0."""
        return int(self.decode_needs_free_block)

    def _schedule_running(self, batch: Batch) -> None:
        """Running requests in order; a request whose blocks cannot be allocated preempts the
        last one in the running list (never one already in the batch: those come earlier)."""
        running = self._running
        floor = int(self.decode_needs_free_block)      # blocks a request must find free
        i = 0
        while i < len(running) and (budget := batch.token_budget) > 0:
            request = running[i]
            n = min(request.num_uncomputed_tokens, budget)
            while not ((not floor or batch.num_free_blocks >= floor) and batch.add(request, n)):
                victim = running.pop()
                batch.evict(victim)
                self._queue.push(victim)
                if victim is request:
                    return
            i += 1

    def _schedule_waiting(self, view: SchedulerView, batch: Batch) -> None:
        queue = self._queue.order(view)
        prompts: list[int] = []                # tokens admitted in this pass (padded budget)
        pass_budget = batch.token_budget
        for request in queue:
            budget = batch.token_budget
            if budget <= 0 or len(self._running) >= self.max_num_seqs:
                break
            remaining = request.num_uncomputed_tokens   # all known tokens but its prefix-cache hit
            if self.padded_prefill_budget:
                if (len(prompts) + 1) * max([remaining, *prompts]) > pass_budget:
                    break
            elif not self.enable_chunked_prefill and remaining > budget:
                break                          # upstream stops here, with or without the HOL fix
            n = min(remaining, budget)
            must_fit = remaining if self.full_prompt_must_fit else n
            reserve = admission_reserve(self.watermark, view, bool(self._running))
            # The whole input must fit (less the watermark); only the chunk of n is allocated.
            if batch.need(request, must_fit) > batch.num_free_blocks - reserve or not batch.add(request, n):
                if self.continue_on_block:
                    continue
                break
            prompts.append(n)
            self._running.append(request)
            self._queue.admitted(request)
