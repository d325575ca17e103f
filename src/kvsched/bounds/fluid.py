"""The fluid benchmark of Ao, Luo, Simchi-Levi, Wang (arXiv 2504.11320), under `LinearCost(d0, d1)`.

Model (see `kvsched.workload.typed` for the mapping to the engine): type j arrives at rate λ_j with prompt
l_j and l'_j decode stages; stage s holds l_j + s KV tokens; a batch lasts d0 + d1·(KV tokens in
it). In the fluid equilibrium every stage of type j processes λ_j·τ prompts per iteration of
length τ, so with

    X = Σ_j λ_j (l'_j + 1)(l_j + l'_j/2)      (KV tokens entering batches per second)

the iteration time solves τ = d0 + d1·τ·X, i.e.

    stable  ⇔  d1·X < 1,        τ* = d0 / (1 − d1·X),        M* = τ*·X = d0·X / (1 − d1·X),

M* being the KV memory the equilibrium batch holds. Per type, n_j* = τ*·λ_j·(l'_j + 1) prompts
are in the system (τ*·λ_j at each stage), and the throughput is Σ_j λ_j l'_j decode tokens per
second (Σ_j λ_j (l'_j + 1) output tokens in kvsched's count, whose prefill emits a token). When
the KV capacity C ≥ M* no policy can exceed this throughput, and it is reachable.

Under the engine's COMPUTED convention these are exact (tests/bounds/test_fluid.py replays WAIT at its
fluid thresholds and finds iterations of length τ* holding M* tokens).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..cost.models import LinearCost
from ..errors import ConfigError
from ..workload.typed import TypeMix


class UnstableError(ConfigError):
    """The offered load is outside the fluid model's stability region (d1·X ≥ 1)."""


@dataclass(frozen=True, slots=True)
class FluidBound:
    """The fluid equilibrium of a type mix under LinearCost(d0, d1). Units: seconds, tokens.

    ``kv_token_rate`` is X; ``load`` is d1·X; ``memory_tokens`` M*; ``iteration_time`` τ*;
    ``num_prompts_per_stage[j]`` = τ*·λ_j; ``num_prompts_per_type[j]`` = n_j* = τ*·λ_j·(l'_j + 1);
    ``max_total_rate``: the largest total rate with the same proportions that is stable
    (Λ / (d1·X)); ``decode_tokens_per_s`` = Σ λ_j l'_j (the paper's throughput*);
    ``output_tokens_per_s`` = Σ λ_j (l'_j + 1) (kvsched's `throughput_tokens_per_s`).
    """

    d0: float
    d1: float
    total_rate: float
    kv_token_rate: float
    load: float
    iteration_time: float
    memory_tokens: float
    num_prompts_per_stage: tuple[float, ...]
    num_prompts_per_type: tuple[float, ...]
    decode_tokens_per_s: float
    output_tokens_per_s: float
    requests_per_s: float
    max_total_rate: float

    def as_dict(self) -> dict:
        return asdict(self)


def kv_token_rate(mix: TypeMix) -> float:
    """X = Σ_j λ_j (l'_j + 1)(l_j + l'_j/2) (KV tokens per second entering batches)."""
    return float(sum(t.rate * t.kv_token_stages for t in mix.types))


def fluid_bound(mix: TypeMix, cost: LinearCost) -> FluidBound:
    """The fluid benchmark of `mix` under `cost`; raises `UnstableError` when d1·X ≥ 1."""
    if not isinstance(cost, LinearCost):
        raise ConfigError(f"the fluid benchmark needs LinearCost(d0, d1), got {type(cost).__name__}")
    d0, d1 = float(cost.d0), float(cost.d1)
    x = kv_token_rate(mix)
    load = d1 * x
    max_rate = mix.total_rate / load if load > 0 else math.inf
    if load >= 1.0:
        raise UnstableError(
            f"unstable: d1·X = {load:.4g} >= 1 (X = {x:.6g} KV tokens/s at total rate "
            f"{mix.total_rate:g} req/s); the fluid limit for this mix is {max_rate:.4g} req/s")
    tau = d0 / (1.0 - load)
    rates = mix.rates
    stages = np.array([t.num_decode_stages for t in mix.types], dtype=np.float64)
    return FluidBound(
        d0=d0, d1=d1, total_rate=mix.total_rate, kv_token_rate=x, load=load, iteration_time=tau,
        memory_tokens=tau * x, num_prompts_per_stage=tuple(float(v) for v in tau * rates),
        num_prompts_per_type=tuple(float(v) for v in tau * rates * (stages + 1)),
        decode_tokens_per_s=float(rates @ stages), output_tokens_per_s=float(rates @ (stages + 1)),
        requests_per_s=mix.total_rate, max_total_rate=max_rate)


def max_stable_rate(mix: TypeMix, cost: LinearCost, kv_capacity_tokens: float | None = None) -> float:
    """The largest total rate (same proportions) that the fluid model serves stably.

    Without a capacity: Λ with d1·X = 1 (exclusive). With a capacity C: also M* ≤ C, i.e.
    d0·X/(1 − d1·X) ≤ C ⇔ X ≤ C/(d0 + d1·C), since X is proportional to Λ.
    """
    x1 = kv_token_rate(mix.with_total_rate(1.0))
    bound = math.inf if cost.d1 == 0 else 1.0 / (cost.d1 * x1)
    if kv_capacity_tokens is not None:
        bound = min(bound, kv_capacity_tokens / ((cost.d0 + cost.d1 * kv_capacity_tokens) * x1))
    return bound


def per_request_bound(num_prompt_tokens, true_output_tokens, total_rate: float,
                      cost: LinearCost) -> FluidBound:
    """The fluid benchmark of an empirical length distribution, every request its own type.

    Each observed (l_i, l'_i = o_i − 1) is a type of rate Λ/n: the unbinned limit of
    `kvsched.workload.typed.bin_lengths`.
    """
    from ..workload.typed import RequestType
    prompts = np.asarray(num_prompt_tokens, dtype=np.int64)
    stages = np.asarray(true_output_tokens, dtype=np.int64) - 1
    pairs, counts = np.unique(np.stack([prompts, stages], axis=1), axis=0, return_counts=True)
    share = counts / counts.sum()
    mix = TypeMix(tuple(RequestType(int(p), int(d), total_rate * float(w))
                        for (p, d), w in zip(pairs, share)))
    return fluid_bound(mix, cost)
