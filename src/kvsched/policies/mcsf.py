"""MC-SF and the benchmark policies of its paper (ALGORITHMS.md §1).

Paper: Jaillet, Jiang, Mellou, Molinaro, Podimata, Zhou, "Online Scheduling for LLM Inference with
KV Cache Constraints", arXiv 2502.07115 (v4/v5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..state import Decision, RequestView, SchedulerView
from ._future_memory import (VICTIM_ORDERS, FutureMemoryPolicy, budget_tokens, check_choice, require,
                             serve_residents, victim_key)
from .base import Policy, PolicyTags
from .registry import register


def point_estimate(view: SchedulerView, request: RequestView, policy: str) -> int:
    """õ = ⌈predicted_output_tokens⌉ (at least 1)."""
    value = require(request.predicted_output_tokens, request, policy, "predicted_output_tokens")
    return max(1, math.ceil(value))


@register
@dataclass(kw_only=True)
class MCSF(FutureMemoryPolicy):
    """Memory-Constrained Shortest-First (MC-SF), Jaillet et al., arXiv 2502.07115, Algorithm MC-SF.

    At each round: keep every started request; sort waiting requests by predicted output length õ
    (``predicted_output_tokens``); scan them and add candidate i to the batch U if, for every future
    round up to its predicted completion, the predicted KV of the started requests plus U ∪ {i}
    stays within M; stop at the first candidate that fails. Only the predicted completion times are
    checked (between them a fixed set's memory only rises); see
    `kvsched.policies._future_memory` for the incremental check and its cost: per iteration
    O(n + (a + d)·n) numpy element operations plus O((a + 1)·log n) Python for n resident, a
    admitted and d re-estimated requests, independent of the number of
    waiting requests. Under EMITTED + UnitTime + block size 1 this is exactly the paper's rule
    Σ_started (s_j + t' − p_j)·1[t' − p_j ≤ õ_j] + Σ_{k∈U∪{i}} (s_k + t' − t)·1[t' − t ≤ õ_k] ≤ M;
    (the paper's round p + 1 is the engine's iteration p: a request started there holds s + 1),
    other conventions and block sizes use the engine's own KV accounting (view helpers).

    Reconstructed (parameters):
    - ties in the order: earlier arrival, then smaller prompt, then request id;
    - ``rule``: "stop" (stop at the first failure, published) or "skip" (skip and continue);
    - ``protection``: fraction of M kept in reserve by the check (paper variant: 0.1);
    - robustness: a request that outlives its prediction is predicted to need
      max(õ, generated + 1) tokens; if the resident requests still overflow M (underestimates),
      victims in ``evict_victim`` order ("least-progress" default, "most-progress", "newest",
      "largest") are evicted until the rest fit —
      they recompute (engine counts evictions) and return to the queue; nothing is admitted in that
      iteration. Non-preemptive otherwise: resident requests always continue.
    - liveness: with nothing resident the queue head starts alone even if its predicted peak
      exceeds the (protected) capacity.
    - engine token budget N (``max_num_batched_tokens``, not in the paper, whose model computes a
      whole prompt in one round): residents first in admission order, then admissions; ``chunking``
      "budget-left" (default: a candidate starts with what the budget left holds) or "over-budget"
      (only a prompt or recomputation longer than N starts with a chunk, others wait for room);
      the check shifts a chunked request's predicted timeline later by its extra prefill
      iterations (upper bound during the prefill, exact after; `kvsched.policies._future_memory`).
      Without a budget: the paper's rule.
    """

    name: ClassVar[str] = "mcsf"
    tags: ClassVar[PolicyTags] = PolicyTags(uses_predictions=True, preemptive=True)
    description: ClassVar[str] = "MC-SF: shortest predicted output first with a future-memory check"

    def estimate(self, view: SchedulerView, request: RequestView) -> int:
        return point_estimate(view, request, self.name)


@register
@dataclass(kw_only=True)
class MCBenchmark(MCSF):
    """The memory-constrained benchmark of Jaillet et al. (arXiv 2502.07115): MC-SF's future-memory
    check with waiting requests in FCFS (arrival) order instead of shortest-first. Same parameters
    and reconstructions as `mcsf` (an evicted request keeps its arrival position)."""

    name: ClassVar[str] = "mc-benchmark"
    description: ClassVar[str] = "MC-SF's future-memory check in FCFS order"

    def priority(self, view: SchedulerView, request: RequestView) -> tuple:
        return (request.arrival_time,)


# --------------------------------------------------------------------------- α-protection family

CLEAR_MODES = ("all", "until-fit")


@dataclass(kw_only=True)
class _ProtectionBase(Policy):
    """FCFS admission while the KV after the iteration stays ≤ (1 − alpha)·M; overflow clearing."""

    alpha: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {self.alpha}")

    def schedule(self, view: SchedulerView) -> Decision:
        used = {r.request_id: view.blocks(view.kv_tokens_after(r, r.num_uncomputed_tokens))
                for r in view.running}
        evict = self.clear(view, used) if sum(used.values()) > view.kv_capacity_blocks else ()
        tokens = serve_residents(view, exclude=evict)
        budget = view.max_num_batched_tokens
        budget = None if budget is None else budget - sum(tokens.values())
        if not evict:
            self._admit(view, tokens, sum(used.values()), budget)
        return Decision(num_tokens=tokens, evict=tuple(evict))

    def _admit(self, view: SchedulerView, tokens: dict[int, int], load: int, budget: int | None) -> None:
        limit = math.floor((1.0 - self.alpha) * view.kv_capacity_blocks)
        for r in view.waiting:
            n = budget_tokens(r.num_uncomputed_tokens, budget, view.max_num_batched_tokens)
            need = view.blocks(view.kv_tokens_after(r, n))
            if not n or load + need > (limit if tokens else view.kv_capacity_blocks):
                break
            tokens[r.request_id] = n
            load += need
            budget = None if budget is None else budget - n

    def clear(self, view: SchedulerView, used: dict[int, int]) -> tuple[int, ...]:
        raise NotImplementedError


@register
@dataclass(kw_only=True)
class AlphaProtection(_ProtectionBase):
    """α-protection greedy, a benchmark of Jaillet et al. (arXiv 2502.07115).

    FCFS: admit the head of the waiting queue while the KV after this iteration (resident requests
    plus those admitted now, in the engine's convention and blocks) stays ≤ (1 − alpha)·M; stop at
    the first that does not fit. Resident requests always continue. If the resident requests alone
    would exceed M in this iteration (memory overflow), running requests are cleared (evicted; they
    recompute later) and nothing is admitted in that iteration.

    Reconstructed (parameters): ``clear`` — which running requests an overflow clears: "all" (every
    resident request, default) or "until-fit" (victims in ``evict_victim`` order until the rest fit);
    the (1 − α)·M test is on the KV after the iteration; liveness: with nothing resident the head is
    admitted if it fits M. Paper's values: α = 0.21 (high demand), 0.24 (low demand).

    Under ``eviction="restart"`` the default ``clear_mode="all"`` can livelock: the cleared requests lose
    their tokens, FCFS readmits the same set, and it overflows at the same round again (no request
    ever finishes; the R2 sweep at λ = 50, and tests/policies/test_mcsf.py, show it). ``until-fit``
    keeps the oldest running and makes progress.
    """

    name: ClassVar[str] = "alpha-protection"
    tags: ClassVar[PolicyTags] = PolicyTags(preemptive=True)
    description: ClassVar[str] = "FCFS admission below (1-alpha)M; clear running requests on overflow"

    clear_mode: str = "all"
    evict_victim: str = "newest"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("clear_mode", self.clear_mode, CLEAR_MODES)
        check_choice("evict_victim", self.evict_victim, VICTIM_ORDERS)

    def clear(self, view: SchedulerView, used: dict[int, int]) -> tuple[int, ...]:
        if self.clear_mode == "all":
            return tuple(used)
        order = sorted(view.running, key=victim_key(view, self.evict_victim))
        return clear_in_steps(order, used, view.kv_capacity_blocks, 1)


@register
@dataclass(kw_only=True)
class AlphaBetaClearing(_ProtectionBase):
    """α-β clearing, a benchmark of Jaillet et al. (arXiv 2502.07115).

    Admission as `alpha-protection` (FCFS while KV ≤ (1 − alpha)·M). On overflow, a fraction beta of
    the running requests (⌈beta·n⌉) is cleared; if the rest still overflows, another ⌈beta·n⌉ is
    cleared, and so on (the policy never lets memory overflow).

    Reconstructed (parameters): ``evict_victim`` — which requests form the cleared fraction:
    "random" (uniform, seeded by the run seed; default), or "least-progress" / "newest" / "largest";
    repetition until the rest fits. Paper's grid: α ∈ {0.1, …, 0.3}, β ∈ {0.1, 0.2}.
    """

    name: ClassVar[str] = "alpha-beta-clearing"
    tags: ClassVar[PolicyTags] = PolicyTags(preemptive=True)
    description: ClassVar[str] = "FCFS admission below (1-alpha)M; clear a fraction beta on overflow"

    beta: float = 0.1
    evict_victim: str = "random"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {self.beta}")
        check_choice("evict_victim", self.evict_victim, ("random", *VICTIM_ORDERS))

    def reset(self, *, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)

    def clear(self, view: SchedulerView, used: dict[int, int]) -> tuple[int, ...]:
        running = list(view.running)
        if self.evict_victim == "random":
            order = [running[i] for i in self._rng.permutation(len(running))]
        else:
            order = sorted(running, key=victim_key(view, self.evict_victim))
        step = max(1, math.ceil(self.beta * len(running)))
        return clear_in_steps(order, used, view.kv_capacity_blocks, step)


def clear_in_steps(order, used: dict[int, int], capacity_blocks: int, step: int) -> tuple[int, ...]:
    """Evict `step` requests at a time, in `order`, until the blocks `used` by the rest fit."""
    load, evict = sum(used.values()), []
    for start in range(0, len(order), step):
        for r in order[start:start + step]:
            evict.append(r.request_id)
            load -= used[r.request_id]
        if load <= capacity_blocks:
            break
    return tuple(evict)
