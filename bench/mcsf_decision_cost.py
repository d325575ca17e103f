"""Per-decision cost of MC-SF's future-memory check versus the number of waiting requests W.

For each W in 10, 100, 1,000, 10,000: W default-workload (LMSYS-like) requests wait at time 0 and
more arrive as a Poisson stream at 0.5 requests per round (about the service rate, so the queue
stays near W), UnitTime, EMITTED, M = 16,492 tokens, predictions interval:alpha=0.5 (MC-SF uses
the upper end as its point). Every `schedule` call is timed (policy time only, not the engine's);
the first 100 decisions (filling the KV cache) are discarded and the next 500 are reported.

    python bench/mcsf_decision_cost.py [--policies "mcsf|mcsf:rule=skip|amin"]

A check that loops over the queue per candidate, or over every future round, would grow with W
(×10 per row, or ×100 if quadratic); rule=stop should stay flat in W.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kvsched import KVConvention, Simulator, UnitTime, Workload
from kvsched.policies import make
from kvsched.policies.registry import parse_policy_spec
from kvsched.workload.predictors import apply_predictor
from kvsched.workload.synthetic import LMSYS_OUTPUT, LMSYS_PROMPT, AllAtZero, Poisson, synthesize

SIZES = (10, 100, 1_000, 10_000)
WARMUP, DECISIONS = 100, 500


class _Enough(Exception):
    pass


class Timed:
    """Wraps a policy; records (waiting, running, seconds) per decision; stops the run when done."""

    def __init__(self, policy, num_decisions: int) -> None:
        self.policy, self.num_decisions, self.samples = policy, num_decisions, []
        self.name, self.tags = policy.name, policy.tags

    def reset(self, *, seed=None) -> None:
        self.policy.reset(seed=seed)

    def schedule(self, view):
        if len(self.samples) >= self.num_decisions:
            raise _Enough
        start = time.perf_counter()
        decision = self.policy.schedule(view)
        self.samples.append((len(view.waiting), len(view.running), time.perf_counter() - start))
        return decision


def workload_for(num_waiting: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    backlog = synthesize(num_waiting, AllAtZero(), LMSYS_PROMPT, LMSYS_OUTPUT, rng)
    stream = synthesize(2_000, Poisson(0.5), LMSYS_PROMPT, LMSYS_OUTPUT, rng)
    cols = {k: np.concatenate([getattr(backlog, k), getattr(stream, k)])
            for k in ("arrival_time", "num_prompt_tokens", "true_output_tokens")}
    w = Workload.build(cols["arrival_time"], cols["num_prompt_tokens"], cols["true_output_tokens"])
    return apply_predictor(w, "interval:alpha=0.5", seed=seed)


def measure(spec: str, workload, sim: Simulator) -> np.ndarray:
    name, params = parse_policy_spec(spec)
    timed = Timed(make(name, **params), WARMUP + DECISIONS)
    try:
        sim.run(workload, timed, seed=0)
    except _Enough:
        pass
    return np.array(timed.samples[WARMUP:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", default="mcsf|mcsf:rule=skip|amin|hsf",
                        help="policy specs separated by '|'")
    parser.add_argument("--capacity", type=int, default=16_492)
    args = parser.parse_args()
    sim = Simulator(UnitTime(), args.capacity, kv_convention=KVConvention.EMITTED)
    workloads = {size: workload_for(size) for size in SIZES}
    print(f"M = {args.capacity} tokens, UnitTime, EMITTED, interval:alpha=0.5; "
          f"{DECISIONS} decisions after {WARMUP} warm-up ones")
    print(f"{'policy':<18}{'W target':>9}{'W median':>9}{'resident':>9}{'median µs':>11}"
          f"{'p90 µs':>9}{'µs/resident':>12}", flush=True)
    for spec in args.policies.split("|"):
        for size in SIZES:
            rows = measure(spec, workloads[size], sim)
            us = rows[:, 2] * 1e6
            print(f"{spec:<18}{size:>9}{np.median(rows[:, 0]):>9.0f}{np.median(rows[:, 1]):>9.0f}"
                  f"{np.median(us):>11.0f}{np.percentile(us, 90):>9.0f}"
                  f"{np.median(us / np.maximum(rows[:, 1], 1)):>12.2f}", flush=True)


if __name__ == "__main__":
    main()
