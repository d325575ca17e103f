"""Per-request records → `RunSummary` (latencies in seconds, or rounds under `UnitTime`).

Two inter-token latencies, named apart:

- ``*_tpot`` (time per output token) is per request: (finish − first token) / (o − 1), one
  value per request with o > 1; ``mean_tpot`` / ``p99_tpot`` are the mean / 99th percentile
  over requests. Exact from the per-request columns.
- ``*_token_gap`` is per gap: every interval between two consecutive tokens of a request,
  all requests pooled (a request with o tokens gives o − 1 gaps), so a long request weighs
  more and one stall shows up in the tail. Needs the engine's gap records
  (``Simulator(record_token_gaps=True)``, what the CLI runs) or per-iteration records
  (``record_iterations=True``); NaN without them.

Prefix caching (``Simulator(prefix_caching=True)``): ``num_cached_tokens`` is the prompt tokens
served from the cache, summed over requests and their admissions (an evicted request looks the
cache up again when readmitted); ``prefix_hit_rate`` is that over the tokens looked up
(``RunResult.num_lookup_tokens``: each admission's ``num_tokens``, so recomputation counts). Both
are None when the run had caching off.

Times are measured from each request's *realised* arrival (`RunResult.arrival_time`): a
closed-loop follow-up turn arrives a think time after its previous turn finished.

SLO (`Slo`, e.g. ``Slo.parse("ttft=2,tpot=0.1,e2e=30")``): a request meets it when it finished
and each given target holds (TTFT ≤ ttft, TPOT ≤ tpot — a one-token request has no TPOT and
meets it —, latency ≤ e2e). ``slo_attainment`` is the fraction of all requests (rejected ones
miss) that meet it; ``goodput_requests_per_s`` is those requests / makespan.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

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
    p50_tpot: float = float("nan")
    p90_tpot: float = float("nan")
    p99_tpot: float = float("nan")
    mean_token_gap: float = float("nan")
    p50_token_gap: float = float("nan")
    p90_token_gap: float = float("nan")
    p99_token_gap: float = float("nan")
    slo: str | None = None
    slo_attainment: float = float("nan")
    goodput_requests_per_s: float = float("nan")
    num_restarted_tokens: int = 0      # generated tokens discarded by restarts (eviction = restart)
    num_cached_tokens: int | None = None       # prompt tokens served from the prefix cache
    prefix_hit_rate: float | None = None       # cached / looked-up tokens (None: caching off)

    def as_dict(self) -> dict:
        return asdict(self)


def _stats(values: np.ndarray) -> tuple[float, float, float, float]:
    if values.size == 0:
        return (float("nan"),) * 4
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return float(values.mean()), float(p50), float(p90), float(p99)


SLO_KEYS = ("ttft", "tpot", "e2e")


@dataclass(frozen=True, slots=True)
class Slo:
    """Service-level targets in the run's time unit; None: no target on that metric."""

    ttft: float | None = None
    tpot: float | None = None
    e2e: float | None = None

    @classmethod
    def parse(cls, text: str) -> Slo:
        """'ttft=2,tpot=0.1,e2e=30' (any non-empty subset). ValueError naming the bad part."""
        values: dict[str, float] = {}
        for part in text.split(","):
            key, sep, raw = part.strip().partition("=")
            if not sep or key not in SLO_KEYS:
                raise ValueError(f"expected KEY=SECONDS with KEY one of {', '.join(SLO_KEYS)}, got {part.strip()!r}")
            if key in values:
                raise ValueError(f"{key} given twice")
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{key}: expected a number of seconds, got {raw!r}") from None
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{key}: expected a positive finite number, got {raw!r}")
            values[key] = value
        return cls(**values)

    def __str__(self) -> str:
        return ",".join(f"{f.name}={getattr(self, f.name):g}" for f in fields(self)
                        if getattr(self, f.name) is not None)

    def met(self, ttft: np.ndarray, tpot: np.ndarray, latency: np.ndarray) -> np.ndarray:
        """Per request: all targets hold (NaN TPOT — one output token — meets a TPOT target)."""
        ok = np.ones(len(ttft), dtype=bool)
        if self.ttft is not None:
            ok &= ttft <= self.ttft
        if self.tpot is not None:
            ok &= np.isnan(tpot) | (tpot <= self.tpot)
        if self.e2e is not None:
            ok &= latency <= self.e2e
        return ok


def token_times(iterations, num_prompt_tokens: np.ndarray, restart: bool = False) -> dict[int, list[float]]:
    """When each request emitted each token, from iteration records: a request emits a token at
    the end of an iteration that brings its computed tokens (since its last eviction) to
    prompt + tokens emitted so far (the prefill emits the first; a recompute after an eviction
    emits the next one; every decode step one). With `restart` (``Simulator(eviction="restart")``)
    an eviction discards the tokens emitted so far: the times are those of the last generation."""
    computed: dict[int, int] = {}
    times: dict[int, list[float]] = {}
    for it in iterations:
        for rid in it.evicted:
            computed[rid] = 0
            if restart:
                times[rid] = []
        end = it.start_time + it.duration
        for rid, n in it.num_tokens.items():
            done = computed.get(rid, 0) + n
            computed[rid] = done
            emitted = times.setdefault(rid, [])
            if done >= int(num_prompt_tokens[rid]) + len(emitted):
                emitted.append(end)
    return times


def token_gaps(iterations, num_prompt_tokens: np.ndarray, restart: bool = False) -> np.ndarray:
    """Every gap between two consecutive tokens of a request, all requests pooled."""
    per_request = [np.diff(t) for t in token_times(iterations, num_prompt_tokens, restart).values() if len(t) > 1]
    return np.concatenate(per_request) if per_request else np.empty(0)


def run_token_gaps(result) -> np.ndarray:
    """A run's token gaps: recorded by the engine (`RunResult.token_gaps`) or rebuilt from its
    iteration records (`token_gaps`, the definition); empty when it has neither."""
    if result.token_gaps is not None:
        missing = np.isnan(result.token_gaps)       # tokens never emitted (rejected, unfinished)
        return result.token_gaps[~missing] if missing.any() else result.token_gaps
    if result.iterations is not None:
        restart = getattr(result, "num_restarted_tokens", None) is not None
        return token_gaps(result.iterations, result.workload.num_prompt_tokens, restart)
    return np.empty(0)


def arrival_times(result) -> np.ndarray:
    """When each request arrived: the run's realised times (`RunResult.arrival_time`), or the
    workload's for result-like objects without them."""
    realised = getattr(result, "arrival_time", None)
    return result.workload.arrival_time if realised is None else realised


def prefix_cache_fields(result) -> dict:
    """``num_cached_tokens`` and ``prefix_hit_rate`` (None when the run had caching off; the hit
    rate is NaN when nothing was looked up)."""
    cached = getattr(result, "num_cached_tokens", None)
    if cached is None:
        return {}
    total = int(np.sum(cached))
    lookup = getattr(result, "num_lookup_tokens", None)
    looked_up = int(np.sum(lookup)) if lookup is not None else 0
    return {"num_cached_tokens": total,
            "prefix_hit_rate": total / looked_up if looked_up else float("nan")}


def summarize(result, slo: Slo | None = None) -> RunSummary:
    w = result.workload
    done = ~result.rejected
    arrived = arrival_times(result)
    arrival = arrived[done]
    latency = result.finish_time[done] - arrival
    ttft = result.first_token_time[done] - arrival
    outputs = w.true_output_tokens[done]
    multi = outputs > 1
    tpot = ((result.finish_time[done] - result.first_token_time[done])[multi] / (outputs[multi] - 1))
    # nanmin: a follow-up whose previous turn was rejected never arrives (NaN); request 0 has no
    # previous turn, so some time is finite
    start = float(np.nanmin(arrived)) if len(w) else 0.0
    end = float(np.nanmax(result.finish_time)) if done.any() else start
    makespan = end - start
    useful = int((w.num_prompt_tokens[done] + outputs - 1).sum())
    recomputed = int(result.num_recomputed_tokens.sum())
    capacity = result.kv_capacity_tokens
    mean_l, p50_l, p90_l, p99_l = _stats(latency)
    mean_t, p50_t, p90_t, p99_t = _stats(ttft)
    _, p50_tp, p90_tp, p99_tp = _stats(tpot)
    gaps = run_token_gaps(result)
    mean_g, p50_g, p90_g, p99_g = _stats(gaps)
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
        num_iterations=result.num_iterations, wall_time=result.wall_time,
        p50_tpot=p50_tp, p90_tpot=p90_tp, p99_tpot=p99_tp, mean_token_gap=mean_g,
        p50_token_gap=p50_g, p90_token_gap=p90_g, p99_token_gap=p99_g,
        num_restarted_tokens=(0 if getattr(result, "num_restarted_tokens", None) is None
                              else int(result.num_restarted_tokens.sum())),
        **prefix_cache_fields(result),
        **_slo_fields(slo, ttft, latency, outputs, done, per_s))


def _slo_fields(slo: Slo | None, ttft, latency, outputs, done, per_s) -> dict:
    if slo is None:
        return {}
    met = int(slo.met(ttft, _aligned_tpot(ttft, latency, outputs), latency).sum())
    total = len(done)
    return {"slo": str(slo), "slo_attainment": met / total if total else float("nan"),
            "goodput_requests_per_s": per_s(float(met))}


def _aligned_tpot(ttft, latency, outputs) -> np.ndarray:
    """Per finished request: (latency − TTFT) / (o − 1), NaN for one-token requests."""
    out = np.full(len(ttft), np.nan)
    multi = outputs > 1
    out[multi] = (latency - ttft)[multi] / (outputs[multi] - 1)
    return out
