"""Semi-online exact solver (all at 0) against the window-strengthened IP, equal / monotone prompts.

    python bench/bounds_semionline.py [--sizes 8,10,12] [--trials 3] [--time-limit 60]

Instances: M ~ U{30..50}; equal prompts: one s ~ U{1..5} for all; monotone: s and o drawn as in the
paper and sorted together (longer outputs have longer prompts); o ~ U{1..M-s}. Prints each solver's
status and time and checks that certified optima agree.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from kvsched.bounds.instance import Instance
from kvsched.bounds.ip import solve_ip
from kvsched.bounds.semionline import solve_semionline


def instance(rng: np.random.Generator, n: int, prompts: str) -> Instance:
    M = int(rng.integers(30, 51))
    s = np.full(n, int(rng.integers(1, 6))) if prompts == "equal" else rng.integers(1, 6, n)
    o = np.array([rng.integers(1, M - si + 1) for si in s])
    if prompts == "monotone":
        s, o = np.sort(s), np.sort(o)
        o = np.minimum(o, M - s)
    return Instance.make(s, o, M)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="8,10,12")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for prompts in ("equal", "monotone"):
        for n in map(int, args.sizes.split(",")):
            rng = np.random.default_rng([args.seed, n, prompts == "equal"])
            t_dp, t_ip = [], []
            for k in range(args.trials):
                inst = instance(rng, n, prompts)
                t0 = time.perf_counter()
                v, _, st_dp = solve_semionline(inst, time_limit=args.time_limit)
                t_dp.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                res = solve_ip(inst, time_limit=args.time_limit, windows=True)
                t_ip.append(time.perf_counter() - t0)
                if st_dp == res.status == "optimal" and v != res.objective:
                    raise SystemExit(f"disagreement: semi-online {v} vs IP {res.objective}")
                print(f"{prompts} n={n} #{k}: semi-online {st_dp} {v} in {t_dp[-1]:.1f}s | "
                      f"IP {res.status} {res.objective:g} in {t_ip[-1]:.1f}s", flush=True)
            print(f"== {prompts} n={n}: median semi-online {statistics.median(t_dp):.1f}s, "
                  f"IP {statistics.median(t_ip):.1f}s")


if __name__ == "__main__":
    main()
