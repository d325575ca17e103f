"""Strength of the LP bounds on the MC-SF paper's instances (all at 0): plain time-indexed LP vs
the LP with exclusive-window rows, as a fraction of the best schedule found (heuristics + LNS).

    python bench/bounds_lp_strength.py [--sizes 10,40,50] [--seeds 0,1,2,3] [--time-limit 60]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kvsched.bounds.exact import improve
from kvsched.bounds.greedy import best_heuristic, mcsf_schedule
from kvsched.bounds.instance import Instance
from kvsched.bounds.ip import horizon_from_upper_bound, solve_lp_relaxation
from kvsched.experiments.mcsf_synthetic import paper_instance


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,40,50")
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--time-limit", type=float, default=60.0)
    args = parser.parse_args()
    for n in map(int, args.sizes.split(",")):
        for seed in map(int, args.seeds.split(",")):
            w, M = paper_instance(np.random.default_rng(seed), "zero", n)
            inst = Instance.from_workload(w, M)
            start = best_heuristic(inst, deadline=time.perf_counter() + 5)
            start = improve(inst, start, time.perf_counter() + 10)
            upper = inst.objective(start)
            horizon = max(horizon_from_upper_bound(inst, upper), int((start + inst.num_output_tokens).max()))
            row = [f"n={n} seed={seed} M={M}: best schedule {upper:g} (MC-SF {inst.objective(mcsf_schedule(inst)):g})"]
            for windows in (False, True):
                t0 = time.perf_counter()
                lp = solve_lp_relaxation(inst, horizon, windows=windows, time_limit=args.time_limit)
                label = "LP+windows" if windows else "LP"
                row.append(f"{label} {lp:.0f} ({100 * lp / upper:.1f}%, {time.perf_counter() - t0:.1f}s)"
                           if lp is not None else f"{label} none")
            print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
