#!/usr/bin/env python3
"""The roofline A100 model against CalibratedCost, against the profiles, and in the Vidur fidelity run.

1. Iteration times of `RooflineCost` (shipped config, ``a100-80gb``, fp16, the fitted efficiencies)
   against the calibrated preset of the same (model, TP) at decode batches 1–256 (1,024 context
   tokens per sequence) and single prefills of 128–8,192 tokens; error = roofline / calibrated − 1.
2. Both against the profiles themselves: per layer, linear + elementwise + decode attention of
   Llama-2-70B TP2 at the profiled decode points (``mlp.csv`` + ``attention.csv`` medians).
3. ``bench/vidur_fidelity.py``'s run (1,000 ShareGPT requests, Llama-2-70B TP2, Vidur's 53,248-token
   capacity) with the roofline in place of the calibrated preset, against Vidur's results.

Run: ``python bench/roofline_vs_calibrated.py [--profiles DIR] [--skip-fidelity]`` (the fidelity
part needs ``../shared/data/vidur/runs``, about a minute).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np

from kvsched.cost.gpus import get_gpu
from kvsched.cost.models import BatchStats
from kvsched.cost.presets import get_preset
from kvsched.cost.roofline import RooflineCost, load_model_config
from kvsched.engine.simulator import Simulator
from kvsched.policies import make

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared" / "data" / "vidur"
PAIRS = {"llama2-7b-a100": ("llama-2-7b", 1), "llama3-8b-a100": ("llama-3-8b", 1),
         "llama2-70b-a100-tp2": ("llama-2-70b", 2), "llama2-70b-a100-tp4": ("llama-2-70b", 4),
         "llama2-70b-a100-tp8": ("llama-2-70b", 8)}
DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PREFILLS = (128, 256, 512, 1024, 2048, 4096, 8192)
CONTEXT_PER_SEQ = 1024


def a100_roofline(config: str, tensor_parallel: int) -> RooflineCost:
    return RooflineCost(load_model_config(config), get_gpu("a100-80gb"), tensor_parallel, "fp16")


def decode(n: int) -> BatchStats:
    return BatchStats(num_decode_seqs=n, decode_context_tokens=n * CONTEXT_PER_SEQ)


def prefill(p: int) -> BatchStats:
    return BatchStats(num_prefill_tokens=p, num_prefill_seqs=1, prefill_context_tokens=p, prefill_attention_work=p * p)


def against_calibrated() -> None:
    print(f"1. roofline (A100-80GB datasheet, fitted efficiencies) vs CalibratedCost, ms per iteration; "
          f"decodes at {CONTEXT_PER_SEQ} context tokens each")
    for preset, (config, tp) in PAIRS.items():
        roofline, calibrated = a100_roofline(config, tp), get_preset(preset).cost
        errors = []
        for kind, sizes, make_batch in (("decode B", DECODE_BATCHES, decode), ("prefill P", PREFILLS, prefill)):
            cells = []
            for size in sizes:
                r, c = roofline.iteration_time(make_batch(size)), calibrated.iteration_time(make_batch(size))
                errors.append(r / c - 1)
                cells.append(f"{size}: {r * 1e3:.1f}/{c * 1e3:.1f} ({r / c - 1:+.0%})")
            print(f"  {preset:<20} {kind:<9} " + ", ".join(cells))
        print(f"  {preset:<20} mean |error| {np.mean(np.abs(errors)):.1%}, max {np.max(np.abs(errors)):.1%}")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def against_profiles(profiles: Path) -> None:
    ops = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
           "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
    mlp = {int(r["num_tokens"]): r for r in _rows(profiles / "compute/a100/meta-llama/Llama-2-70b-hf/mlp.csv")
           if r["num_tensor_parallel_workers"] == "2"}
    attention = {(int(r["batch_size"]), int(r["kv_cache_size"])): float(r["time_stats.attn_decode.median"])
                 for r in _rows(profiles / "a100/attention.csv") if r["is_prefill"] == "False"}
    roofline, calibrated = a100_roofline("llama-2-70b", 2), get_preset("llama2-70b-a100-tp2").cost
    print("2. Llama-2-70B TP2 per layer, linear + elementwise + decode attention vs the profiles (ms)")
    errors = {"roofline": [], "calibrated": []}
    for batch in (1, 8, 16, 32, 64, 128):
        cells = []
        for context in (512, 1024, 2048, 4032):
            if batch not in mlp or (batch, context) not in attention:
                continue
            measured = sum(float(mlp[batch][f"time_stats.{op}.median"]) for op in ops) + attention[(batch, context)]
            stats = BatchStats(num_decode_seqs=batch, decode_context_tokens=batch * context)
            r_parts, c_parts = roofline.breakdown(stats), calibrated.breakdown(stats)
            r = (r_parts["gemm"] + r_parts["elementwise"] + r_parts["attn_decode"]) / 80 * 1e3
            c = (c_parts["linear"] + c_parts["elementwise"] + c_parts["attn_decode"]) / 80 * 1e3
            errors["roofline"].append(r / measured - 1)
            errors["calibrated"].append(c / measured - 1)
            cells.append(f"ctx {context}: {measured:.3f} roof {r / measured - 1:+.0%} cal {c / measured - 1:+.0%}")
        print(f"  B={batch:<4} " + ", ".join(cells))
    for name, e in errors.items():
        print(f"  {name:<10} MAPE {np.mean(np.abs(e)):.1%}, max {np.max(np.abs(e)):.1%}")


def fidelity(run_dir: Path) -> None:
    spec = importlib.util.spec_from_file_location("vidur_fidelity", REPO_ROOT / "bench" / "vidur_fidelity.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("vidur_fidelity", bench)
    spec.loader.exec_module(bench)
    bench.check_config(run_dir)
    workload = bench.load_workload(run_dir)
    costs = {"calibrated": get_preset(bench.PRESET).cost, "roofline": a100_roofline("llama-2-70b", 2)}
    print(f"3. Vidur fidelity run, KV {bench.VIDUR_KV_CAPACITY_TOKENS} tokens: error against Vidur")
    print(f"  {'scheduler':<9} {'cost':<10} " + " ".join(f"{m} {s:<4}" for m in bench.METRICS for s in bench.STATS))
    for label, (name, parameters, vidur_run) in bench.POLICIES.items():
        vidur, _ = bench.vidur_results(run_dir, vidur_run)
        for cost_name, cost in costs.items():
            result = Simulator(cost, bench.VIDUR_KV_CAPACITY_TOKENS, block_size=16).run(workload, make(name, **parameters))
            arrival = workload.arrival_time
            ours = {"e2e": bench.stats(result.finish_time - arrival), "ttft": bench.stats(result.first_token_time - arrival)}
            cells = [f"{ours[m][s] / vidur[m][s] - 1:+8.1%}" for m in bench.METRICS for s in bench.STATS]
            print(f"  {label:<9} {cost_name:<10} " + " ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help="the vidur data folder (profiling/, runs/)")
    parser.add_argument("--skip-fidelity", action="store_true")
    args = parser.parse_args(argv)
    against_calibrated()
    profiles = args.shared / "data" / "profiling"
    if profiles.is_dir():
        against_profiles(profiles)
    else:
        print(f"2. skipped: {profiles} not found")
    run_dir = args.shared / "runs" / "sharegpt_llama2-70b_tp2_a100_qps0.5_n1000"
    if not args.skip_fidelity and run_dir.is_dir():
        fidelity(run_dir)
    elif not args.skip_fidelity:
        print(f"3. skipped: {run_dir} not found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
