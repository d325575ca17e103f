"""Per-request records → `RunSummary` (latencies in seconds, or rounds under `UnitTime`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class RunSummary:
    """Summary of one run. Latency = finish − arrival; TTFT = first token − arrival;
    TPOT = (finish − first token) / (o − 1) over requests with o > 1.

    ``total_latency`` is the theory papers' objective Σ (c_i − a_i). ``recompute_ratio`` is
    recomputed tokens / useful tokens (s + o − 1 per finished request). KV utilisation is the used
    fraction of the capacity; the mean is time-weighted over the makespan (first arrival to last
    finish). Rejected requests are excluded from latency figures and counted in ``num_rejected``.
    """

    policy: str
    num_requests: int
    num_finished: int
    num_rejected: int
    mean_latency: float
    p50_latency: float
    p90_latency: float
    p99_latency: float
    total_latency: float
    mean_ttft: float
    p50_ttft: float
    p90_ttft: float
    p99_ttft: float
    mean_tpot: float
    makespan: float
    throughput_tokens_per_s: float
    throughput_requests_per_s: float
    num_evictions: int
    num_recomputed_tokens: int
    recompute_ratio: float
    peak_kv_utilization: float
    mean_kv_utilization: float
    num_iterations: int
    wall_time: float

    def as_dict(self) -> dict:
        return asdict(self)


def _stats(values: np.ndarray) -> tuple[float, float, float, float]:
    if values.size == 0:
        return (float("nan"),) * 4
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return float(values.mean()), float(p50), float(p90), float(p99)


def summarize(result) -> RunSummary:
    w = result.workload
    done = ~result.rejected
    arrival = w.arrival_time[done]
    latency = result.finish_time[done] - arrival
    ttft = result.first_token_time[done] - arrival
    outputs = w.true_output_tokens[done]
    multi = outputs > 1
    tpot = ((result.finish_time[done] - result.first_token_time[done])[multi] / (outputs[multi] - 1))
    start = float(w.arrival_time.min()) if len(w) else 0.0
    end = float(np.nanmax(result.finish_time)) if done.any() else start
    makespan = end - start
    useful = int((w.num_prompt_tokens[done] + outputs - 1).sum())
    recomputed = int(result.num_recomputed_tokens.sum())
    capacity = result.kv_capacity_tokens
    mean_l, p50_l, p90_l, p99_l = _stats(latency)
    mean_t, p50_t, p90_t, p99_t = _stats(ttft)
    per_s = (lambda x: x / makespan) if makespan > 0 else (lambda x: float("nan"))
    return RunSummary(
        policy=result.policy, num_requests=len(w), num_finished=int(done.sum()),
        num_rejected=int(result.rejected.sum()), mean_latency=mean_l, p50_latency=p50_l,
        p90_latency=p90_l, p99_latency=p99_l, total_latency=float(latency.sum()), mean_ttft=mean_t,
        p50_ttft=p50_t, p90_ttft=p90_t, p99_ttft=p99_t,
        mean_tpot=float(tpot.mean()) if tpot.size else float("nan"), makespan=makespan,
        throughput_tokens_per_s=per_s(float(outputs.sum())),
        throughput_requests_per_s=per_s(float(done.sum())),
        num_evictions=int(result.num_evictions.sum()), num_recomputed_tokens=recomputed,
        recompute_ratio=recomputed / useful if useful else 0.0,
        peak_kv_utilization=result.kv_peak_tokens / capacity,
        mean_kv_utilization=(result.kv_token_seconds / makespan / capacity) if makespan > 0 else 0.0,
        num_iterations=result.num_iterations, wall_time=result.wall_time)
