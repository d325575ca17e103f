"""The Nie–Si–Zhou stability threshold against the saturation rates `kvsched capacity` finds.

Claim (Nie, Si, Zhou, arXiv 2605.04595, abstract): the predicted service rate μ = M / (b̄·E[g])
is within about 10% of measured vLLM V1 throughput (A100, Llama-3-8B). Here the "measurement" is
the simulator: `kvsched.analysis.capacity.find_capacity` (the largest Poisson rate whose mean latency
over 2n requests stays within 10% of that over n) for `vllm` and `sarathi`, with `kvsched capacity`'s
defaults: LinearCost(d0 = 0.00939 s, d1 = 2.68e-6 s/token) — our rough Llama-2-7B/A100 fit —,
M = 137,000 KV tokens, block size 1. Workloads: the embedded LMSYS-like lengths and Vidur's ShareGPT
trace (lengths only; arrivals Poisson at the probed rate; read from ../shared/data).

Prints μ (g in the computed convention, b̄ = d0 + d1·M), then per policy and n the stable/unstable
bracket and its ratio to μ.

    python bench/stability.py [--sizes 400,3000,10000] [--policies vllm,sarathi]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kvsched import LinearCost, Simulator
from kvsched.analysis.capacity import find_capacity
from kvsched.bounds.stability import stability_bound
from kvsched.policies import make
from kvsched.workload.synthetic import default_workload
from kvsched.workload.traces import load_trace

SHAREGPT = Path("/work/shared/data/vidur/data/processed_traces/sharegpt_8k_filtered_stats_llama2_tokenizer.csv")
D0, D1, M = 0.00939, 2.68e-6, 137_000


def workloads(max_requests: int):
    """name → (lengths sample, factory (rate, n, seed) → Workload)."""
    lmsys = default_workload(max_requests, rate=None, seed=0)
    sharegpt = load_trace(SHAREGPT)
    return {
        "default (LMSYS-like)": (lmsys, lambda r, n, s: default_workload(n, rate=r, seed=s)),
        "ShareGPT (Vidur trace)": (sharegpt, lambda r, n, s: load_trace(SHAREGPT, rate=r, seed=s, num_requests=n)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="400,3000,10000", help="n for the n-vs-2n stability test")
    parser.add_argument("--policies", default="vllm,sarathi")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    cost = LinearCost(D0, D1)
    sim = Simulator(cost, M, block_size=1)
    started = time.perf_counter()
    print(f"LinearCost(d0={D0}, d1={D1}), M = {M} tokens, block 1")
    for name, (sample, factory) in workloads(2 * max(sizes)).items():
        mu = stability_bound(sample.num_prompt_tokens, sample.true_output_tokens, M, cost=cost)
        print(f"\n{name}: E[s] = {mu.mean_prompt_tokens:.1f}, E[o] = {mu.mean_output_tokens:.1f}, "
              f"E[g] = {mu.mean_kv_demand:.0f} token-iterations, b̄ = {mu.batch_time:.4f} s, "
              f"μ = {mu.service_rate:.3f} req/s")
        print(f"  {'policy':<10}{'n':>7}{'stable':>10}{'unstable':>10}{'stable/μ':>10}")
        for policy in args.policies.split(","):
            for n in sizes:
                if 2 * n > len(sample) and "ShareGPT" in name:
                    continue
                result = find_capacity(sim, make(policy), factory, lo=0.3 * mu.service_rate,
                                       hi=1.1 * mu.service_rate, num_requests=n, seed=0)
                print(f"  {policy:<10}{n:>7}{result.rate:>10.3f}{result.unstable_rate:>10.3f}"
                      f"{result.rate / mu.service_rate:>10.3f}", flush=True)
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
