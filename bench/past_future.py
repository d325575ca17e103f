"""Past-Future in the setting of its artifact (WuSiYu/lightllm-ae, behavior-analysis/).

The artifact's behaviour simulator: KV capacity 120,000 tokens; a backlog always waiting (its
generator yields the next request whenever the queue is empty, so here all requests arrive at
t = 0); 10 decode steps between admission steps; at most 32,768 prompt tokens admitted per step;
memory of a request = prompt + tokens decoded; on overflow the newest request is evicted *for free*
(it keeps its progress). Three length distributions of 3,000 requests (uniform integers):
1 decode-heavy s ∈ [32, 4096], o ∈ [2048, 4096]; 2 balanced s, o ∈ [3000, 5000];
3 prefill-heavy s ∈ [2048, 4096], o ∈ [32, 4096]. It prints memory utilisation (mean KV / M over
steps) and evicted requests (evictions / finished).

Here: the same capacity, distributions and cadence (``prefill_interval=10``,
``max_prefill_tokens=32768``) in kvsched's engine — UnitTime, EMITTED (s + j), block 1 — where an
eviction *recomputes* (the artifact's model leaves that cost out). Beside `past-future`:
`vllm` with a 1% watermark (the artifact's "aggressive": admit what fits now, keep 1% free; LIFO
preemption), `mc-benchmark` with the true lengths (FCFS with a true-length future check: the
artifact's "theoretical optimum") and with every prediction 4096 (its "conservative" reservation;
the artifact reserves s + 4096 per request in a plain sum, stricter than this peak check).
Memory utilisation = KV token-rounds / (rounds × M) (time-weighted under another cost); evicted =
evictions / requests; recomp = recomputed / computed tokens. Under UnitTime a recomputation costs
one round however long, so only ``--cost preset:...`` (prefill time modelled) shows its price.

    python bench/past_future.py [--num-requests 3000] [--seed 0] [--cost unit|preset:NAME]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kvsched import KVConvention, Simulator
from kvsched.experiments.scenario import parse_cost
from kvsched.policies import make
from kvsched.policies.registry import parse_policy_spec
from kvsched.workload.predictors import apply_predictor
from kvsched.workload.synthetic import Workload

M = 120_000
DISTRIBUTIONS = {"1 decode-heavy": ((32, 4096), (2048, 4096)), "2 balanced": ((3000, 5000), (3000, 5000)),
                 "3 prefill-heavy": ((2048, 4096), (32, 4096))}
POLICIES = {"past-future:prefill_interval=10;max_prefill_tokens=32768": "exact",
            "vllm:max_num_batched_tokens=32768;watermark=0.01": "exact",
            "mc-benchmark": "exact",
            "mc-benchmark ": "naive:lo=4096,hi=4096"}


def backlog(prompt_range, output_range, n: int, seed: int) -> Workload:
    rng = np.random.default_rng(seed)
    s = rng.integers(prompt_range[0], prompt_range[1] + 1, n)     # inclusive, as random.randint
    o = rng.integers(output_range[0], output_range[1] + 1, n)
    return Workload.build(np.zeros(n), s, o, name="artifact backlog")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-requests", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cost", default="unit", help="'unit' (the artifact's steps) or e.g. "
                        "'preset:llama3-8b-a100' (prefill and recomputation cost time)")
    args = parser.parse_args()
    sim = Simulator(parse_cost(args.cost).cost, M, kv_convention=KVConvention.EMITTED)
    started = time.perf_counter()
    print(f"{args.num_requests} requests at t=0 per distribution, M = {M}, cost {args.cost}, EMITTED, block 1, "
          "recompute on eviction")
    print(f"{'distribution':<17}{'policy':<58}{'predictor':<22}{'mem util %':>11}{'evicted %':>10}"
          f"{'recomp %':>9}{'mean lat':>10}")
    for name, (prompts, outputs) in DISTRIBUTIONS.items():
        base = backlog(prompts, outputs, args.num_requests, args.seed)
        for spec, predictor in POLICIES.items():
            policy_name, params = parse_policy_spec(spec.strip())
            result = sim.run(apply_predictor(base, predictor), make(policy_name, **params), seed=args.seed)
            util = result.kv_token_seconds / (result.busy_time * M)
            evicted = result.num_evictions.sum() / args.num_requests
            latency = float(np.mean(result.finish_time))
            recomputed = result.num_recomputed_tokens.sum() / result.total_computed_tokens.sum()
            print(f"{name:<17}{spec.strip():<58}{predictor:<22}{100 * util:>11.2f}{100 * evicted:>10.2f}"
                  f"{100 * recomputed:>9.2f}{latency:>10.4g}", flush=True)
    print(f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
