"""Engine speed: simulated requests/s and iterations/s, fast path vs reference loop, peak memory.

    python bench/engine_speed.py            # the full set (1M requests included: minutes)
    python bench/engine_speed.py --quick    # a smaller set (about a minute)

Every (scenario, policy, mode) runs in a fresh Python process, so its peak memory (``ru_maxrss``,
the process's resident high-water mark, interpreter and numpy included) is its own. The
fast/reference ratio compares the two modes on the same workload in the same invocation; the
reference loop is skipped above ``--max-reference`` requests (it would take many minutes) and the
ratio is then reported for the largest size where both ran.

Scenarios, both on the ``llama2-70b-a100-tp2`` preset (`CalibratedCost` fitted to Vidur's A100
profiles), block size 16:

- ``sharegpt``: ShareGPT-8K lengths from ../shared/data/vidur (10,000 rows drawn with seed 42,
  capped at 4,096 total tokens by shrinking prompt and output in proportion, as Vidur's
  ``max_tokens``), Poisson 0.5 req/s. Configured as Vidur ran it (see bench/vidur_fidelity.py):
  KV capacity 53,248 tokens (Vidur's memory planner), vllm in Vidur's V0 configuration (4,096-token
  budget, 128 seqs, watermark 0.01, no chunked prefill, prefill-first, padded prompt budget,
  last-arrived victim, a free block per decode), sarathi with chunk 512, 128 seqs, watermark 0.01.
- ``default``: the embedded LMSYS-like workload at 3.0 req/s with KV = 16,492 tokens (the MC-SF
  paper's Llama-2-70B setting, ALGORITHMS.md R2). This configuration saturates at about 3.4 req/s
  with vllm (throughput flat at 3.35-3.38 req/s for offered 4-8 req/s), so 3.0 req/s is near
  saturation (60 % mean KV use, no preemptions yet; at 3.2 req/s preemptions start).

Profile (cProfile, 10k requests, vllm, fast path; cumulative shares of the simulation loop —
reproduce with ``python -m cProfile`` on ``--one``; pyinstrument gives the same picture):

    part                                          ShareGPT (20.3k policy calls,   default (9.5k calls,
                                                  15.4k stretches, 214k iters)    13.2k stretches, 52k iters)
    policy.schedule (vllm, O(residents) per call) 27 %                            31 %
    stepped iterations: _run_iteration             7 % (cost model 5 %)           23 % (cost model 13 %)
                        _validate                  8 %                            11 %
    stretches: pricing (_decode_run)              20 %                             9 %
               _fast_forward (state updates)      15 % (per-resident loop 10 %)   13 % (10 %)
               _pure_length (one resident scan)    5 %                             7 %
    view, arrivals, evictions                      3 %                             2 %

So the fast path has removed the per-iteration work; what is left is per *event*: a policy call
over every resident (O(B) Python in the policy), the iteration that follows it (validation and
state updates over every resident, and a `CalibratedCost.iteration_time` of ~30 µs), and the
stretch bookkeeping (one pass over the residents, ~25 numpy calls). The next factors would come
from an incremental policy (O(changes) per call), an engine keeping request state in arrays so
that a stretch costs O(1) Python, and a cheaper calibrated cost for mixed batches.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SHAREGPT = (REPO_ROOT.parent / "shared" / "data" / "vidur" / "data" / "processed_traces"
            / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv")
VIDUR_LOOP_S_10K = 39.0     # Vidur's event loop on ShareGPT 10k, vllm (issue 7)


def sharegpt_workload(num_requests: int, rate: float = 0.5, seed: int = 42, max_tokens: int = 4096):
    from kvsched.workload import Poisson, Workload
    table = np.loadtxt(SHAREGPT, delimiter=",", skiprows=1, usecols=(0, 1), dtype=np.int64)
    rng = np.random.default_rng(seed)
    rows = table[rng.choice(len(table), size=num_requests, replace=num_requests > len(table))]
    prompt, output = rows[:, 0].astype(np.float64), rows[:, 1].astype(np.float64)
    scale = np.minimum(1.0, max_tokens / (prompt + output))
    prompt = np.maximum(1, np.floor(prompt * scale)).astype(np.int64)
    output = np.maximum(1, np.floor(output * scale)).astype(np.int64)
    arrival = Poisson(rate).sample(num_requests, rng)
    return Workload.build(arrival, prompt, output, name="sharegpt-8k")


PRESET = "llama2-70b-a100-tp2"
SCENARIOS = {
    "sharegpt": dict(capacity=53_248, rate=0.5,      # Vidur's setup, as bench/vidur_fidelity.py
                     policies={"vllm": dict(enable_chunked_prefill=False, watermark=0.01,
                                            max_num_batched_tokens=4096, max_num_seqs=128,
                                            prefill_first=True, padded_prefill_budget=True,
                                            preempt_victim="last_arrived", decode_needs_free_block=True),
                               "sarathi": dict(chunk_size=512, max_num_seqs=128, watermark=0.01)}),
    "default": dict(capacity=16_492, rate=3.0,
                    policies={"vllm": {}, "sarathi": {}, "mcsf": {}, "amin": {}}),
}


def run_one(scenario: str, num_requests: int, policy: str, fast: bool) -> dict:
    """One simulation in this process; returns its figures (wall time excludes building inputs)."""
    from kvsched import Simulator, default_workload
    from kvsched.policies import make
    from kvsched.predictors import apply_predictor
    from kvsched.presets import get_preset
    spec, preset = SCENARIOS[scenario], get_preset(PRESET)
    if scenario == "sharegpt":
        workload = sharegpt_workload(num_requests, rate=spec["rate"])
    else:
        workload = default_workload(num_requests, rate=spec["rate"], seed=1)
    policy_obj = make(policy, **spec["policies"][policy])
    if policy_obj.tags.uses_predictions:
        workload = apply_predictor(workload, "exact")
    sim = Simulator(preset.cost, spec["capacity"] or preset.kv_capacity_tokens, block_size=preset.block_size,
                    fast=fast)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = sim.run(workload, policy_obj)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    summary = result.summary()
    return dict(wall_s=wall, cpu_s=cpu, iterations=result.num_iterations, finished=summary.num_finished,
                evictions=summary.num_evictions, mean_latency=summary.mean_latency,
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def queue_scaling(policies: list[str], sizes: tuple[int, ...]) -> None:
    """Per-iteration time with a long waiting queue: N requests at t=0 (prompt 20, output 8
    tokens) in a KV cache that holds about 9 of them, so the queue drains from N to 0 and is N/2
    long on average. Linear growth of the per-iteration time in N means O(waiting) work per
    iteration; the target is that it must not grow quadratically."""
    from kvsched import Simulator, UnitTime
    from kvsched.policies import make
    from kvsched.predictors import apply_predictor
    from kvsched.workload import AllAtZero, Fixed, synthesize
    print("\nper-iteration time (µs) vs waiting queue (N at t=0, mean queue N/2), fast path on")
    print(f"{'policy':<8} " + " ".join(f"{'N=' + format(n, ','):>10}" for n in sizes) + "   growth 10x N")
    for name in policies:
        cells = []
        for n in sizes:
            workload = synthesize(n, AllAtZero(), Fixed(20), Fixed(8), np.random.default_rng(0))
            policy = make(name)
            if policy.tags.uses_predictions:
                workload = apply_predictor(workload, "exact")
            started = time.process_time()
            result = Simulator(UnitTime(), 256, block_size=16).run(workload, policy)
            cells.append(1e6 * (time.process_time() - started) / result.num_iterations)
        growth = cells[-1] / cells[-2] if len(cells) > 1 else float("nan")
        print(f"{name:<8} " + " ".join(f"{c:>10.1f}" for c in cells) + f"   {growth:>6.1f}x", flush=True)


def run_isolated(scenario: str, num_requests: int, policy: str, fast: bool, timeout: float) -> dict:
    args = [sys.executable, __file__, "--one", json.dumps([scenario, num_requests, policy, fast])]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return dict(error=f"over {timeout:.0f} s")
    except subprocess.CalledProcessError as exc:
        return dict(error=(exc.stderr.strip().splitlines() or ["failed"])[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (10k and 100k default)")
    parser.add_argument("--max-reference", type=int, default=10_000,
                        help="largest workload on which the reference loop also runs")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--only", default=None, help="comma-separated scenarios or policies to run")
    parser.add_argument("--no-queue", action="store_true", help="skip the waiting-queue scaling table")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*json.loads(args.one))))
        return

    from kvsched.policies.registry import registered
    known = registered()
    plan = [("sharegpt", 10_000)]
    plan += [("default", n) for n in ((10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000))]
    only = set(args.only.split(",")) if args.only else None
    header = (f"{'scenario':<9} {'requests':>9} {'policy':<8} {'wall s':>7} {'cpu s':>7} {'ref cpu':>8} "
              f"{'ratio':>6} {'req/s':>9} {'iter/s':>9} {'iters':>9} {'evict':>6} {'peak MB':>8}")
    print("fast path; 'ref cpu': the reference loop on the same workload; ratio = ref cpu / cpu;\n"
          "req/s and iter/s per CPU second (the machine may be shared: wall >= cpu)")
    print(header)
    print("-" * len(header))
    for scenario, n in plan:
        for policy in SCENARIOS[scenario]["policies"]:
            if only and not ({scenario, policy} & only):
                continue
            if policy not in known:
                print(f"{scenario:<9} {n:>9,} {policy:<8} (not registered on this branch)")
                continue
            fast = run_isolated(scenario, n, policy, True, args.timeout)
            ref = (run_isolated(scenario, n, policy, False, args.timeout)
                   if n <= args.max_reference else None)
            if "error" in fast:
                print(f"{scenario:<9} {n:>9,} {policy:<8} fast run failed: {fast['error']}")
                continue
            ref_s = "-" if ref is None else (ref.get("error", "") or f"{ref['cpu_s']:.2f}")[:8]
            ratio = ("-" if ref is None or "error" in ref else f"{ref['cpu_s'] / fast['cpu_s']:.1f}x")
            print(f"{scenario:<9} {n:>9,} {policy:<8} {fast['wall_s']:>7.2f} {fast['cpu_s']:>7.2f} {ref_s:>8} "
                  f"{ratio:>6} {n / fast['cpu_s']:>9,.0f} {fast['iterations'] / fast['cpu_s']:>9,.0f} "
                  f"{fast['iterations']:>9,} {fast['evictions']:>6,} {fast['peak_rss_mb']:>8.0f}",
                  flush=True)
            if scenario == "sharegpt" and policy == "vllm":
                print(f"{'':<9} vs Vidur's event loop ({VIDUR_LOOP_S_10K:.0f} s, vllm, 10k): "
                      f"{VIDUR_LOOP_S_10K / fast['wall_s']:.0f}x faster (wall), "
                      f"{VIDUR_LOOP_S_10K / fast['cpu_s']:.0f}x (cpu)", flush=True)
    if not args.no_queue:
        names = [p for p in ("vllm", "sarathi", "mcsf", "amin") if p in known]
        queue_scaling(names, (10, 100, 1_000) if args.quick else (10, 100, 1_000, 10_000))


if __name__ == "__main__":
    main()
