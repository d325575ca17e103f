"""WAIT and Nested WAIT (`wait`, `nested-wait`): Ao, Luo, Simchi-Levi, Wang, "Optimizing LLM
Inference: Fluid-Guided Online Scheduling with Memory Constraints" (arXiv 2504.11320); ALGORITHMS.md §4.

Stages (the paper's; see `kvsched.workload.typed` for the engine mapping): a waiting prompt is at stage 0;
a resident prompt that has emitted g output tokens is next at stage g (it holds l + g − 1 KV tokens
and holds l + g after that stage). A WAIT type with l' decode stages is a request with l' + 1
output tokens. The engine calls `schedule` whenever the server is idle (each iteration boundary),
so the paper's event-driven rule is applied at every boundary.

`wait` (the type is known at arrival: ``type_id`` of the request, 0-based into ``types``):
per-type stage thresholds n_j. Eligible types J = {j : (stage-0 queue of j) ≥ n_j}; the batch takes,
for each j ∈ J and each stage s, the first min(n_j, n_{js}) prompts of that stage (FIFO within a
stage); prompts of other types keep their KV and pause; with no eligible type the policy waits for
arrivals. With n_j at most n_j prompts of type j ever sit at a decode stage, so the KV in use never
exceeds M^π = Σ_j n_j (l'_j + 1)(l_j + l'_j/2) (`wait_memory_tokens`); C ≥ M^π ⇒ no eviction.

`nested-wait` (the type is unknown): decode-stage boundaries e_1 < … < e_m split stages into
segments (segment 1 = stages 0..e_1, segment k = e_{k−1}+1..e_k); segment k has threshold n_k,
both its entry requirement and its per-stage cap. With Q_k the prompts at segment k's first stage,
take the largest k with Q_{k'} ≥ n_{k'} for all k' ≤ k and batch min(n_{k'}, Q_{k',s}) at every
stage of segments 1..k; later segments pause with their KV.

Thresholds: given (``thresholds="n1/n2/…"``) or derived with the system-wide cap ``tl``:
- `wait`: n_j ∝ λ_j with Σ_j n_j (l'_j + 1) = tl (the paper's practical rule; the fluid choice is
  tl = τ*·Σ_j λ_j (l'_j + 1), i.e. n_j = τ*·λ_j — `kvsched.bounds.fluid`).
- `nested-wait`: q_k = min(p_k + margin, max_ratio), n_k = n_1 Π_{r<k} q_r and
  Σ_k (stages of segment k)·n_k = tl, with p_k = P(l' > e_k | l' > e_{k−1}) from ``survival`` or
  from a type mix ``types`` (the distribution only; the policy never reads ``type_id``).
  Practical defaults (the paper's): 10 segments of 50 decode stages, margin 0.05, max ratio 0.99.

Choices the paper leaves open, each a parameter:
- ``rounding`` of derived thresholds ("floor" as the authors' simulator, "round", "ceil"); at least 1.
- ``drain``: with no arrivals to come a threshold can never be met; then every type / segment with
  work is treated as eligible (default True; False reproduces a pure threshold rule and may stall).
- Overflow (KV after the iteration over capacity, possible only when C < M^π or with blocks > 1):
  the batch's new admissions are dropped latest-first, then resident prompts are evicted in reverse
  admission order ("evict the last admitted; it restarts from stage 0").
- ``restart``: how an evicted prompt is redone. "stages" (default, the paper's restart): its
  prompt is recomputed alone at stage 0 (holding l), then one token per stage (holding l + s),
  re-emitting nothing until it catches up — the same KV and batch cost as a fresh prompt's
  stages. "recompute": vLLM's way, prompt and generated tokens in one prefill. A resident prompt's
  stage is 1 + (tokens computed beyond its prompt), which is its output count when never evicted.
- Engine token budget (the paper has none): if ``max_num_batched_tokens`` is set, the batch is
  filled in order — resident prompts (admission order), then new admissions (arrival order) — and
  the prefill that reaches the budget is *chunked* to the budget left; the prompts after it pause.
  A chunked prompt stays at stage 0 (resident, its prompt not yet computed) until its prompt is
  done, so its stage 0 spans several iterations; it is ahead of waiting prompts in the stage-0
  queue and counts towards its type's (segment's) stage-0 threshold.
- Nested WAIT, stages past e_m stay in the last segment (its cap and threshold apply); the
  ``segments`` count tl with segment 1's prefill stage (e_1 + 1 stages).
- FIFO within a stage is resident admission order (waiting: arrival order).

Nested WAIT's no-eviction bound is not deterministic in general (the paper's safety buffer holds
with high probability): prompts can pile up at a segment boundary when more long prompts arrive
than n_k allows. `nested_wait_memory_tokens` is a bound when each run of n_{k−1} consecutive
survivors into segment k−1 holds at most n_k survivors into segment k (tests/policies/test_wait.py).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..errors import ConfigError
from ..state import Batch, Decision, RequestView, SchedulerView
from ..workload.typed import TypeMix, parse_mix
from .base import Policy, PolicyTags
from .registry import register

_ROUNDING = {"floor": math.floor, "round": round, "ceil": math.ceil}


def _slash_list(text: str | Sequence, cast, kind: str, what: str) -> tuple:
    """"3/2/1" (or a sequence) → a tuple of `cast` values; ValueError naming `what` otherwise."""
    items = str(text).split("/") if isinstance(text, str) else list(text)
    try:
        return tuple(cast(v) for v in items)
    except ValueError:
        raise ValueError(f"{what}: expected {kind} separated by '/', got {text!r}") from None


def parse_ints(text: str | Sequence[int], what: str) -> tuple[int, ...]:
    """"3/2/1" (or a sequence) → (3, 2, 1); every value an integer >= 1."""
    values = _slash_list(text, int, "integers", what)
    if not values or min(values) < 1:
        raise ValueError(f"{what}: expected integers >= 1 separated by '/', got {text!r}")
    return values


def parse_floats(text: str | Sequence[float], what: str) -> tuple[float, ...]:
    values = _slash_list(text, float, "numbers", what)
    if any(not 0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"{what}: expected probabilities in [0, 1], got {text!r}")
    return values


def _rounded(value: float, rounding: str) -> int:
    return max(1, int(_ROUNDING[rounding](value)))


def wait_thresholds(mix: TypeMix, tl: float, rounding: str = "floor") -> tuple[int, ...]:
    """n_j ∝ λ_j with Σ_j n_j (l'_j + 1) = tl, rounded (at least 1)."""
    weight = sum(t.rate * t.true_output_tokens for t in mix.types)
    return tuple(_rounded(tl * t.rate / weight, rounding) for t in mix.types)


def wait_memory_tokens(mix: TypeMix, thresholds: Sequence[int]) -> int:
    """M^π = Σ_j n_j (l'_j + 1)(l_j + l'_j/2): the most KV that WAIT's batches can hold."""
    return int(sum(n * t.kv_token_stages for n, t in zip(thresholds, mix.types, strict=True)))


def fluid_tl(mix: TypeMix, cost, kv_capacity_tokens: float | None = None, *, slack: float = 0.0) -> float:
    """tl from the fluid model: (1 + slack)·τ*·Σ_j λ_j (l'_j + 1) (so n_j = τ*·λ_j), capped so that
    M^π ≤ C when a capacity is given. Near or past the stability limit τ* is taken at 99% of it."""
    from ..bounds.fluid import fluid_bound, max_stable_rate
    top = max_stable_rate(mix, cost)
    at = mix if mix.total_rate < 0.99 * top else mix.with_total_rate(0.99 * top)
    slots = sum(t.rate * t.true_output_tokens for t in mix.types)
    tl = (1.0 + slack) * fluid_bound(at, cost).iteration_time * slots
    if kv_capacity_tokens is not None:
        tl = min(tl, kv_capacity_tokens * slots / sum(t.rate * t.kv_token_stages for t in mix.types))
    return tl


def fluid_thresholds(mix: TypeMix, cost, kv_capacity_tokens: float | None = None) -> tuple[int, ...]:
    """WAIT's thresholds from the fluid model: n_j = ⌈τ*·λ_j⌉ (tl = `fluid_tl`), rounded down
    instead when rounding up would make M^π exceed the capacity."""
    tl = fluid_tl(mix, cost, kv_capacity_tokens)
    n = wait_thresholds(mix, tl, "ceil")
    if kv_capacity_tokens is not None and wait_memory_tokens(mix, n) > kv_capacity_tokens:
        n = wait_thresholds(mix, tl, "floor")
    return n


def segment_survival(mix: TypeMix, ends: Sequence[int]) -> tuple[float, ...]:
    """p_k = P(l' > e_k | l' > e_{k−1}) under the mix's rates, k = 1..m−1 (e_0 = −1)."""
    out = []
    for k in range(len(ends) - 1):
        low = ends[k - 1] if k else -1
        alive = sum(t.rate for t in mix.types if t.num_decode_stages > low)
        beyond = sum(t.rate for t in mix.types if t.num_decode_stages > ends[k])
        out.append(beyond / alive if alive > 0 else 0.0)
    return tuple(out)


def segment_stage_counts(ends: Sequence[int]) -> tuple[int, ...]:
    """Stages per segment: e_1 + 1 (with the prefill stage), then e_k − e_{k−1}."""
    return tuple(e - (ends[k - 1] if k else -1) for k, e in enumerate(ends))


def nested_thresholds(ends: Sequence[int], survival: Sequence[float], tl: float, *,
                      margin: float = 0.05, max_ratio: float = 0.99,
                      rounding: str = "floor") -> tuple[int, ...]:
    """n_k = n_1 Π_{r<k} min(p_r + margin, max_ratio) with Σ_k (stages of k)·n_k = tl."""
    if len(survival) != len(ends) - 1:
        raise ValueError(f"survival needs {len(ends) - 1} values (one per boundary), got {len(survival)}")
    cumulative = [1.0]
    for p in survival:
        cumulative.append(cumulative[-1] * min(p + margin, max_ratio))
    counts = segment_stage_counts(ends)
    n1 = tl / sum(c * r for c, r in zip(counts, cumulative))
    return tuple(_rounded(n1 * r, rounding) for r in cumulative)


def nested_wait_memory_tokens(ends: Sequence[int], thresholds: Sequence[int], *,
                              max_prompt_tokens: int, max_decode_stages: int) -> int:
    """KV bound of Nested WAIT when boundary queues stay below 2·n_k (see the module docstring).

    Σ_k n_k Σ_{s ∈ segment k} (l_max + s) over stages up to ``max_decode_stages`` (the last
    segment is open), plus (n_k − 1)(l_max + e_{k−1}) for prompts paused at each later boundary.
    """
    total, low = 0, 0
    for k, n in enumerate(thresholds):
        high = max_decode_stages if k == len(thresholds) - 1 else min(ends[k], max_decode_stages)
        if high >= low:
            stages = high - low + 1
            total += n * (stages * max_prompt_tokens + (low + high) * stages // 2)
            if k:
                total += (n - 1) * (max_prompt_tokens + low - 1)
        low = ends[k] + 1
    return int(total)


def _stage(r: RequestView) -> int:
    """WAIT's stage: 0 when waiting or mid-prefill, else 1 + the tokens computed beyond the prompt."""
    return max(0, r.num_computed_tokens - r.num_prompt_tokens + 1) if r.is_resident else 0


def _num_tokens(r: RequestView, restart: str) -> int:
    """Tokens for the prompt's next stage (see ``restart`` in the module docstring)."""
    if restart == "stages":
        if not r.is_resident:          # its prompt, less a prefix-cache hit
            return min(r.num_uncomputed_tokens, max(1, r.num_prompt_tokens - r.num_cached_tokens))
        return max(1, r.num_prompt_tokens - r.num_computed_tokens)    # rest of a chunked prompt
    return r.num_uncomputed_tokens


def _budgeted(view: SchedulerView, batch: list[RequestView], restart: str) -> dict[int, int]:
    """Tokens per request: residents (admission order), then admissions (arrival order), the
    prefill reaching the token budget chunked to the budget left, the rest left out."""
    left = math.inf if view.max_num_batched_tokens is None else view.max_num_batched_tokens
    residents = sorted((r for r in batch if r.is_resident), key=lambda r: r.admitted_seq)
    admissions = sorted((r for r in batch if not r.is_resident),
                        key=lambda r: (r.arrival_time, r.request_id))
    tokens: dict[int, int] = {}
    for r in residents + admissions:
        n = min(_num_tokens(r, restart), left)
        if n < 1:
            break
        tokens[r.request_id] = n
        left -= n
    return tokens


def _fit(view: SchedulerView, batch: list[RequestView], restart: str) -> Decision:
    """The batch, made feasible: cut to the token budget (`_budgeted`); the resident prompts,
    evicting the last admitted while they do not fit (`add_evicting_newest`); then the new
    admissions in arrival order while they fit, and none in an iteration that evicts. The same
    as dropping new admissions latest-first, then evicting the last admitted, until the whole
    batch fits: the evictions needed for the residents alone, then the longest run of admissions."""
    tokens = _budgeted(view, batch, restart)
    fitted = view.new_batch()
    add_evicting_newest(view, fitted, {r.request_id: tokens[r.request_id] for r in batch
                                       if r.is_resident and r.request_id in tokens})
    if not fitted.evicted:
        admissions = sorted((r for r in batch if not r.is_resident and r.request_id in tokens),
                            key=lambda r: (r.arrival_time, r.request_id))
        for r in admissions:
            if not fitted.add(r, tokens[r.request_id]):
                break
    return fitted.decision()


def add_evicting_newest(view: SchedulerView, batch: Batch, tokens: dict[int, int]) -> None:
    """Add the resident requests of `tokens` (id → tokens) to `batch` in admission order,
    evicting resident requests, the last admitted first, whenever the next one does not fit;
    stop at the first one evicted (the victims are the newest, so the rest are evicted too).
    This evicts the fewest newest requests after which the scheduled ones that remain fit
    together."""
    victims = sorted(view.running, key=lambda r: r.admitted_seq)
    residents = [r for r in victims if r.request_id in tokens]
    evicted = batch.evicted
    for r in residents:
        if r.request_id in evicted:
            return
        while not batch.add(r, tokens[r.request_id]):
            victim = victims.pop()
            batch.evict(victim)
            if victim is r:
                return

def _check(rounding: str, restart: str) -> None:
    if rounding not in _ROUNDING:
        raise ValueError(f"rounding must be one of {', '.join(_ROUNDING)}, got {rounding!r}")
    if restart not in ("stages", "recompute"):
        raise ValueError(f"restart must be 'stages' or 'recompute', got {restart!r}")


@register
@dataclass(kw_only=True)
class WaitPolicy(Policy):
    """WAIT (known types). See the module docstring for the rule and every reconstructed choice.

    ``types``: the type mix ("p512d20@0.7+p512d50@0.3"; only relative rates matter), needed to
    derive thresholds from ``tl``. ``thresholds``: explicit per-type n_j ("4/2"), overriding tl.
    """

    name: ClassVar[str] = "wait"
    tags: ClassVar[PolicyTags] = PolicyTags(preemptive=True, pauses=True)
    description: ClassVar[str] = "WAIT (Ao et al. 2025): per-type stage thresholds, known types"

    types: str | None = None
    tl: float | None = 100
    thresholds: str | None = None
    rounding: str = "floor"
    drain: bool = True
    restart: str = "stages"

    def __post_init__(self) -> None:
        _check(self.rounding, self.restart)
        if self.thresholds is None and (self.types is None or self.tl is None):
            raise ValueError("wait needs `types` with `tl`, or explicit `thresholds`")
        if self.tl is not None and not self.tl > 0:
            raise ValueError(f"tl must be > 0, got {self.tl}")
        self.resolved_thresholds()

    def resolved_thresholds(self) -> tuple[int, ...]:
        if self.thresholds is not None:
            return parse_ints(self.thresholds, "thresholds")
        try:
            mix = parse_mix(self.types, option="types")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return wait_thresholds(mix, self.tl, self.rounding)

    def reset(self, *, seed: int | None = None) -> None:
        self._n = self.resolved_thresholds()

    def refusal(self, request: RequestView) -> str | None:
        j = request.type_id
        if j is None or not 0 <= j < len(self._n):
            return (f"wait: request {request.request_id} has type_id {j!r}; expected a type id "
                    f"0..{len(self._n) - 1} (a typed workload, kvsched.typed; over HTTP, kvsched_type_id)")
        return None

    def _type(self, r: RequestView) -> int:
        error = self.refusal(r)
        if error is not None:
            raise ConfigError(error)
        return r.type_id

    def schedule(self, view: SchedulerView) -> Decision:
        queues: dict[tuple[int, int], list[RequestView]] = {}
        for r in [*view.running, *view.waiting]:   # admission order, then arrival: FIFO in a stage
            queues.setdefault((self._type(r), _stage(r)), []).append(r)
        draining = self.drain and not view.has_future_arrivals
        eligible = {j for j in range(len(self._n))
                    if len(queues.get((j, 0), ())) >= self._n[j]
                    or (draining and any(key[0] == j for key in queues))}
        batch = [r for (j, _), queue in queues.items() if j in eligible for r in queue[:self._n[j]]]
        return _fit(view, batch, self.restart)


@register
@dataclass(kw_only=True)
class NestedWaitPolicy(Policy):
    """Nested WAIT (unknown types). See the module docstring for the rule and every choice.

    Segments: ``segment_ends`` ("50/100/…", decode-stage ends e_k) or ``num_segments`` of
    ``segment_stages`` each. Thresholds: explicit ``thresholds`` (one per segment) or derived from
    ``tl`` with survival p_k from ``survival`` ("0.5/0.4/…", m − 1 values), else from ``types``,
    else p_k = 1 (q_k = max_ratio).
    """

    name: ClassVar[str] = "nested-wait"
    tags: ClassVar[PolicyTags] = PolicyTags(preemptive=True, pauses=True)
    description: ClassVar[str] = "Nested WAIT (Ao et al. 2025): segment thresholds, unknown types"

    segment_ends: str | None = None
    num_segments: int = 10
    segment_stages: int = 50
    tl: float | None = 200
    thresholds: str | None = None
    survival: str | None = None
    types: str | None = None
    margin: float = 0.05
    max_ratio: float = 0.99
    rounding: str = "floor"
    drain: bool = True
    restart: str = "stages"

    def __post_init__(self) -> None:
        _check(self.rounding, self.restart)
        if self.num_segments < 1 or self.segment_stages < 1:
            raise ValueError("num_segments and segment_stages must be >= 1")
        if not (self.margin >= 0.0 and 0.0 < self.max_ratio <= 1.0):
            raise ValueError("need margin >= 0 and 0 < max_ratio <= 1")
        if self.thresholds is None and (self.tl is None or not self.tl > 0):
            raise ValueError("nested-wait needs tl > 0 or explicit thresholds")
        self.resolved()

    def resolved(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(segment ends e_k, thresholds n_k)."""
        if self.segment_ends is not None:
            ends = _slash_list(self.segment_ends, int, "integers", "segment_ends")
            if min(ends) < 0 or any(b <= a for a, b in zip(ends, ends[1:])):
                raise ValueError(f"segment_ends must increase from >= 0, got {self.segment_ends!r}")
        else:
            ends = tuple(self.segment_stages * (k + 1) for k in range(self.num_segments))
        if self.thresholds is not None:
            n = parse_ints(self.thresholds, "thresholds")
            if len(n) != len(ends):
                raise ValueError(f"thresholds: {len(ends)} segments need {len(ends)} values, got {len(n)}")
            return ends, n
        if self.survival is not None:
            p = parse_floats(self.survival, "survival")
        elif self.types is not None:
            try:
                p = segment_survival(parse_mix(self.types, option="types"), ends)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        else:
            p = (1.0,) * (len(ends) - 1)
        return ends, nested_thresholds(ends, p, self.tl, margin=self.margin, max_ratio=self.max_ratio,
                                       rounding=self.rounding)

    def reset(self, *, seed: int | None = None) -> None:
        self._ends, self._n = self.resolved()
        self._first = (0,) + tuple(e + 1 for e in self._ends[:-1])   # each segment's first stage

    def _segment(self, stage: int) -> int:
        return min(bisect.bisect_left(self._ends, stage), len(self._ends) - 1)

    def schedule(self, view: SchedulerView) -> Decision:
        queues: dict[int, list[RequestView]] = {}
        for r in [*view.running, *view.waiting]:   # admission order, then arrival: FIFO in a stage
            queues.setdefault(_stage(r), []).append(r)
        draining = self.drain and not view.has_future_arrivals
        ready = 0
        while ready < len(self._n) and (draining or len(queues.get(self._first[ready], ()))
                                        >= self._n[ready]):
            ready += 1
        batch = []
        for stage, queue in queues.items():
            k = self._segment(stage)
            if k < ready:
                batch += queue[:self._n[k]]
        return _fit(view, batch, self.restart)
