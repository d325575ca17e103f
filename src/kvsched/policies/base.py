"""The policy contract (DESIGN.md §3).

A policy is a keyword-only dataclass: its fields are its parameters, stored verbatim; anything it
learns during a run is created in `reset`. The engine calls `reset(seed=...)` once per run, then
`schedule(view)` at every iteration boundary; a server also calls `forget(request_ids)` as
requests leave it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass
from typing import ClassVar

from ..state import Decision, RequestView, SchedulerView


@dataclass(frozen=True, slots=True)
class PolicyTags:
    """What a policy is, for the engine, the conformance suite and users.

    - ``uses_predictions``: reads `predicted_*` fields of the requests.
    - ``clairvoyant``: reads true output lengths through `SchedulerView.oracle` (hindsight baselines).
    - ``event_stable``: between events (an arrival, a completion or prefill completion while
      requests wait, the iteration at which memory would overflow — less the policy's
      `Policy.stable_reserve_blocks` —, the policy's `Policy.stable_horizon`) its decision stays
      "every resident decode continues", so the engine may fast-forward; the exact promise is in
      `kvsched.engine.simulator`'s docstring.
    - ``preemptive``: may evict resident requests.
    - ``pauses``: may leave resident requests unscheduled (paused) while keeping their KV.
    """

    uses_predictions: bool = False
    clairvoyant: bool = False
    event_stable: bool = False
    preemptive: bool = False
    pauses: bool = False


class Policy(ABC):
    """Base class of every scheduling policy. Subclasses are `@dataclass(kw_only=True)`."""

    name: ClassVar[str] = ""
    tags: ClassVar[PolicyTags] = PolicyTags()
    description: ClassVar[str] = ""

    def reset(self, *, seed: int | None = None) -> None:
        """Forget everything from a previous run. Override to create run state."""

    def forget(self, request_ids: Collection[int]) -> None:
        """These requests left the engine (finished, or aborted while waiting or running) and
        will not be in a view again: drop what I keep for them. A server calls it as requests
        leave (`kvsched.integrations.vllm.KVSchedScheduler`: it serves without end, and a client
        may abort a queued request); the simulator does not (a run ends, and `reset` clears it).
        Override when the policy keeps per-request state across iterations."""

    def refusal(self, request: RequestView) -> str | None:
        """Why this policy cannot serve `request` at all (a field it needs is missing or out of
        range), or None. A server asks as each request arrives, after `reset`, and refuses it
        with this reason (`kvsched.integrations.vllm.KVSchedScheduler`), so that one request's
        inputs never stop the engine; in the simulator a policy's `schedule` raises `ConfigError`
        with it (WAIT's does). Read the request's own fields (ids, prompt, predictions, type):
        it is asked before the request is queued, so its cache hit is not known yet."""
        return None

    @abstractmethod
    def schedule(self, view: SchedulerView) -> Decision:
        """Decide this iteration: tokens per request, evictions (see `kvsched.state.Decision`)."""

    # Hooks of the engine's fast path, read only for `event_stable` policies (`kvsched.engine.simulator`).
    def stable_horizon(self, view: SchedulerView) -> int | None:
        """After a decision that scheduled every resident and evicted nothing (same view): ask me
        again after at most this many iterations (an integer >= 1), or None for no limit."""
        return None

    def stable_reserve_blocks(self) -> int:
        """KV blocks my pure decode step leaves free: it stays my answer only while the batch's
        KV after each iteration fits in the capacity less these blocks (read after `reset`)."""
        return 0

