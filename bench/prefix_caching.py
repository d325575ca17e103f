"""Prefix caching on multi-turn chat: TTFT and throughput with caching off and on, and what caching
costs the simulator.

Workloads: the embedded multi-turn LMSYS-like workload (`--workload multiturn`: each turn's prompt
is the conversation so far; turns arrive a think time after the previous one finishes), and the
same with a 1,024-token system prompt shared by half of the conversations. Cost: the calibrated
Llama-3-8B / A100 preset (prefill work is priced, so a cache hit saves time), its KV capacity,
block 16. Policies: vllm, sarathi, mcsf (exact predictions). Every run also times the simulation
itself (the Python engine either way: multi-turn runs are closed loop) and, on the open-loop
default workload, the caching-off path's speed, which caching must not slow.

    python bench/prefix_caching.py [--num-requests 2000] [--rate 4] [--policies vllm,sarathi,mcsf]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from kvsched.experiments.scenario import build_setup
from kvsched.metrics import summarize
from kvsched.policies import make

COST = "preset:llama3-8b-a100"


def timed_run(setup, policy_id: str, prefix_caching: bool):
    sim = dataclasses.replace(setup.simulator, prefix_caching=prefix_caching)
    started = time.process_time()
    result = sim.run(setup.workload, make(policy_id), seed=0)
    return result, time.process_time() - started


def compare(name: str, setup, policies: list[str]) -> None:
    print(f"\n{name}: {len(setup.workload)} requests, KV {setup.simulator.kv_capacity_tokens} tokens")
    print(f"  {'policy':<9}{'caching':>8}{'mean TTFT':>11}{'p99 TTFT':>10}{'mean lat':>10}"
          f"{'tok/s':>9}{'hit rate':>10}{'evictions':>11}{'sim CPU s':>11}")
    for policy_id in policies:
        for caching in (False, True):
            result, seconds = timed_run(setup, policy_id, caching)
            s = summarize(result)
            hit = f"{s.prefix_hit_rate:.3f}" if caching else "-"
            print(f"  {policy_id:<9}{'on' if caching else 'off':>8}{s.mean_ttft:>11.3f}{s.p99_ttft:>10.3f}"
                  f"{s.mean_latency:>10.2f}{s.throughput_tokens_per_s:>9.0f}{hit:>10}"
                  f"{int(result.num_evictions.sum()):>11}{seconds:>11.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-requests", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=4.0, help="requests per second")
    parser.add_argument("--policies", default="vllm,sarathi,mcsf")
    args = parser.parse_args()
    policies = args.policies.split(",")
    common = dict(num_requests=args.num_requests, rate=args.rate, cost=COST, predictor="exact")
    print(f"cost {COST}, {args.rate:g} requests/s")
    compare("multi-turn LMSYS", build_setup(workload="multiturn", **common), policies)
    compare("multi-turn, 1,024-token system prompt for half the conversations",
            build_setup(workload="multiturn", shared_prefix_tokens=1024, shared_prefix_fraction=0.5,
                        **common), policies)
    compare("default (open loop, distinct prompts: caching changes nothing but the run time)",
            build_setup(workload="default", **common), policies)


if __name__ == "__main__":
    main()
