"""Sorted-F vs MC-SF on all-at-zero backlogs of short chats and long summarisation prompts.

Claim (Wang, Ye, Zhou, arXiv 2508.06133, abstract): when prompt lengths vary widely, FCFS and
shortest-first can be far from optimal, and Sorted-F lowers average latency (up to 30%) and comes
close to the LP bound. Setting here: a backlog of n requests at time 0, a fraction ``--long`` drawn
from Vidur's arXiv-summarisation trace (prompts of thousands of tokens, short outputs) and the rest
from its ShareGPT trace (short prompts, long outputs), lengths divided by ``--scale`` so the
round model stays small enough for the bounds; UnitTime rounds, EMITTED convention (s + j while
emitting token j), block size 1, exact predictions (the paper's lengths are known).

Prints total latency Σ c_i (all a_i = 0) of each policy and of the best lower bound that
`kvsched.bounds` proves within ``--time-limit`` seconds (method ``exact``), and each policy's ratio to
that bound. The traces are read from ../shared/data (never copied here).

    python bench/sorted_f.py [--num-requests 40] [--long 0.3] [--scale 8] [--capacity 2000] [--seeds 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from kvsched import KVConvention, Simulator, UnitTime
from kvsched.bounds import compute_bound
from kvsched.policies import make
from kvsched.policies.registry import parse_policy_spec
from kvsched.workload.predictors import apply_predictor
from kvsched.workload.synthetic import Workload
from kvsched.workload.traces import load_trace

TRACES = Path("/work/shared/data/vidur/data/processed_traces")
CHAT = TRACES / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
SUMMARY = TRACES / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"
POLICIES = ["sorted-f", "sorted-f:order=footprint", "sorted-f:trigger=drained", "mcsf", "mcsf:rule=skip",
            "mc-benchmark", "svf", "vllm"]


def backlog(n: int, long_fraction: float, scale: float, capacity: int, seed: int) -> Workload:
    """n requests at time 0: ⌊long·n⌋ summaries, the rest chats, lengths / scale (at least 1),
    keeping only rows whose s + o fits the capacity."""
    rng = np.random.default_rng(seed)
    parts = []
    for path, count in ((SUMMARY, int(long_fraction * n)), (CHAT, n - int(long_fraction * n))):
        w = load_trace(path)
        s = np.maximum(1, np.round(w.num_prompt_tokens / scale)).astype(int)
        o = np.maximum(1, np.round(w.true_output_tokens / scale)).astype(int)
        ok = np.flatnonzero(s + o <= capacity)
        pick = rng.choice(ok, size=count, replace=False)
        parts.append((s[pick], o[pick]))
    s = np.concatenate([p[0] for p in parts])
    o = np.concatenate([p[1] for p in parts])
    order = rng.permutation(len(s))        # arrival order (ties at 0) mixes the two kinds
    return Workload.build(np.zeros(len(s)), s[order], o[order], name="chat+summaries")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-requests", type=int, default=40)
    parser.add_argument("--long", type=float, default=0.3, help="fraction of summarisation requests")
    parser.add_argument("--scale", type=float, default=8.0, help="divide every length by this")
    parser.add_argument("--capacity", type=int, default=2000, help="KV capacity M in tokens")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds for the bound")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated specs")
    args = parser.parse_args()
    sim = Simulator(UnitTime(), args.capacity, kv_convention=KVConvention.EMITTED)
    specs = args.policies.split(",")
    started = time.perf_counter()
    print(f"{args.num_requests} requests at t=0 ({100 * args.long:.0f}% arXiv summaries, rest ShareGPT), "
          f"lengths / {args.scale:g}, M = {args.capacity}, UnitTime, EMITTED, block 1, exact predictions")
    print(f"{'seed':>4} {'policy':<26}{'total latency':>14}{'/ bound':>9}{'vs mcsf':>9}")
    for seed in range(args.seeds):
        w = apply_predictor(backlog(args.num_requests, args.long, args.scale, args.capacity, seed), "exact")
        bound = compute_bound("exact", w, sim, args.time_limit)
        totals = {spec: sim.run(w, _make(spec), seed=seed).summary().total_latency for spec in specs}
        mcsf = totals.get("mcsf")
        for spec, total in totals.items():
            rel = f"{total / mcsf:>9.3f}" if mcsf else ""
            print(f"{seed:>4} {spec:<26}{total:>14.0f}{total / bound.bound:>9.3f}{rel}")
        print(f"{seed:>4} {'bound (' + bound.status + ')':<26}{bound.bound:>14.0f}{1:>9.3f}"
              f"   best schedule found {bound.objective:.0f}", flush=True)
    print(f"wall time {time.perf_counter() - started:.0f} s")


def _make(spec: str):
    name, params = parse_policy_spec(spec)
    return make(name, **params)


if __name__ == "__main__":
    main()
