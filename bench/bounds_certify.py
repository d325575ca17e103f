"""Certification of the hindsight optimum on the MC-SF paper's synthetic instances.

    python bench/bounds_certify.py [--trials 10] [--time-limit 60] [--method exact] [--seed 0]
                                   [--num-requests N]

Draws instances as `kvsched reproduce mcsf-synthetic` does (M ~ U{30..50}, n ~ U{40..60},
s ~ U{1..5}, o ~ U{1..M-s}; all at 0 / Poisson rate U[0.5, 1.5] floored to rounds) and prints,
per arrival model, how many were certified optimal within the time limit, the certification
times (median, max) and the gaps of the others.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from kvsched import KVConvention, Simulator, UnitTime
from kvsched.bounds import compute_bound
from kvsched.experiments.mcsf_synthetic import ARRIVAL_MODELS, paper_instance


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--method", default="exact")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-requests", type=int, default=None)
    parser.add_argument("--models", default="zero,poisson")
    args = parser.parse_args()
    for model in args.models.split(","):
        rng = np.random.default_rng([args.seed, ARRIVAL_MODELS.index(model)])
        times, gaps = [], []
        for k in range(args.trials):
            w, M = paper_instance(rng, model, args.num_requests)
            sim = Simulator(UnitTime(), M, kv_convention=KVConvention.EMITTED)
            res = compute_bound(args.method, w, sim, args.time_limit)
            print(f"{model} #{k}: n={len(w)} M={M} {res.status} objective={res.objective:g} "
                  f"bound={res.bound:g} gap={100 * res.gap:.2f}% time={res.solve_time:.1f}s", flush=True)
            (times if res.status == "optimal" else gaps).append(res.solve_time if res.status == "optimal"
                                                                  else res.gap)
        print(f"== {model}: certified {len(times)}/{args.trials} within {args.time_limit:g} s ({args.method})")
        if times:
            print(f"   certification time median {statistics.median(times):.1f} s, max {max(times):.1f} s")
        if gaps:
            print(f"   uncertified gaps: median {100 * statistics.median(gaps):.2f}%, "
                  f"max {100 * max(gaps):.2f}%")


if __name__ == "__main__":
    main()
