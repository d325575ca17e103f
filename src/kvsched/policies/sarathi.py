"""Sarathi-Serve's scheduler (`sarathi`), as a kvsched policy.

Source: Agrawal et al., "Taming Throughput-Latency Tradeoff in LLM Inference with Sarathi-Serve"
(OSDI 2024) and ``SarathiScheduler._schedule`` in microsoft/sarathi-serve
(sarathi/core/scheduler/sarathi_scheduler.py, base_scheduler.py, block_space_manager/);
ALGORITHMS.md §0. Per iteration, token budget ``chunk_size`` (capped by the engine's
``max_num_batched_tokens`` when it has one):

1. The running requests are sorted by arrival (upstream's FCFS priority). Every one past its
   prefill gets one decode token, oldest first. If its block cannot be allocated, the
   latest-arrived running request not yet processed is preempted (recompute; its blocks, and the
   reservation of a partial prefill, are freed) and the allocation retried; when none is left
   the request preempts itself. Preempted requests go to the FRONT of the waiting queue
   (``BaseScheduler._preempt`` inserts at index 0).
2. Ongoing partial prefills (admitted requests whose prompt is not yet computed) get
   ``min(remaining prompt, budget left)``, oldest first.
3. New requests FCFS while the blocks of their WHOLE prompt (prompt plus generated tokens for a
   preempted request) fit, keeping ``int(watermark * capacity blocks)`` free, while fewer than
   ``max_num_seqs`` requests are running and budget remains; stop at the first that does not.

Deviations:
- Upstream checks ``can_append_slot`` (at least one free block) before every decode, even one
  that needs no new block; we check the blocks this decode needs (identical with block size 1).
- Decodes count against ``chunk_size`` and stop when it is spent; upstream schedules every
  decode (only different when more than ``chunk_size`` requests decode at once, which the
  defaults 128 < 512 rule out).
- Admission is skipped in an iteration that preempted. Upstream goes on to the waiting queue,
  whose head is then the request just preempted: it normally does not fit and stops admission,
  and the engine does not allow evicting and re-admitting one request in the same decision.
- The whole-prompt reservation is kept by the policy: its `Batch` allocates the blocks computed
  now, and the blocks reserved for the rest of each partial prefill are kept free on top of it
  (``reserve_blocks``); the engine only counts computed KV, so reported KV utilisation does not
  include reservations.
- The watermark applies only while some request is running: with an empty cache it protects
  nothing, and upstream would never admit a prompt that fits only by dipping into it.
- Not modelled: the dynamic chunk-size schedule, pipeline-parallel micro-batches,
  ``max_model_len`` (requests that never fit are rejected by the engine on arrival).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..state import Decision, RequestView, SchedulerView
from .base import Policy, PolicyTags
from ._waiting_queue import FrontQueue, admission_reserve, fcfs_key
from .registry import register


@register
@dataclass(kw_only=True)
class SarathiPolicy(Policy):
    """Sarathi-Serve's scheduler (Agrawal et al., OSDI 2024).

    The rule, its sources and every deviation are in this module's docstring.
    """

    name: ClassVar[str] = "sarathi"
    tags: ClassVar[PolicyTags] = PolicyTags(preemptive=True, event_stable=True)
    description: ClassVar[str] = "Sarathi-Serve: decode-first, chunked prefill, whole-prompt reservation"

    chunk_size: int = 512
    max_num_seqs: int = 128
    watermark: float = 0.01

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.max_num_seqs < 1:
            raise ValueError("chunk_size and max_num_seqs must be >= 1")
        if not 0.0 <= self.watermark < 1.0:
            raise ValueError(f"watermark must be in [0, 1), got {self.watermark}")

    def reset(self, *, seed: int | None = None) -> None:
        self._running: list[RequestView] = []     # admission order
        self._queue = FrontQueue()

    def _reserved_blocks(self, view: SchedulerView, request: RequestView) -> int:
        """Blocks reserved for the uncomputed rest of a partial prefill's prompt."""
        if request.is_decode:
            return 0
        return view.extra_blocks(request, request.num_uncomputed_tokens)

    def schedule(self, view: SchedulerView) -> Decision:
        # Sarathi-Serve re-sorts its running list by FCFS priority (arrival) every iteration.
        self._running = sorted(view.running, key=fcfs_key)
        decodes, partials, reserved = [], [], 0
        for request in self._running:          # one pass: decodes, partial prefills and their reserve
            if request.is_decode:
                decodes.append(request)
            else:
                partials.append(request)
                reserved += self._reserved_blocks(view, request)
        # The batch allocates what is computed now; `reserved` counts the blocks reserved on top
        # of it for the rest of the partial prefills' prompts, so the policy's free blocks are
        # batch.num_free_blocks - reserved.
        batch = view.new_batch(self.chunk_size)        # capped by the engine's budget
        reserved = self._decodes(view, batch, decodes, reserved)
        reserved = self._partial_prefills(batch, partials, reserved)
        if not batch.evicted:
            self._admit(view, batch, reserved)
        return batch.decision()

    def _decodes(self, view, batch, decodes, reserved) -> int:
        """One decode token per running request past its prefill, oldest arrival first; returns
        the blocks still reserved.

        The victim of a failed allocation is the latest-arrived running request: always one not
        processed yet (they come later in arrival order) or the request itself.
        """
        evicted = batch.evicted
        for request in decodes:
            if batch.token_budget <= 0:
                break
            rid = request.request_id
            if evicted and rid in evicted:
                continue
            while not batch.add(request, 1, reserve_blocks=reserved):   # budget > 0: no blocks
                reserved -= self._preempt(view, batch, self._running[-1])
                if rid in evicted:
                    return reserved
        return reserved

    def _preempt(self, view, batch, victim) -> int:
        """Evict `victim` (the batch frees the blocks it holds); return the blocks it had reserved."""
        self._running.remove(victim)
        batch.evict(victim)
        self._queue.push(victim)
        return self._reserved_blocks(view, victim)

    def _partial_prefills(self, batch, partials, reserved) -> int:
        """The next chunk of each partial prefill, oldest first, out of its reservation; returns
        the blocks still reserved."""
        evicted = batch.evicted
        for request in partials:
            if batch.token_budget <= 0:
                break
            if request.request_id not in evicted:
                n = min(request.num_uncomputed_tokens, batch.token_budget)
                need = batch.need(request, n)
                batch.add(request, n)          # fits: its blocks are part of `reserved`
                reserved -= need
        return reserved

    def _admit(self, view, batch, reserved) -> None:
        for request in self._queue.order(view):
            if batch.token_budget <= 0 or len(self._running) >= self.max_num_seqs:
                break
            remaining = request.num_uncomputed_tokens          # all known tokens but its cache hit
            whole = batch.need(request, remaining)             # the whole prompt, reserved
            keep = reserved + admission_reserve(self.watermark, view, bool(self._running))
            if whole > batch.num_free_blocks - keep:
                break
            n = min(remaining, batch.token_budget)
            need = batch.need(request, n)
            batch.add(request, n)              # fits: need <= whole <= free - keep
            reserved += whole - need
            self._running.append(request)
            self._queue.admitted(request)
