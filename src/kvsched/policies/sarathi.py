"""Sarathi-Serve's scheduler (`sarathi`), as a kvsched policy.

Source: Agrawal et al., "Taming Throughput-Latency Tradeoff in LLM Inference with Sarathi-Serve"
(OSDI 2024) and its scheduler as in Sarathi-Serve / Vidur's ``SarathiReplicaScheduler``;
ALGORITHMS.md §0. Per iteration, token budget ``chunk_size``:

1. Every running request past its prefill gets one decode token, in admission order. If a block
   cannot be appended, the latest-arrived running request is preempted (recompute) and the
   allocation retried; if the victim is the request itself it is simply preempted.
2. Ongoing partial prefills (admitted requests whose prompt is not yet computed) get
   ``min(remaining prompt, budget left)``, oldest first.
3. New requests FCFS while the blocks of their WHOLE prompt fit (reserved at admission, keeping a
   ``watermark`` fraction of blocks free), ``max_num_seqs`` seats and budget remain; stop at the
   first that does not fit.

Reconstructed / deviations: preempted requests return to the FRONT of the waiting queue (as vLLM
does; Vidur keeps a separate preempted list served first, which is the same order). The
whole-prompt reservation is kept by the policy (reserved-but-uncomputed blocks are subtracted from
the free blocks it sees); the engine only counts computed KV, so reported KV utilisation does not
include reservations. Admission is skipped in an iteration that preempted (as vLLM V1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..state import Decision, RequestView, SchedulerView, Status
from .base import Policy, PolicyTags
from .registry import register


@register
@dataclass(kw_only=True)
class SarathiPolicy(Policy):
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
        self._front: list[RequestView] = []       # preempted, served first

    def _reserved_blocks(self, view: SchedulerView, request: RequestView) -> int:
        """Blocks reserved for the uncomputed rest of a partial prefill's prompt."""
        if request.is_decode:
            return 0
        return view.extra_blocks(request, request.num_uncomputed_tokens)

    def schedule(self, view: SchedulerView) -> Decision:
        resident = {r.request_id for r in view.running}
        self._running = [r for r in self._running if r.request_id in resident]
        known = {r.request_id for r in self._running}
        self._running += [r for r in view.running if r.request_id not in known]
        self._front = [r for r in self._front if r.status is Status.WAITING]
        free = view.num_free_blocks - sum(self._reserved_blocks(view, r) for r in self._running)
        tokens: dict[int, int] = {}
        evicted: list[int] = []
        budget, free = self._decodes(view, tokens, evicted, self.chunk_size, free)
        budget = self._partial_prefills(tokens, budget)
        if not evicted:
            self._admit(view, tokens, budget, free)
        return Decision(num_tokens=tokens, evict=tuple(evicted))

    def _decodes(self, view, tokens, evicted, budget, free):
        granted: dict[int, int] = {}     # blocks handed to requests scheduled so far
        for request in list(self._running):
            if budget <= 0:
                break
            if not request.is_decode or request.request_id in evicted:
                continue
            need = view.extra_blocks(request, 1)
            while need > free:
                victim = max(self._running, key=lambda r: (r.arrival_time, r.request_id))
                free += self._preempt(view, victim, evicted)
                free += granted.pop(victim.request_id, 0)
                budget += tokens.pop(victim.request_id, 0)
                if victim is request:
                    break
            if request.request_id in evicted:
                continue
            tokens[request.request_id] = 1
            granted[request.request_id] = need
            free -= need
            budget -= 1
        return budget, free

    def _preempt(self, view, victim, evicted) -> int:
        """Evict `victim`; return the blocks it held or had reserved."""
        self._running.remove(victim)
        evicted.append(victim.request_id)
        self._front.insert(0, victim)
        return view.blocks(view.kv_tokens(victim)) + self._reserved_blocks(view, victim)

    def _partial_prefills(self, tokens, budget):
        for request in self._running:
            if budget <= 0:
                break
            if not request.is_decode and request.request_id not in tokens:
                n = min(request.num_uncomputed_tokens, budget)
                tokens[request.request_id] = n
                budget -= n
        return budget

    def _admit(self, view, tokens, budget, free):
        reserve = int(self.watermark * view.kv_capacity_blocks)
        front_ids = {r.request_id for r in self._front}
        queue = self._front + [r for r in view.waiting if r.request_id not in front_ids]
        for request in queue:
            if budget <= 0 or len(self._running) >= self.max_num_seqs:
                break
            need = view.extra_blocks(request, request.num_tokens)   # the whole prompt, reserved
            if need > free - reserve:
                break
            n = min(request.num_tokens, budget)
            tokens[request.request_id] = n
            free -= need
            budget -= n
            self._running.append(request)
            if request.request_id in front_ids:
                self._front.remove(request)
