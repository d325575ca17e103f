"""The KV-memory stability threshold of Nie, Si, Zhou (arXiv 2605.04595, ICML 2026).

Source: "A Queueing-Theoretic Framework for Stability Analysis of LLM Inference with KV Cache
Memory Constraints" — its abstract and a third-party technical review (the full text was not
available to us). Certain: the service rate

    μ = M / (b̄ · E[g(s, o)])

with M the effective KV capacity in tokens, b̄ a representative batch (iteration) time and g(s, o)
the lifetime cumulative KV demand of a request with prompt s and output o (token-iterations); the
system is overloaded for λ > μ and stable under work-conserving batching for λ < μ(1 − δ), δ a
memory-slack term tied to the largest request; predictions within about 10% of measured vLLM V1
throughput on A100 with Llama-3-8B.

Reconstructed (arguments):

- ``convention`` — g in the engine's KV conventions: "computed" Σ_{j=1..o} (s + j − 1) =
  o·s + o(o−1)/2 (KV held while emitting token j, as vLLM holds it), "emitted" o·s + o(o+1)/2
  (the theory papers' s + j), "paper" o·s + o²/2 (ALGORITHMS.md's ≈ form).
- ``batch_time`` — b̄: given in seconds, or (default) the cost model's time of the *saturated*
  batch: memory full, M KV tokens in the batch. Requests start at M / E[g] per iteration there
  (Little's law on KV: started per iteration × lifetime demand = resident KV); each brings E[s]
  prefill tokens and stays E[o] iterations (`saturated_batch`). For `LinearCost` this is exactly
  d0 + d1·M, and μ then equals the memory branch of the fluid limit that `kvsched capacity`
  reports for the default workload (X = E[o·(s + (o − 1)/2)], the same g under "computed").
- δ is not computed (its definition is not in the abstract); ``slack`` reports max(s + o) / M,
  the largest request's share of memory, as an indication.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..cost.models import BatchStats, CostModel
from ..errors import ConfigError

CONVENTIONS = ("computed", "emitted", "paper")


def lifetime_kv_demand(num_prompt_tokens, num_output_tokens, convention: str = "computed") -> np.ndarray:
    """g(s, o) in token-iterations, per request (see the module docstring for the conventions)."""
    s = np.asarray(num_prompt_tokens, dtype=np.float64)
    o = np.asarray(num_output_tokens, dtype=np.float64)
    if convention == "computed":
        return o * s + o * (o - 1) / 2
    if convention == "emitted":
        return o * s + o * (o + 1) / 2
    if convention == "paper":
        return o * s + o * o / 2
    raise ConfigError(f"--kv-convention: got {convention!r}, expected one of: {', '.join(CONVENTIONS)}")


def saturated_batch(kv_capacity_tokens: int, mean_prompt_tokens: float, mean_output_tokens: float,
                    mean_demand: float) -> BatchStats:
    """The representative iteration with memory full: r = M / E[g] requests start per iteration
    (r·E[s] prefill tokens, r prefill sequences of E[s] tokens each, attention work r·E[s]²),
    r·(E[o] − 1) requests decode, and the batch's KV context is M in all (prefill context r·E[s],
    decode context M − r·E[s]). Counts rounded."""
    M = kv_capacity_tokens
    starts = M / mean_demand
    prefill = min(M, starts * mean_prompt_tokens)
    return BatchStats(num_prefill_tokens=round(prefill), num_prefill_seqs=max(1, round(starts)),
                      num_decode_seqs=max(0, round(starts * (mean_output_tokens - 1))),
                      prefill_context_tokens=round(prefill),
                      prefill_attention_work=round(starts * min(M, mean_prompt_tokens) ** 2),
                      decode_context_tokens=round(M - prefill))


@dataclass(frozen=True, slots=True)
class StabilityBound:
    """``service_rate``: μ in requests per second (per round under `UnitTime`)."""

    service_rate: float
    kv_capacity_tokens: int
    batch_time: float
    mean_kv_demand: float
    mean_prompt_tokens: float
    mean_output_tokens: float
    convention: str
    slack: float
    num_requests: int

    def as_dict(self) -> dict:
        return asdict(self)


def stability_bound(num_prompt_tokens, num_output_tokens, kv_capacity_tokens: int, *,
                    cost: CostModel | None = None, batch_time: float | None = None,
                    convention: str = "computed") -> StabilityBound:
    """μ = M / (b̄ · E[g]) over the empirical length distribution given (one entry per request).

    Give `batch_time` (seconds) or a `cost` model (b̄ = its time for `saturated_batch`)."""
    s = np.asarray(num_prompt_tokens, dtype=np.float64)
    o = np.asarray(num_output_tokens, dtype=np.float64)
    if s.size == 0 or s.shape != o.shape:
        raise ConfigError("stability bound: expected equal, non-empty prompt and output length arrays")
    if kv_capacity_tokens < 1:
        raise ConfigError(f"--kv-capacity: got {kv_capacity_tokens}, expected at least 1 token")
    demand = float(lifetime_kv_demand(s, o, convention).mean())
    if batch_time is None:
        if cost is None:
            raise ConfigError("stability bound: give a batch time or a cost model")
        batch_time = cost.iteration_time(saturated_batch(kv_capacity_tokens, float(s.mean()),
                                                         float(o.mean()), demand))
    if not batch_time > 0:
        raise ConfigError(f"--batch-time: got {batch_time}, expected > 0 seconds")
    return StabilityBound(kv_capacity_tokens / (batch_time * demand), int(kv_capacity_tokens), float(batch_time),
                          demand, float(s.mean()), float(o.mean()), convention,
                          float((s + o).max() / kv_capacity_tokens), int(s.size))
