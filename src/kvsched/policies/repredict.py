"""Re-prediction of the remaining output length as tokens are generated, for any policy.

TRAIL (Shahout et al., ICLR 2025, arXiv 2410.01035) re-predicts each running request's remaining
length after every token; TIE (Zheng et al., arXiv 2604.00499) models the output length as log-t.
`Repredict` gives any prediction-reading policy both: it runs an inner policy on a view whose
requests' predictions are re-computed from a log-t distribution conditioned on the tokens each has
generated (`kvsched.workload.predictors.conditional_quantile`), from the median that the ``logt``
predictor writes as ``predicted_output_tokens``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from operator import attrgetter
from typing import ClassVar

from ..errors import ConfigError
from ..state import Decision, RequestView, SchedulerView
from ..workload.predictors import StudentTTable, conditional_quantile
from .base import Policy, PolicyTags
from .registry import make, parse_policy_spec, register


class _Repredicted(RequestView):
    """A request view whose predictions are the owner's re-predictions (read live); the rest is
    the wrapped view's (`_inner`), read through it: a served request's progress is vLLM's
    (`kvsched.integrations.vllm.view.ServedRequestView`, whose state holds none), and its
    prefix-cache hit (``cache_hit``) is the wrapped view's too."""

    __slots__ = ("_inner", "_owner")

    def __init__(self, request: RequestView, owner: Repredict) -> None:
        super().__init__(request._s)
        object.__setattr__(self, "_inner", request)
        object.__setattr__(self, "_owner", owner)

    def __repr__(self) -> str:
        return f"Repredicted({self._inner!r})"

    def __getattr__(self, name: str):
        # what RequestView lacks (an engine view's cache_hit) is the wrapped view's, if it has it
        if name in _Repredicted.__slots__:
            raise AttributeError(name)
        return getattr(self._inner, name)

    num_computed_tokens = property(attrgetter("_inner.num_computed_tokens"))
    num_output_tokens = property(attrgetter("_inner.num_output_tokens"), doc="Tokens generated so far.")
    num_tokens = property(attrgetter("_inner.num_tokens"))
    num_evictions = property(attrgetter("_inner.num_evictions"))
    num_uncomputed_tokens = property(attrgetter("_inner.num_uncomputed_tokens"))
    num_cached_tokens = property(attrgetter("_inner.num_cached_tokens"))
    is_decode = property(attrgetter("_inner.is_decode"))
    predicted_output_tokens = property(lambda self: self._owner.predict(self, self._owner.quantile))
    predicted_lo = property(lambda self: int(self._owner.predict(self, self._owner.lo_quantile)))
    predicted_hi = property(lambda self: int(self._owner.predict(self, self._owner.hi_quantile)))


@register
@dataclass(kw_only=True)
class Repredict(Policy):
    """Run ``policy`` with log-t re-predictions (TRAIL's re-prediction, TIE's distribution).

    For a request with median m (its ``predicted_output_tokens``, as written by ``--predictor
    logt:scale=S``) that has generated g tokens, the point prediction is the ``quantile`` of
    O | O > g where log O ~ log m + ``scale``·T_``nu``, at least g + 1; the interval is the
    ((1 − ``coverage``)/2, (1 + ``coverage``)/2) conditional quantiles. ``scale`` and ``nu`` should
    be the predictor's. The inner policy sees these in place of the stored columns, recomputed at
    every iteration from the generated tokens; everything else of the view is unchanged.

    Ours (parameters): the quantile rule (TRAIL's classifier predicts a remaining-length bin from
    the model's embeddings, which a simulator lacks; TIE's tail-inflated expectation is not in its
    abstract). Policies that cache estimates see the re-prediction when they re-read it: MC-SF-like
    policies when a request reaches its current estimate (then max(õ, g + 1) meets the new one),
    TRAIL at every iteration. The inner policy may not be clairvoyant. Tags: those of a preemptive,
    pausing policy that reads predictions (the inner policy's own behaviour is what it is).
    """

    name: ClassVar[str] = "repredict"
    tags: ClassVar[PolicyTags] = PolicyTags(uses_predictions=True, preemptive=True, pauses=True)
    description: ClassVar[str] = "Any policy with log-t re-predictions of remaining length (TRAIL; TIE, arXiv 2604.00499)"

    policy: str = "trail"
    scale: float = 0.5
    nu: float = 3.0
    quantile: float = 0.5
    coverage: float = 0.9

    def __post_init__(self) -> None:
        for field, value, low, high in (("scale", self.scale, 0.0, float("inf")), ("nu", self.nu, 0.0, float("inf")),
                                        ("quantile", self.quantile, 0.0, 1.0), ("coverage", self.coverage, 0.0, 1.0)):
            if not low < value < high:
                raise ValueError(f"{field} must be in ({low:g}, {high:g}), got {value!r}")
        name, params = parse_policy_spec(self.policy)
        if name == self.name:
            raise ValueError("policy: repredict cannot wrap itself")
        inner = make(name, **params)
        if inner.tags.clairvoyant:
            raise ValueError(f"policy: {name!r} is clairvoyant; re-prediction is for policies that predict")

    @property
    def lo_quantile(self) -> float:
        return (1.0 - self.coverage) / 2

    @property
    def hi_quantile(self) -> float:
        return (1.0 + self.coverage) / 2

    def reset(self, *, seed: int | None = None) -> None:
        name, params = parse_policy_spec(self.policy)
        self._inner = make(name, **params)
        self._inner.reset(seed=seed)
        if getattr(self, "_table", None) is None or self._table.nu != self.nu:
            self._table = StudentTTable(self.nu)
        self._views: dict[int, _Repredicted] = {}

    def forget(self, request_ids: Collection[int]) -> None:
        for rid in request_ids:
            self._views.pop(rid, None)
        self._inner.forget(request_ids)

    def refusal(self, request: RequestView) -> str | None:
        return self._inner.refusal(request)

    def predict(self, request: RequestView, quantile: float) -> float:
        median = request._s.predicted_output_tokens
        if median is None:
            raise ConfigError(f"policy 'repredict' needs predicted_output_tokens (the log-t median) for every "
                              f"request (request {request.request_id} has none); pass --predictor logt:scale=S")
        value = conditional_quantile(median, request.num_output_tokens, self.scale, self._table, quantile)
        return float(value)

    def _wrap(self, request: RequestView) -> _Repredicted:
        view = self._views.get(request.request_id)
        if view is None or view._inner is not request:     # a new request under a finished one's id
            view = self._views[request.request_id] = _Repredicted(request, self)
        return view

    def schedule(self, view: SchedulerView) -> Decision:
        inner_view = dataclasses.replace(view, waiting=[self._wrap(r) for r in view.waiting],
                                         running=[self._wrap(r) for r in view.running])
        return self._inner.schedule(inner_view)
