"""The waiting order and admission limits shared by the production baselines (`vllm`, `sarathi`).

Both put a preempted request back at the FRONT of the waiting queue (the latest preempted first),
ahead of the arrivals in FCFS order, and both keep a watermark of free blocks against admissions
while some request is running. Run state: one `FrontQueue` per run, made in the policy's `reset`.
"""

from __future__ import annotations

from collections.abc import Iterator
from operator import attrgetter

from ..state import RequestView, SchedulerView, Status

#: Sort key of FCFS order: (arrival time, request id).
fcfs_key = attrgetter("arrival_time", "request_id")


class FrontQueue:
    """Preempted requests, served before the engine's FCFS waiting queue."""

    def __init__(self) -> None:
        self._front: list[RequestView] = []

    def push(self, request: RequestView) -> None:
        """A request just preempted: it goes first."""
        self._front.insert(0, request)

    def order(self, view: SchedulerView) -> Iterator[RequestView]:
        """The waiting requests in service order: preempted ones first, then by arrival. Lazy:
        a pass that stops early (head-of-line blocking) reads only the head of the queue."""
        self._front = [r for r in self._front if r.status is Status.WAITING]
        front = tuple(self._front)        # admissions during the pass edit self._front
        front_ids = {r.request_id for r in front}
        yield from front
        for r in view.waiting:
            if r.request_id not in front_ids:
                yield r

    def admitted(self, request: RequestView) -> None:
        if request in self._front:
            self._front.remove(request)


def admission_reserve(watermark: float, view: SchedulerView, any_running: bool) -> int:
    """Blocks admissions must leave free: the watermark, only while some request is running
    (with an empty cache, a prompt that fits only by dipping into it would otherwise never run)."""
    return int(watermark * view.kv_capacity_blocks) if any_running else 0
