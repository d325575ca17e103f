"""Test helpers: tiny hand-written workloads, a scripted policy, iteration digests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from kvsched import Decision, Simulator, UnitTime, Workload
from kvsched.policies.base import Policy, PolicyTags



def tiny(*rows: tuple[float, int, int]) -> Workload:
    """A workload from (arrival_time, num_prompt_tokens, true_output_tokens) rows, in id order."""
    arrival, prompt, output = zip(*rows) if rows else ((), (), ())
    return Workload.build(list(arrival), list(prompt), list(output), name="tiny")


def digest(result) -> list[tuple[float, dict[int, int], tuple[int, ...], int]]:
    """Each recorded iteration as (start_time, {id: tokens}, evicted ids, KV used tokens)."""
    return [(it.start_time, dict(it.num_tokens), tuple(it.evicted), it.kv_used_tokens)
            for it in result.iterations]


def run(policy, rows: Iterable[tuple[float, int, int]], capacity: int, *, cost=None, **sim_kwargs):
    """Run `policy` on a tiny workload with iteration records (UnitTime unless `cost`)."""
    sim = Simulator(cost or UnitTime(), capacity, record_iterations=True, **sim_kwargs)
    return sim.run(tiny(*rows), policy)


@dataclass(kw_only=True)
class Scripted(Policy):
    """Replays a fixed list of decisions (a mapping is shorthand for `Decision(num_tokens=...)`).

    Records the views it was shown as (now, waiting ids, running ids) in `seen`.
    """

    name: ClassVar[str] = "scripted"
    tags: ClassVar[PolicyTags] = PolicyTags(preemptive=True, pauses=True)
    steps: list = field(default_factory=list)

    def reset(self, *, seed: int | None = None) -> None:
        self._next = 0
        self.seen: list[tuple[float, tuple[int, ...], tuple[int, ...]]] = []

    def schedule(self, view) -> Decision:
        self.seen.append((view.now, tuple(r.request_id for r in view.waiting),
                          tuple(r.request_id for r in view.running)))
        if self._next >= len(self.steps):
            return Decision()
        step = self.steps[self._next]
        self._next += 1
        return Decision(num_tokens=dict(step)) if isinstance(step, Mapping) else step
