#!/usr/bin/env python3
"""Fit kvsched's calibrated batch-time models to Vidur's A100 operator profiles.

Reads ``../shared/data/vidur/data/profiling/`` (beside the repository; override with
``--profiles``) and writes the fitted coefficients to ``src/kvsched/cost/data/calibration.json``, which
the package ships (it never reads ../shared at run time). Prints the held-out fit error per
operator group.

What is fitted (all times are the profiles' ``median`` statistic, as Vidur trains on it; ms per
transformer layer on one GPU):

- ``linear``: the four GEMMs of a layer (attn_pre_proj = QKV, attn_post_proj = O, mlp_up_proj,
  mlp_down_proj) summed, as a piecewise-linear function of the tokens in the batch; one per
  (model, TP degree) from ``compute/a100/<model>/mlp.csv``.
- ``elementwise``: input_layernorm, attn_rope, post_attention_layernorm, mlp_act and add summed, the
  same way. (``emb`` is left out, as Vidur leaves out the embedding and the LM head.)
- ``attn_prefill``: ``a + b·chunk + c·chunk·kv + d·chunk²`` (kv = tokens already in the cache
  before the chunk; FlashAttention's causal work is chunk·kv + chunk²/2), from the Llama-2-70B TP2
  table ``a100/attention.csv`` (rows with ``is_prefill``).
- ``attn_decode``: a bilinear table over (decode batch size, mean context per request), the
  features Vidur's predictor uses, from the same table's decode rows.
- ``all_reduce``: piecewise-linear in message bytes, per TP degree: TP 2 from
  ``network/a100_pairwise_nvlink`` (the node Vidur's reference runs use), TP 4 and 8 from
  ``network/a100_dgx`` (NVSwitch; pairwise NVLink has no 8-GPU rows and its 4-GPU all-reduce
  crosses PCIe).

Every fit is *monotone by construction*: a piecewise-linear term is written as its first value plus
non-negative increments between knots, the decode table as the double cumulative sum of a
non-negative grid (non-decreasing in batch size and in context, and its context-dependent part
non-decreasing in batch size, which keeps derived shapes monotone when their context scale is > 1),
and the prefill coefficients are non-negative. The weighted least-squares problems are then
non-negative least squares (Lawson & Hanson 1974, `nnls`, numpy only). An iteration's time can
therefore never fall when a batch gains a sequence, context or prefill tokens; the raw profiles do
dip (GEMM tile effects), which the monotone fit smooths over.

Fit quality: rows are split by a seeded RNG (``--seed``, default 0) into a training part and a
held-out part (``--holdout``, default 20 %); coefficients are fitted on the training rows only
(weighted least squares minimising relative error), and the mean absolute percentage error (MAPE)
on the held-out rows is printed and stored next to the coefficients.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROFILES = REPO_ROOT.parent / "shared" / "data" / "vidur" / "data" / "profiling"   # override: --profiles
DEFAULT_OUTPUT = REPO_ROOT / "src" / "kvsched" / "cost" / "data" / "calibration.json"

LINEAR_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
ELEMENTWISE_OPS = ("input_layernorm", "attn_rope", "post_attention_layernorm", "mlp_act", "add")
MODELS = {  # profile folder -> rows to keep (Vidur's shape filter)
    "meta-llama/Llama-2-70b-hf": {"n_expanded_embd": 28672},
    "meta-llama/Llama-2-7b-hf": {"n_expanded_embd": 11008},
    "meta-llama/Meta-Llama-3-8B": {"n_expanded_embd": 14336},
}
# Every 8 tokens up to 256 (GEMM tile steps matter for decode batches), every 64 up to 4096, then coarser.
TOKEN_KNOTS = ((1, 2, 4) + tuple(range(8, 257, 8)) + tuple(range(320, 4097, 64))
               + (5120, 6144, 8192, 10240, 12288, 16384, 20480, 24576, 32768))
DECODE_BATCH_KNOTS = (1, 2, 4, 8, 16, 32, 64, 96, 128)
DECODE_CONTEXT_KNOTS = (0, 256, 512, 1024, 2048, 3072, 4096)
ALL_REDUCE_SOURCES = {2: "a100_pairwise_nvlink", 4: "a100_dgx", 8: "a100_dgx"}


# ---------------------------------------------------------------------------- reading
def read_csv(path: Path) -> dict[str, np.ndarray]:
    """Columns of a CSV file as arrays (float where every value parses, else str); duplicates dropped."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = sorted({tuple(r) for r in reader})
    columns = {}
    for j, name in enumerate(header):
        values = [r[j] for r in rows]
        try:
            columns[name] = np.array([float(v) if v != "" else np.nan for v in values])
        except ValueError:
            columns[name] = np.array(values)
    return columns


def subset(columns: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[mask] for k, v in columns.items()}


def holdout_mask(n: int, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """True for held-out rows: a seeded random `fraction` of the rows (at least one)."""
    test = np.zeros(n, dtype=bool)
    test[rng.permutation(n)[:max(1, round(fraction * n))]] = True
    return test


# ---------------------------------------------------------------------------- fitting
def hat_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation weights of x on `knots` (linear extrapolation at both ends)."""
    i = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, len(knots) - 2)
    t = (x - knots[i]) / (knots[i + 1] - knots[i])
    basis = np.zeros((len(x), len(knots)))
    rows = np.arange(len(x))
    basis[rows, i] = 1 - t
    basis[rows, i + 1] = t
    return basis


def relative_lstsq(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares minimising Σ((prediction − y)/y)², coefficients >= 0 (`nnls`)."""
    w = 1.0 / y
    return nnls(design * w[:, None], y * w)


def nnls(a: np.ndarray, b: np.ndarray, max_iterations: int | None = None) -> np.ndarray:
    """argmin ‖a·x − b‖ subject to x >= 0: Lawson & Hanson's active-set algorithm (*Solving Least
    Squares Problems*, 1974, ch. 23), written with numpy (scipy is not a dependency)."""
    n = a.shape[1]
    x, passive = np.zeros(n), np.zeros(n, dtype=bool)
    tolerance = 10 * np.finfo(float).eps * np.linalg.norm(a, 1) * max(a.shape)
    for _ in range(max_iterations or 3 * n):
        gradient = a.T @ (b - a @ x)
        candidates = ~passive & (gradient > tolerance)
        if not candidates.any():
            break
        passive[np.argmax(np.where(candidates, gradient, -np.inf))] = True
        while True:   # inner loop: keep the passive set's unconstrained solution feasible
            z = np.zeros(n)
            z[passive], *_ = np.linalg.lstsq(a[:, passive], b, rcond=None)
            if (z[passive] > 0).all():
                x = z
                break
            blocking = passive & (z <= 0)
            step = np.min(x[blocking] / (x[blocking] - z[blocking]))
            x = x + step * (z - x)
            passive &= x > tolerance
            x[~passive] = 0.0
    return x


def cumulative(n: int) -> np.ndarray:
    """Lower-triangular ones: values = cumulative(n) @ increments (first value, then the steps)."""
    return np.tril(np.ones((n, n)))


def mape(predicted: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.abs(predicted - y) / y) * 100)


def fit_piecewise(x, y, test, candidate_knots) -> dict:
    """Piecewise-linear fit of y(x) on the knots inside x's range; MAPE on the held-out rows."""
    train = x[~test]   # knots span the training rows only: a held-out end row left its knot unfitted (-0.0)
    knots = np.array([k for k in candidate_knots if train.min() <= k <= train.max()], dtype=float)
    if len(knots) == 0 or knots[0] > train.min():
        knots = np.r_[train.min(), knots]
    if knots[-1] < train.max():
        knots = np.r_[knots, train.max()]
    while True:   # drop knots without training rows around them (their value would be unidentified)
        support = hat_basis(x[~test], knots).sum(axis=0)
        weak = [i for i in range(1, len(knots) - 1) if support[i] < 0.5]
        if not weak:
            break
        knots = np.delete(knots, weak[0])
    steps = cumulative(len(knots))   # values = first value + non-negative increments: non-decreasing
    values = steps @ relative_lstsq(hat_basis(x[~test], knots) @ steps, y[~test])
    knots, values = with_tail_knot(x[~test], y[~test], knots, values)
    predicted = hat_basis(x[test], knots) @ values
    return {"knots": knots.tolist(), "values": _round(values), "mape": round(mape(predicted, y[test]), 2),
            "num_train": int((~test).sum()), "num_test": int(test.sum())}


def with_tail_knot(x: np.ndarray, y: np.ndarray, knots: np.ndarray, values: np.ndarray):
    """Append a knot at twice the last one, continuing with the slope of the upper half of the rows.

    `PiecewiseLinear` extrapolates with its last segment's slope, which on a short noisy segment
    can be anything down to 0 (a monotone fit may leave it flat): 8,192 tokens would then cost what
    4,096 do. The tail knot extrapolates with the non-negative slope of a line fitted (relative
    error) to the rows in the upper half of the range instead; inside the range nothing changes."""
    upper = x >= knots[-1] / 2
    _, slope = relative_lstsq(np.c_[np.ones(upper.sum()), x[upper]], y[upper])
    return np.r_[knots, 2 * knots[-1]], np.r_[values, values[-1] + slope * knots[-1]]


def _round(values) -> list[float]:
    return [float(f"{v:.6g}") for v in np.asarray(values, dtype=float)]


def fit_compute(profiles: Path, rng, holdout: float) -> tuple[dict, dict]:
    linear, elementwise = {}, {}
    for model, shape in MODELS.items():
        table = read_csv(profiles / "compute" / "a100" / model / "mlp.csv")
        table = subset(table, table["n_expanded_embd"] == shape["n_expanded_embd"])
        linear[model], elementwise[model] = {}, {}
        for tp in sorted(set(table["num_tensor_parallel_workers"].astype(int))):
            rows = subset(table, table["num_tensor_parallel_workers"] == tp)
            tokens = rows["num_tokens"]
            test = holdout_mask(len(tokens), rng, holdout)
            for group, ops, out in (("linear", LINEAR_OPS, linear), ("elementwise", ELEMENTWISE_OPS, elementwise)):
                y = sum(np.nan_to_num(rows[f"time_stats.{op}.median"]) for op in ops)
                out[model][str(tp)] = fit_piecewise(tokens, y, test, TOKEN_KNOTS)
    return linear, elementwise


def fit_attention(profiles: Path, rng, holdout: float) -> tuple[dict, dict]:
    table = read_csv(profiles / "a100" / "attention.csv")
    reference = {"model": "meta-llama/Llama-2-70b-hf", "tensor_parallel": 2,
                 "q_heads_per_gpu": int(table["n_q_head"][0]) // 2,
                 "kv_heads_per_gpu": int(table["n_kv_head"][0]) // 2,
                 "head_dim": int(table["n_embd"][0] / table["n_q_head"][0])}
    is_prefill = table["is_prefill"] == "True"

    rows = subset(table, is_prefill)
    chunk, kv, y = rows["prefill_chunk_size"], rows["kv_cache_size"], rows["time_stats.attn_prefill.median"]
    design = np.c_[np.ones_like(chunk), chunk, chunk * kv, chunk * chunk]
    test = holdout_mask(len(y), rng, holdout)
    coef = relative_lstsq(design[~test], y[~test])
    prefill = {"reference": reference, "form": "a + b*chunk + c*chunk*kv + d*chunk^2 (ms)",
               "coef": _round(coef), "mape": round(mape(design[test] @ coef, y[test]), 2),
               "num_train": int((~test).sum()), "num_test": int(test.sum()),
               "range": {"chunk": [int(chunk.min()), int(chunk.max())], "kv": [int(kv.min()), int(kv.max())]}}

    rows = subset(table, ~is_prefill)
    batch, context, y = rows["batch_size"], rows["kv_cache_size"], rows["time_stats.attn_decode.median"]
    kb, kc = np.array(DECODE_BATCH_KNOTS, float), np.array(DECODE_CONTEXT_KNOTS, float)
    basis = (hat_basis(batch, kb)[:, :, None] * hat_basis(context, kc)[:, None, :]).reshape(len(y), -1)
    test = holdout_mask(len(y), rng, holdout)
    # values[i, j] = Σ_{a<=i, b<=j} d[a, b] with d >= 0: monotone in batch and in context, and the
    # context-dependent part values[i, j] − values[i, 0] non-decreasing in batch (see the docstring)
    steps = np.kron(cumulative(len(kb)), cumulative(len(kc)))
    values = steps @ relative_lstsq(basis[~test] @ steps, y[~test])
    decode = {"reference": reference, "form": "bilinear in (decode batch size, mean context tokens) (ms)",
              "batch_knots": kb.tolist(), "context_knots": kc.tolist(),
              "values": [_round(r) for r in values.reshape(len(kb), len(kc))],
              "mape": round(mape(basis[test] @ values, y[test]), 2),
              "num_train": int((~test).sum()), "num_test": int(test.sum())}
    return prefill, decode


def fit_all_reduce(profiles: Path, rng, holdout: float) -> dict:
    out = {}
    knots = [2048 * 2 ** i for i in range(19)]
    for tp, node in ALL_REDUCE_SOURCES.items():
        table = read_csv(profiles / "network" / node / "all_reduce.csv")
        rows = subset(table, (table["num_workers"] == tp) & (table["devices_per_node"] == tp)
                      & (table["collective"] == "all_reduce"))
        size, y = rows["size"], rows["time_stats.all_reduce.median"]
        test = holdout_mask(len(y), rng, holdout)
        out[str(tp)] = {"source": f"network/{node}/all_reduce.csv", **fit_piecewise(size, y, test, knots)}
    return out


def fit_arguments(argv: list[str] | None, description: str, default_output: Path) -> argparse.Namespace | None:
    """The fit scripts' options (--profiles, --output, --seed, --holdout); None (after a one-line
    error) when the profiles folder is missing."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--profiles", type=Path, default=DEFAULT_PROFILES)
    parser.add_argument("--output", type=Path, default=default_output)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout", type=float, default=0.2)
    args = parser.parse_args(argv)
    if not args.profiles.is_dir():
        print(f"error: profiles folder {args.profiles} not found", file=sys.stderr)
        return None
    return args


def main(argv: list[str] | None = None) -> int:
    args = fit_arguments(argv, __doc__.split("\n")[0], DEFAULT_OUTPUT)
    if args is None:
        return 2
    rng = np.random.default_rng(args.seed)
    linear, elementwise = fit_compute(args.profiles, rng, args.holdout)
    prefill, decode = fit_attention(args.profiles, rng, args.holdout)
    all_reduce = fit_all_reduce(args.profiles, rng, args.holdout)
    calibration = {
        "description": "kvsched calibrated batch-time coefficients, fitted by scripts/fit_calibration.py",
        "source": "Vidur profiles (microsoft/vidur 7d47513; attention table from commit e2d00e9), A100 80GB, "
                  "time_stats.<op>.median, ms per layer per GPU",
        "gpu": "a100",
        "split": {"seed": args.seed, "holdout_fraction": args.holdout},
        "linear": linear, "elementwise": elementwise,
        "attn_prefill": prefill, "attn_decode": decode, "all_reduce": all_reduce,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(calibration, indent=1) + "\n")
    print_report(calibration)
    print(f"wrote {args.output}")
    return 0


def print_report(calibration: dict) -> None:
    print(f"held-out MAPE (%), seed {calibration['split']['seed']}, "
          f"{calibration['split']['holdout_fraction']:.0%} of rows held out")
    print(f"{'group':<12} {'model / TP':<34} {'MAPE':>6} {'test rows':>9}")
    for group in ("linear", "elementwise"):
        for model, by_tp in calibration[group].items():
            for tp, fit in by_tp.items():
                print(f"{group:<12} {model + ' TP' + tp:<34} {fit['mape']:6.2f} {fit['num_test']:9d}")
    for group in ("attn_prefill", "attn_decode"):
        fit = calibration[group]
        print(f"{group:<12} {'Llama-2-70B TP2 table':<34} {fit['mape']:6.2f} {fit['num_test']:9d}")
    for tp, fit in calibration["all_reduce"].items():
        print(f"{'all_reduce':<12} {'TP' + tp + ' ' + fit['source'].split('/')[1]:<34} {fit['mape']:6.2f} "
              f"{fit['num_test']:9d}")


if __name__ == "__main__":
    sys.exit(main())
