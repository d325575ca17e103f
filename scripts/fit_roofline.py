#!/usr/bin/env python3
"""Fit the roofline cost model's efficiencies to Vidur's A100 operator profiles.

Reads the profiles as ``scripts/fit_calibration.py`` does (``--profiles``, default
``../shared/data/vidur/data/profiling``), computes each profiled operator's FLOPs and bytes with
`kvsched.cost.roofline.Shard` (the same functions `RooflineCost` prices), and fits per part
(`kvsched.cost.roofline.PARTS`) one `PartFit` (``fixed + max(C, M) + overlap · min(C, M)``) shared
by every model and TP degree, against the A100-80GB datasheet row.
Writes ``src/kvsched/cost/data/roofline_efficiencies.json`` and prints the held-out errors:

- per operator: MAPE on a seeded random 20 % of the rows, the fit using the other 80 %;
- per model: the same held-out rows, split by model (and TP);
- cross-model: for the GEMMs and elementwise ops (profiled for three models), fit without one
  model's rows and predict all of them. Attention was profiled for Llama-2-70B TP2 only and the
  all-reduce has no model, so they have no cross-model figure.

Fitting: the efficiencies and the overlap by grid search (coarse, then fine around the best), the fixed time in
closed form for each grid point (the least-squares fit of relative error, clipped at 0); the
objective is the training MAPE. (Weighting each octave of operator size equally, to favour the
small decode batches the profiles hold few of, was tried: it made the elementwise and all-reduce
fits worse and the fidelity run no better.) Profile times are ``time_stats.<op>.median`` (ms per layer per GPU).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from kvsched.cost.gpus import get_gpu  # noqa: E402
from kvsched.cost.models import BatchStats  # noqa: E402
from kvsched.cost.roofline import PARTS, Shard, causal_pairs, load_model_config, prefill_kv_passes  # noqa: E402

_spec = importlib.util.spec_from_file_location("fit_calibration", Path(__file__).with_name("fit_calibration.py"))
calibration = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(calibration)

DEFAULT_OUTPUT = REPO_ROOT / "src" / "kvsched" / "cost" / "data" / "roofline_efficiencies.json"
GPU = "a100-80gb"
CONFIGS = {"meta-llama/Llama-2-70b-hf": "llama-2-70b", "meta-llama/Llama-2-7b-hf": "llama-2-7b",
           "meta-llama/Meta-Llama-3-8B": "llama-3-8b"}
MS = 1e-3


# ---------------------------------------------------------------------------- rows: (group, flops, bytes, seconds)
def compute_rows(profiles: Path) -> dict[str, dict[str, np.ndarray]]:
    """gemm and elementwise rows of every profiled model and TP degree."""
    out = {"gemm": [], "elementwise": []}
    for model, shape in calibration.MODELS.items():
        table = calibration.read_csv(profiles / "compute" / "a100" / model / "mlp.csv")
        table = calibration.subset(table, table["n_expanded_embd"] == shape["n_expanded_embd"])
        config = load_model_config(CONFIGS[model])
        for tokens, tp, *times in zip(table["num_tokens"], table["num_tensor_parallel_workers"],
                                      *(table[f"time_stats.{op}.median"] for op in calibration.LINEAR_OPS
                                        + calibration.ELEMENTWISE_OPS)):
            shard = Shard(config, int(tp), 2)
            k = len(calibration.LINEAR_OPS)
            label = f"{CONFIGS[model]} TP{int(tp)}"
            out["gemm"].append((label, *shard.gemm(int(tokens)), np.nansum(times[:k]) * MS))
            out["elementwise"].append((label, *shard.elementwise(int(tokens)), np.nansum(times[k:]) * MS))
    return {part: _columns(rows) for part, rows in out.items()}


def attention_rows(profiles: Path) -> dict[str, dict[str, np.ndarray]]:
    table = calibration.read_csv(profiles / "a100" / "attention.csv")
    shard = Shard(load_model_config("llama-2-70b"), int(table["num_tensor_parallel_workers"][0]), 2)
    prefill, decode = [], []
    for flag, batch, chunk, kv, tp, yp, yd in zip(
            table["is_prefill"], table["batch_size"], table["prefill_chunk_size"], table["kv_cache_size"],
            table["num_tensor_parallel_workers"], table["time_stats.attn_prefill.median"],
            table["time_stats.attn_decode.median"]):
        if flag == "True":
            chunk, kv = int(chunk), int(kv)
            stats = BatchStats(num_prefill_tokens=chunk, num_prefill_seqs=1, prefill_context_tokens=kv + chunk,
                               prefill_attention_work=chunk * (kv + chunk))
            prefill.append(("llama-2-70b TP2", *shard.attention(chunk, causal_pairs(stats), kv + chunk,
                                                                   prefill_kv_passes(stats)), yp * MS))
        else:
            context = int(batch) * int(kv)
            decode.append(("llama-2-70b TP2", *shard.attention(int(batch), context, context), yd * MS))
    return {"attn_prefill": _columns(prefill), "attn_decode": _columns(decode)}


def all_reduce_rows(profiles: Path) -> dict[str, np.ndarray]:
    rows = []
    for tp, node in calibration.ALL_REDUCE_SOURCES.items():
        table = calibration.read_csv(profiles / "network" / node / "all_reduce.csv")
        keep = ((table["num_workers"] == tp) & (table["devices_per_node"] == tp)
                & (table["collective"] == "all_reduce"))
        for size, y in zip(table["size"][keep], table["time_stats.all_reduce.median"][keep]):
            rows.append((f"TP{tp} {node}", 0.0, 2 * (tp - 1) / tp * size, y * MS))   # size: message bytes
    return _columns(rows)


def _columns(rows: list[tuple]) -> dict[str, np.ndarray]:
    label, flops, nbytes, y = zip(*rows)
    return {"label": np.array(label), "flops": np.array(flops, float), "bytes": np.array(nbytes, float),
            "y": np.array(y, float)}


# ---------------------------------------------------------------------------- fitting
def fit_part(rows: dict[str, np.ndarray], peak: float, bandwidth: float) -> dict[str, float]:
    """(fixed_time, compute, memory, overlap) minimising the MAPE of `PartFit.time` on `rows`."""
    compute_time, memory_time, y = rows["flops"] / peak, rows["bytes"] / bandwidth, rows["y"]
    coarse = np.linspace(0.02, 1.0, 26)
    flops_free = not rows["flops"].any()   # elementwise, all-reduce: no compute term to fit
    overlaps = np.zeros(1) if flops_free else np.linspace(0.0, 1.0, 11)
    best = min(_grid(compute_time, memory_time, y, np.ones(1) if flops_free else coarse, coarse, a) + (a,)
               for a in overlaps)
    _, c, m, _, overlap = best
    fine_c = np.ones(1) if flops_free else np.clip(np.linspace(c - 0.04, c + 0.04, 41), 1e-3, 1.0)
    fine_m = np.clip(np.linspace(m - 0.04, m + 0.04, 41), 1e-3, 1.0)
    _, c, m, fixed = _grid(compute_time, memory_time, y, fine_c, fine_m, overlap)
    return {"fixed_time": float(f"{fixed:.6g}"), "compute": round(float(c), 4), "memory": round(float(m), 4),
            "overlap": round(float(overlap), 2)}


def _grid(compute_time, memory_time, y, compute_grid, memory_grid, overlap):
    """(MAPE, compute, memory, fixed) best over the grid; the fixed time in closed form (least
    squares of relative error) for each point."""
    w = 1.0 / y
    best = (np.inf, 1.0, 1.0, 0.0)
    for c in compute_grid:
        compute, memory = compute_time[None, :] / c, memory_time[None, :] / memory_grid[:, None]
        base = np.maximum(compute, memory) + overlap * np.minimum(compute, memory)
        fixed = np.clip(((y - base) * w * w).sum(axis=1) / (w * w).sum(), 0.0, None)
        score = (np.abs(base + fixed[:, None] - y) * w).mean(axis=1)
        i = int(np.argmin(score))
        if score[i] < best[0]:
            best = (float(score[i]), float(c), float(memory_grid[i]), float(fixed[i]))
    return best


def predict(fit: dict[str, float], rows, peak: float, bandwidth: float) -> np.ndarray:
    compute, memory = rows["flops"] / (peak * fit["compute"]), rows["bytes"] / (bandwidth * fit["memory"])
    return fit["fixed_time"] + np.maximum(compute, memory) + fit["overlap"] * np.minimum(compute, memory)


def mape(predicted: np.ndarray, y: np.ndarray) -> float:
    return round(float(np.mean(np.abs(predicted - y) / y) * 100), 2)


def take(rows, mask):
    return {k: v[mask] for k, v in rows.items()}


def fit_everything(profiles: Path, seed: int, holdout: float) -> dict:
    gpu = get_gpu(GPU)
    groups = {**compute_rows(profiles), **attention_rows(profiles), "all_reduce": all_reduce_rows(profiles)}
    rng = np.random.default_rng(seed)
    efficiencies, per_operator, per_model, cross_model = {}, {}, {}, {}
    for part in PARTS:
        rows = groups[part]
        bandwidth = gpu.interconnect_bandwidth / 2 if part == "all_reduce" else gpu.hbm_bandwidth
        test = calibration.holdout_mask(len(rows["y"]), rng, holdout)
        fit = fit_part(take(rows, ~test), gpu.dense_bf16_flops, bandwidth)
        predicted = predict(fit, rows, gpu.dense_bf16_flops, bandwidth)
        per_operator[part] = {"mape": mape(predicted[test], rows["y"][test]), "num_test": int(test.sum())}
        per_model[part] = {label: mape(predicted[test & (rows["label"] == label)],
                                       rows["y"][test & (rows["label"] == label)])
                           for label in sorted(set(rows["label"]))}
        efficiencies[part] = fit_part(rows, gpu.dense_bf16_flops, bandwidth)   # shipped: all rows
        if part in ("gemm", "elementwise"):
            models = np.array([label.split(" ")[0] for label in rows["label"]])
            cross_model[part] = {}
            for model in sorted(set(models)):
                left_out = fit_part(take(rows, models != model), gpu.dense_bf16_flops, bandwidth)
                guess = predict(left_out, take(rows, models == model), gpu.dense_bf16_flops, bandwidth)
                cross_model[part][model] = mape(guess, rows["y"][models == model])
    return {"description": "kvsched roofline efficiencies, fitted by scripts/fit_roofline.py",
            "source": "Vidur A100 profiles (as calibration.json), time_stats.<op>.median; A100-80GB datasheet "
                      "peaks (kvsched.cost.gpus)",
            "gpu": GPU, "split": {"seed": seed, "holdout_fraction": holdout},
            "efficiencies": efficiencies,
            "held_out_mape": {"per_operator": per_operator, "per_model": per_model, "cross_model": cross_model}}


def print_report(result: dict) -> None:
    errors = result["held_out_mape"]
    print(f"roofline efficiencies on {result['gpu']} (fixed ms per layer, compute and memory efficiency)")
    for part, fit in result["efficiencies"].items():
        print(f"  {part:<13} fixed {fit['fixed_time'] / MS:8.4f} ms  compute {fit['compute']:.3f}  "
              f"memory {fit['memory']:.3f}  overlap {fit['overlap']:.1f}  "
              f"held-out MAPE {errors['per_operator'][part]['mape']:6.2f} %")
    print("held-out MAPE (%) per model:")
    for part, by_model in errors["per_model"].items():
        print(f"  {part:<13} " + ", ".join(f"{k} {v:.1f}" for k, v in by_model.items()))
    print("cross-model MAPE (%) (fitted without the model, all its rows predicted):")
    for part, by_model in errors["cross_model"].items():
        print(f"  {part:<13} " + ", ".join(f"{k} {v:.1f}" for k, v in by_model.items()))


def main(argv: list[str] | None = None) -> int:
    args = calibration.fit_arguments(argv, __doc__.split("\n")[0], DEFAULT_OUTPUT)
    if args is None:
        return 2
    result = fit_everything(args.profiles, args.seed, args.holdout)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print_report(result)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
