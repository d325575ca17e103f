"""Smallest Volume First and 1-bit SVF (ALGORITHMS.md §6).

Paper: Kong, Qi, Ye, Zhou, "Geometry-Aware Online Scheduling for LLM Serving: From Theoretical
Bound to System Practice", arXiv 2606.22327 (v1, v2). Read: the abstract and third-party summaries
(the full text and the authors' repository, Aurora-Kl/Geometry-Aware-Online-Scheduling, were not
available to us).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..state import RequestView, SchedulerView
from ._future_memory import FutureMemoryPolicy, check_choice, require
from .base import PolicyTags
from .mcsf import point_estimate
from .registry import register

VOLUMES = ("exact", "rectangle")


def kv_volume(num_kv_tokens: int, num_output_tokens: int, kind: str = "exact") -> int:
    """Projected KV volume (token-rounds) of a request holding `num_kv_tokens` now that will emit
    `num_output_tokens` more tokens, one per round: "exact" Σ_{j=1..o} (s + j) = o·s + o(o+1)/2 (the
    area under its KV profile in the papers' s + j model, a trapezoid); "rectangle" o·(s + o) (its
    peak KV times its duration, the bounding box)."""
    s, o = num_kv_tokens, num_output_tokens
    if kind == "rectangle":
        return o * (s + o)
    return o * s + o * (o + 1) // 2


@register
@dataclass(kw_only=True)
class SVF(FutureMemoryPolicy):
    """Smallest Volume First (SVF), Kong, Qi, Ye, Zhou (arXiv 2606.22327).

    Certain (abstract): requests are ordered by their projected 2-D ("spatio-temporal") KV volume,
    memory × time, instead of their length (Shortest Job First); competitive ratio 48 → 5 with
    known output lengths (v1), towards 3 at high concurrency (v2); integrated into vLLM as a
    plug-in ordering layer.

    Reconstructed (parameters): ``volume`` — the formula: "exact" o·s + o(o+1)/2 (default: the
    area of the s + j profile, ≈ o·(s + o/2) as ALGORITHMS.md states), or "rectangle" o·(s + o);
    for a request to recompute after an eviction, s is its prompt plus the tokens it generated and
    o what remains of its prediction. Admission and memory safety are MC-SF's (the same group's
    earlier algorithm, which SVF re-orders): waiting requests in volume order (ties: earlier
    arrival, smaller prompt, id) admitted while the future-memory check passes, ``rule`` "stop" at
    the first failure (default) or "skip"; ``protection``, ``evict_victim``, ``chunking`` as `mcsf`.
    o is ``predicted_output_tokens`` (the paper's "known output lengths": ``--predictor exact``).
    """

    name: ClassVar[str] = "svf"
    tags: ClassVar[PolicyTags] = PolicyTags(uses_predictions=True, preemptive=True)
    description: ClassVar[str] = "Smallest projected KV volume first, MC-SF's check (Kong et al., arXiv 2606.22327)"

    volume: str = "exact"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("volume", self.volume, VOLUMES)

    def estimate(self, view: SchedulerView, request: RequestView) -> int:
        return point_estimate(view, request, self.name)

    def priority(self, view: SchedulerView, request: RequestView) -> tuple:
        remaining = self._estimate(view, request) - request.num_output_tokens
        volume = kv_volume(request.num_tokens, remaining, self.volume)
        return (volume, request.arrival_time, request.num_prompt_tokens, request.request_id)


@register
@dataclass(kw_only=True)
class OneBitSVF(FutureMemoryPolicy):
    """1-bit SVF, Kong, Qi, Ye, Zhou (arXiv 2606.22327): SVF with one bit of length information.

    Certain (abstract): each request carries a single bit about its output length (long or short)
    and 1-bit SVF reaches throughput and latency competitive with SVF.

    Reconstructed (parameters): the bit is ``predicted_output_tokens > threshold_tokens`` (a length
    classifier; with ``--predictor exact`` the bit is exact). Each class gets a representative
    length, ``short_tokens`` (default: the threshold, an upper bound for short requests) and
    ``long_tokens`` (default: 4 × the threshold); the order is SVF's volume with that length (so
    within a class, smaller prompt first; a short request with a huge prompt can follow a long one
    with a small prompt; ties: earlier arrival, smaller prompt, id), and the
    future-memory check uses it as õ (MC-SF's robustness: a request that outlives it is predicted
    one more token at a time; overflow evicts in ``evict_victim`` order). Other parameters as `svf`.
    """

    name: ClassVar[str] = "svf-1bit"
    tags: ClassVar[PolicyTags] = PolicyTags(uses_predictions=True, preemptive=True)
    description: ClassVar[str] = "1-bit SVF: long/short bit, class lengths (Kong et al., arXiv 2606.22327)"

    threshold_tokens: int = 256
    short_tokens: int | None = None
    long_tokens: int | None = None
    volume: str = "exact"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("volume", self.volume, VOLUMES)
        for field in ("threshold_tokens", "short_tokens", "long_tokens"):
            value = getattr(self, field)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{field} must be an integer >= 1, got {value!r}")

    def is_long(self, request: RequestView) -> bool:
        predicted = require(request.predicted_output_tokens, request, self.name, "predicted_output_tokens")
        return predicted > self.threshold_tokens

    def estimate(self, view: SchedulerView, request: RequestView) -> int:
        if self.is_long(request):
            return self.long_tokens or 4 * self.threshold_tokens
        return self.short_tokens or self.threshold_tokens

    def priority(self, view: SchedulerView, request: RequestView) -> tuple:
        remaining = self._estimate(view, request) - request.num_output_tokens
        volume = kv_volume(request.num_tokens, remaining, self.volume)
        return (volume, request.arrival_time, request.num_prompt_tokens, request.request_id)

