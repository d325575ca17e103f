"""Stability limits: the largest arrival rate a policy sustains, found by simulation.

A rate is *stable* when mean latency stops growing with the horizon: the mean latency of the first
n requests of a workload and that of all 2n requests (the same draw, so the same first n) differ by
less than ``tolerance`` (10% by default). `find_capacity` brackets the limit (expanding the
bracket if needed) and bisects to a relative precision. It assumes stability is monotone in the
rate; near the limit a single seed is noisy, so report the bracket, not one number. The criterion
is conservative at small n: starting from an empty system, L(2n) exceeds L(n) near the limit even
when the queue is stable (tests/analysis/test_capacity.py finds ~65% of the fluid limit for unconstrained
continuous batching at n = 300); compare policies at the same n.

Workloads come from a factory ``make_workload(total_rate, num_requests, seed) -> Workload``;
policies from a `Policy` or a factory ``rate -> Policy`` (for rate-dependent parameters).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..engine.simulator import Simulator
from ..errors import ConfigError
from ..policies.base import Policy
from ..workload.synthetic import Workload

WorkloadFactory = Callable[[float, int, int], Workload]
PolicyOrFactory = Policy | Callable[[float], Policy]


@dataclass(frozen=True, slots=True)
class StabilityProbe:
    """One rate, simulated at n and 2n requests. ``change`` = L(2n)/L(n) − 1."""

    rate: float
    num_requests: int
    mean_latency: float
    mean_latency_doubled: float
    change: float
    stable: bool
    num_evictions: int
    wall_time: float


@dataclass(frozen=True, slots=True)
class CapacityResult:
    """``rate``: the largest stable rate probed; ``unstable_rate``: the smallest unstable one."""

    policy: str
    rate: float
    unstable_rate: float
    num_requests: int
    tolerance: float
    probes: tuple[StabilityProbe, ...]


def _policy_at(policy: PolicyOrFactory, rate: float) -> Policy:
    return policy if isinstance(policy, Policy) else policy(rate)


def probe_stability(sim: Simulator, policy: PolicyOrFactory, make_workload: WorkloadFactory,
                    rate: float, *, num_requests: int = 400, seed: int = 0, num_seeds: int = 1,
                    tolerance: float = 0.1) -> StabilityProbe:
    """Simulate `rate` with n and 2n requests and compare mean latencies.

    With ``num_seeds`` > 1 the workloads of seeds seed, seed + 1, … are run and their latencies
    averaged (one ratio of the averages), which damps the noise of one draw near the limit.
    """
    pol = _policy_at(policy, rate)
    short_lat = long_lat = wall = 0.0
    evictions = 0
    for k in range(num_seeds):
        doubled = make_workload(rate, 2 * num_requests, seed + k)
        short = sim.run(doubled.head(num_requests), pol).summary()
        long = sim.run(doubled, pol).summary()
        short_lat += short.mean_latency / num_seeds
        long_lat += long.mean_latency / num_seeds
        evictions += long.num_evictions
        wall += short.wall_time + long.wall_time
    change = long_lat / short_lat - 1.0
    return StabilityProbe(rate, num_requests, short_lat, long_lat, change,
                          bool(abs(change) < tolerance), evictions, wall)


def find_capacity(sim: Simulator, policy: PolicyOrFactory, make_workload: WorkloadFactory, *,
                  lo: float, hi: float, num_requests: int = 400, seed: int = 0,
                  num_seeds: int = 1, tolerance: float = 0.1, rel_precision: float = 0.02, max_expand: int = 6,
                  progress: Callable[[StabilityProbe], None] | None = None) -> CapacityResult:
    """The largest stable rate, by bisection between ``lo`` and ``hi`` (expanded when needed)."""
    if not 0 < lo < hi or not 0 < rel_precision < 1:
        raise ConfigError(f"capacity search needs 0 < lo < hi and 0 < precision < 1, got lo={lo}, hi={hi}")
    probes: list[StabilityProbe] = []

    def check(rate: float) -> bool:
        result = probe_stability(sim, policy, make_workload, rate, num_requests=num_requests,
                                 seed=seed, num_seeds=num_seeds, tolerance=tolerance)
        probes.append(result)
        if progress is not None:
            progress(result)
        return result.stable

    for _ in range(max_expand):
        if check(lo):
            break
        hi, lo = lo, lo / 2
    else:
        raise ConfigError(f"no stable rate found down to {lo:g} req/s; lower --lo")
    for _ in range(max_expand):
        if not check(hi):
            break
        lo, hi = hi, hi * 2
    else:
        raise ConfigError(f"every rate up to {hi:g} req/s was stable; raise --hi")
    while hi - lo > rel_precision * hi:
        mid = math.sqrt(lo * hi) if hi > 2 * lo else (lo + hi) / 2
        if check(mid):
            lo = mid
        else:
            hi = mid
    name = _policy_at(policy, lo).name
    return CapacityResult(name, lo, hi, num_requests, tolerance, tuple(probes))
