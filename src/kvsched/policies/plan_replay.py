"""`plan-replay`: runs a precomputed schedule (`kvsched.bounds.plan.Plan`) through the engine.

Not a paper's algorithm: the replay half of the hindsight optimum (MC-SF paper's integer program,
ALGORITHMS.md §1). Each request is admitted with all its known tokens (its whole prompt) at the
boundary ``plan.start_time[id]`` and then decoded in every iteration until it finishes, so under
`Simulator(UnitTime(), M, kv_convention=EMITTED)` with block size 1 it holds s + j KV while
emitting token j, exactly the round model of `kvsched.bounds`; the engine's total latency then
equals the plan's objective, and the engine's own checks confirm the plan's feasibility.

When nothing runs and no planned start is due, the policy asks to be woken at the next planned
start (the engine would otherwise only wake at the next arrival). A planned start the engine never
reaches (a misaligned time, or before the request arrived) raises `ValueError`: the replay never
repairs a plan. Requests absent from the plan are never scheduled (the run then stalls).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..state import Decision, SchedulerView
from .base import Policy, PolicyTags
from .registry import register

_EPS = 1e-9


@register
@dataclass(kw_only=True)
class PlanReplayPolicy(Policy):
    """Replays a hindsight-optimal `Plan` (MC-SF paper's integer program) through the engine.

    See this module's docstring for what is replayed and how.
    """

    name: ClassVar[str] = "plan-replay"
    tags: ClassVar[PolicyTags] = PolicyTags()
    description: ClassVar[str] = "Replays a schedule from kvsched.bounds (start each request at its planned round)"

    plan: object = field(default=None)   # kvsched.bounds.plan.Plan (request id -> start time)

    def __post_init__(self) -> None:
        if self.plan is None or not hasattr(self.plan, "start_time"):
            raise ValueError("plan-replay needs plan=<kvsched.bounds.plan.Plan>")

    def reset(self, *, seed: int | None = None) -> None:
        self._pending = dict(self.plan.start_time)     # request id -> start, not yet admitted

    def schedule(self, view: SchedulerView) -> Decision:
        tokens = {r.request_id: 1 for r in view.running}
        for request in view.waiting:
            start = self._pending.get(request.request_id)
            if start is None or start > view.now + _EPS:
                continue
            if start < view.now - _EPS:
                raise ValueError(f"plan-replay: request {request.request_id} was planned at {start:g} "
                                 f"but the engine first offered it at {view.now:g}")
            tokens[request.request_id] = request.num_uncomputed_tokens
            del self._pending[request.request_id]
        if tokens:
            return Decision(num_tokens=tokens)
        later = [p for p in self._pending.values() if p > view.now + _EPS]
        return Decision(wake_time=min(later) if later else None)
