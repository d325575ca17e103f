"""Engine speed: simulated requests/s and iterations/s per engine, ratios, peak memory.

    python bench/engine_speed.py            # the full set (1M requests included: minutes)
    python bench/engine_speed.py --quick    # a smaller set (about a minute)

Three engines give identical results (tests/test_fastpath.py, tests/engine/test_compiled.py):

- ``compiled``: `kvsched.engine.compiled`, the numba kernels of `vllm` and `sarathi` — what
  ``Simulator()`` runs for them when numba is installed;
- ``python``: the Python engine's fast path (``Simulator(compiled=False)``), which every other
  policy uses;
- ``reference``: the reference loop (``Simulator(fast=False)``), asked at every iteration.

Every (scenario, policy, engine) runs in a fresh Python process, so its peak memory (``ru_maxrss``,
the process's resident high-water mark, interpreter, numpy and numba included) is its own. A
compiled run first runs a one-request workload, which loads the kernels from numba's on-disk cache
(compiling them the first time, once per installation: about 15 s); that load is printed apart
("load s") and is not in the run's time. Ratios compare engines on the same workload in the same
invocation; the reference loop is skipped above ``--max-reference`` requests and the Python fast
path above ``--max-python`` for the compiled policies (they would take minutes).

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
  saturation (60 % mean KV use, preemptions at 100k requests and more).

Where the Python fast path spends its time (pyinstrument, 10k requests, vllm; shares of the loop):

    part                                          ShareGPT (20.3k policy calls,   default (9.5k calls,
                                                  15.4k stretches, 214k iters)    13.2k stretches, 52k iters)
    policy.schedule (vllm, O(residents) per call) 26 %                            30 %
    stepped iterations: _run_iteration             7 %                            16 %
                        _validate                 10 %                            14 %
    stretches: pricing (_decode_run)              23 %                             6 %
               _fast_forward + _pure_length       20 %                            27 %
    view, arrivals, evictions, loop               14 %                             7 %

What is left there is per *event*, not per iteration: a policy call over every resident (Python,
O(residents)), the stepped iteration after it (validation and state updates over every resident),
and each stretch's bookkeeping and per-iteration pricing. The compiled kernels remove the
interpreter from all of it (and step every iteration: no fast-forwarding is needed at ~10 ns per
resident per iteration).
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
    from kvsched.workload.synthetic import Poisson, Workload
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


ENGINES = {"compiled": dict(), "python": dict(compiled=False), "reference": dict(fast=False)}


def run_one(scenario: str, num_requests: int, policy: str, engine: str) -> dict:
    """One simulation in this process; returns its figures (wall time excludes building inputs
    and, for the compiled engine, loading the kernels)."""
    from kvsched import Simulator, Workload, default_workload
    from kvsched.policies import make
    from kvsched.workload.predictors import apply_predictor
    from kvsched.cost.presets import get_preset
    spec, preset = SCENARIOS[scenario], get_preset(PRESET)
    if scenario == "sharegpt":
        workload = sharegpt_workload(num_requests, rate=spec["rate"])
    else:
        workload = default_workload(num_requests, rate=spec["rate"], seed=1)
    policy_obj = make(policy, **spec["policies"][policy])
    if policy_obj.tags.uses_predictions:
        workload = apply_predictor(workload, "exact")
    sim = Simulator(preset.cost, spec["capacity"] or preset.kv_capacity_tokens, block_size=preset.block_size,
                    **ENGINES[engine])
    load = 0.0
    if engine == "compiled":
        from kvsched.engine import compiled
        if compiled.unsupported(sim, policy_obj, workload) is not None:
            return dict(error="no compiled kernel")
        started = time.perf_counter()
        sim.run(apply_predictor(Workload.build([0.0], [8], [4]), "exact"), policy_obj)
        load = time.perf_counter() - started
    started, cpu_started = time.perf_counter(), time.process_time()
    result = sim.run(workload, policy_obj)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    summary = result.summary()
    return dict(wall_s=wall, cpu_s=cpu, load_s=load, iterations=result.num_iterations,
                finished=summary.num_finished, evictions=summary.num_evictions,
                mean_latency=summary.mean_latency,
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def queue_scaling(policies: list[str], sizes: tuple[int, ...]) -> None:
    """Per-iteration time with a long waiting queue: N requests at t=0 (prompt 20, output 8
    tokens) in a KV cache that holds about 9 of them, so the queue drains from N to 0 and is N/2
    long on average. Linear growth of the per-iteration time in N means O(waiting) work per
    iteration; the target is that it must not grow quadratically."""
    from kvsched import Simulator, UnitTime
    from kvsched.policies import make
    from kvsched.workload.predictors import apply_predictor
    from kvsched.workload.synthetic import AllAtZero, Fixed, Workload, synthesize
    print("\nper-iteration time (µs) vs waiting queue (N at t=0, mean queue N/2); 'python': the Python")
    print("engine, whose policy code is also what runs inside vLLM (bench/mcsf_decision_cost.py times it alone)")
    print(f"{'policy':<18} " + " ".join(f"{'N=' + format(n, ','):>10}" for n in sizes) + "   growth 10x N")
    for name in policies:
        for engine in ("compiled", "python"):
            sim = Simulator(UnitTime(), 256, block_size=16, **ENGINES[engine])
            sim.run(apply_predictor(Workload.build([0.0], [8], [4]), "exact"), make(name))   # load the kernels
            cells = []
            for n in sizes:
                workload = synthesize(n, AllAtZero(), Fixed(20), Fixed(8), np.random.default_rng(0))
                policy = make(name)
                if policy.tags.uses_predictions:
                    workload = apply_predictor(workload, "exact")
                started = time.process_time()
                result = sim.run(workload, policy)
                cells.append(1e6 * (time.process_time() - started) / result.num_iterations)
            growth = cells[-1] / cells[-2] if len(cells) > 1 else float("nan")
            label = f"{name} ({engine})"
            print(f"{label:<18} " + " ".join(f"{c:>10.1f}" for c in cells) + f"   {growth:>6.1f}x", flush=True)


def run_isolated(scenario: str, num_requests: int, policy: str, engine: str, timeout: float) -> dict:
    args = [sys.executable, __file__, "--one", json.dumps([scenario, num_requests, policy, engine])]
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
    parser.add_argument("--max-python", type=int, default=100_000,
                        help="largest workload on which the Python fast path also runs a compiled policy")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--only", default=None, help="comma-separated scenarios or policies to run")
    parser.add_argument("--no-queue", action="store_true", help="skip the waiting-queue scaling table")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*json.loads(args.one))))
        return

    from kvsched.engine import compiled
    from kvsched.policies.registry import registered
    known = registered()
    plan = [("sharegpt", 10_000)]
    plan += [("default", n) for n in ((10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000))]
    only = set(args.only.split(",")) if args.only else None
    print("engine: the one Simulator() picks (compiled for vllm/sarathi when numba is installed"
          f"{'' if compiled.available() else ': it is NOT installed here'}); 'load s': loading its kernels;\n"
          "'python' / 'ref': CPU s of the Python fast path / reference loop on the same workload, "
          "x = their ratio to the engine's CPU s;\nreq/s and iter/s per CPU second (the machine may be "
          "shared: wall >= cpu)")
    header = (f"{'scenario':<9} {'requests':>9} {'policy':<8} {'engine':<8} {'wall s':>7} {'cpu s':>7} "
              f"{'load s':>6} {'python':>14} {'ref':>14} {'req/s':>10} {'iter/s':>11} {'iters':>9} "
              f"{'evict':>6} {'peak MB':>8}")
    print(header)
    print("-" * len(header))
    for scenario, n in plan:
        for policy in SCENARIOS[scenario]["policies"]:
            if only and not ({scenario, policy} & only):
                continue
            if policy not in known:
                print(f"{scenario:<9} {n:>9,} {policy:<8} (not registered on this branch)")
                continue
            main_run, engine = run_isolated(scenario, n, policy, "compiled", args.timeout), "compiled"
            if "error" in main_run and main_run["error"] == "no compiled kernel":
                main_run, engine = run_isolated(scenario, n, policy, "python", args.timeout), "python"
            if "error" in main_run:
                print(f"{scenario:<9} {n:>9,} {policy:<8} run failed: {main_run['error']}")
                continue
            cpu = main_run["cpu_s"]

            def other(name: str, limit: int) -> str:
                if n > limit:
                    return "-"
                figures = run_isolated(scenario, n, policy, name, args.timeout)
                if "error" in figures:
                    return figures["error"][:14]
                return f"{figures['cpu_s']:.2f} ({figures['cpu_s'] / cpu:.0f}x)"

            python_cell = other("python", args.max_python) if engine == "compiled" else "(engine)"
            ref_cell = other("reference", args.max_reference)
            print(f"{scenario:<9} {n:>9,} {policy:<8} {engine:<8} {main_run['wall_s']:>7.2f} {cpu:>7.2f} "
                  f"{main_run['load_s']:>6.2f} {python_cell:>14} {ref_cell:>14} {n / cpu:>10,.0f} "
                  f"{main_run['iterations'] / cpu:>11,.0f} {main_run['iterations']:>9,} "
                  f"{main_run['evictions']:>6,} {main_run['peak_rss_mb']:>8.0f}", flush=True)
            if scenario == "sharegpt" and policy == "vllm":
                print(f"{'':<9} vs Vidur's event loop ({VIDUR_LOOP_S_10K:.0f} s, vllm, 10k): "
                      f"{VIDUR_LOOP_S_10K / main_run['wall_s']:.0f}x faster (wall), "
                      f"{VIDUR_LOOP_S_10K / cpu:.0f}x (cpu)", flush=True)
    if not args.no_queue:
        names = [p for p in ("vllm", "sarathi", "mcsf", "amin") if p in known]
        queue_scaling(names, (10, 100, 1_000) if args.quick else (10, 100, 1_000, 10_000))


if __name__ == "__main__":
    main()
