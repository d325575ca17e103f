"""Calibrated cost model: hand-worked batches, the shipped fit against the raw profiles, the fit script."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsched.cost.calibrated import (BilinearTable, CalibratedCost, PiecewiseLinear, attention_scales,
                                 build_cost, load_calibration)
from kvsched.cost.models import BatchStats, CostModel
from kvsched.cost.presets import LLAMA2_7B, LLAMA2_70B, LLAMA3_8B

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILES = REPO_ROOT.parent / "shared" / "data" / "vidur" / "data" / "profiling"
needs_profiles = pytest.mark.skipif(not PROFILES.is_dir(), reason="../shared/data/vidur absent")


# ---------------------------------------------------------------------------- building blocks
def test_piecewise_linear_interpolates_and_extrapolates():
    f = PiecewiseLinear((0.0, 10.0, 20.0), (1.0, 2.0, 4.0))
    assert f(0) == 1.0 and f(10) == 2.0 and f(20) == 4.0
    assert f(5) == pytest.approx(1.5)
    assert f(15) == pytest.approx(3.0)
    assert f(30) == pytest.approx(6.0)      # last slope (0.2) continued
    assert f(-10) == pytest.approx(0.0)     # first slope (0.1) continued


def test_piecewise_linear_rejects_bad_knots():
    with pytest.raises(ValueError):
        PiecewiseLinear((0.0, 0.0), (1.0, 2.0))
    with pytest.raises(ValueError):
        PiecewiseLinear((0.0,), (1.0,))


def test_bilinear_table_hand_worked():
    t = BilinearTable((1.0, 3.0), (0.0, 100.0), ((1.0, 2.0), (3.0, 6.0)))
    assert t(1, 0) == 1.0 and t(3, 100) == 6.0
    assert t(2, 50) == pytest.approx((1.5 + 4.5) / 2)
    assert t(5, 0) == pytest.approx(5.0)    # batch extrapolated: slope 1 per sequence at context 0


def _toy_cost(**kw) -> CalibratedCost:
    args = dict(num_layers=10, hidden_size=100,
                linear=PiecewiseLinear((0.0, 100.0), (1.0, 2.0)),          # 1 + T/100 ms
                elementwise=PiecewiseLinear((0.0, 100.0), (0.0, 0.5)),     # T/200 ms
                prefill_coef=(0.1, 0.001, 1e-5, 2e-5),
                decode=BilinearTable((1.0, 3.0), (0.0, 100.0), ((1.0, 2.0), (3.0, 6.0))),
                all_reduce=PiecewiseLinear((0.0, 1e6), (0.0, 1.0)),        # 1 ms per MB
                all_reduce_launch_time=0.0)
    args.update(kw)
    return CalibratedCost(**args)


def test_single_prefill_chunk_hand_worked():
    # one prompt chunk of 10 tokens after 20 cached: context after 30, work 10·30, Σchunk² 100, Σchunk·kv 200
    batch = BatchStats(num_prefill_tokens=10, num_prefill_seqs=1, prefill_context_tokens=30,
                       prefill_attention_work=300)
    cost = _toy_cost()
    linear, elementwise = 1 + 10 / 100, 10 / 200
    prefill = 0.1 + 0.001 * 10 + 1e-5 * 200 + 2e-5 * 100
    all_reduce = 2 * (10 * 100 * 2 / 1e6)
    expected = 10 * (linear + elementwise + prefill + all_reduce) * 1e-3
    assert cost.iteration_time(batch) == pytest.approx(expected)
    assert isinstance(cost, CostModel)


def test_decode_batch_hand_worked_with_batching_overhead():
    # two decodes with 50 tokens of context each: table at (2, 50) = 3.0 ms, ×1.1 for batching
    batch = BatchStats(num_decode_seqs=2, decode_context_tokens=100)
    cost = _toy_cost(attention_batching_overhead=0.1, all_reduce=None, iteration_overhead_time=0.005)
    expected = 10 * ((1 + 2 / 100) + 2 / 200 + 3.0 * 1.1) * 1e-3 + 0.005
    assert cost.iteration_time(batch) == pytest.approx(expected)
    parts = cost.breakdown(batch)
    assert parts["all_reduce"] == 0 and parts["attn_prefill"] == 0
    assert parts["overhead"] == 0.005


def test_decode_context_scale_scales_only_the_context_part():
    batch = BatchStats(num_decode_seqs=1, decode_context_tokens=100)
    base, scaled = _toy_cost(), _toy_cost(decode_context_scale=8.0)
    # decode(1, 0) = 1, decode(1, 100) = 2: scaled = 1 + 8·1 = 9 ms vs 2 ms per layer
    difference = scaled.breakdown(batch)["attn_decode"] - base.breakdown(batch)["attn_decode"]
    assert difference == pytest.approx(10 * (9 - 2) * 1e-3)


def test_two_whole_prompts_use_exact_sum_of_squares():
    # prompts of 3 and 5 tokens, nothing cached: Σchunk² = W = 9 + 25 = 34, Σchunk·kv = 0
    batch = BatchStats(num_prefill_tokens=8, num_prefill_seqs=2, prefill_context_tokens=8,
                       prefill_attention_work=34)
    cost = _toy_cost(attention_batching_overhead=0.0)
    assert cost.breakdown(batch)["attn_prefill"] == pytest.approx(10 * (0.1 + 0.008 + 2e-5 * 34) * 1e-3)


def test_empty_batch_takes_no_time():
    assert _toy_cost().iteration_time(BatchStats()) == 0.0


# ---------------------------------------------------------------------------- shapes
def test_parameter_counts_match_the_published_models():
    assert LLAMA2_70B.num_params == 68_976_648_192
    assert LLAMA2_7B.num_params == 6_738_415_616
    assert LLAMA3_8B.num_params == 8_030_261_248


def test_attention_scales_by_heads_per_gpu():
    reference = load_calibration()["attn_prefill"]["reference"]
    assert reference == {**reference, "q_heads_per_gpu": 32, "kv_heads_per_gpu": 4, "head_dim": 128}
    assert attention_scales(LLAMA2_70B, 2, reference) == (1.0, 1.0)
    assert attention_scales(LLAMA2_70B, 4, reference) == (0.5, 0.5)
    assert attention_scales(LLAMA2_7B, 1, reference) == (1.0, 8.0)    # MHA: 32 KV heads vs 4
    assert attention_scales(LLAMA3_8B, 1, reference) == (1.0, 2.0)


def test_batching_overhead_follows_vidur_gqa_rule():
    assert build_cost(LLAMA2_70B, 2).attention_batching_overhead == 0.1
    assert build_cost(LLAMA3_8B, 1).attention_batching_overhead == 0.1
    assert build_cost(LLAMA2_7B, 1).attention_batching_overhead == 0.0
    assert build_cost(LLAMA2_7B, 1).all_reduce is None


def test_unprofiled_tensor_parallel_degree_raises():
    with pytest.raises(KeyError):
        build_cost(LLAMA2_70B, 3)


batches = st.builds(
    lambda chunks, cached, decodes, ctx: BatchStats(
        num_prefill_tokens=sum(chunks), num_prefill_seqs=len(chunks),
        prefill_context_tokens=sum(c + k for c, k in zip(chunks, cached)),
        prefill_attention_work=sum(c * (c + k) for c, k in zip(chunks, cached)),
        num_decode_seqs=len(decodes), decode_context_tokens=sum(ctx)),
    st.lists(st.integers(1, 4096), max_size=4), st.lists(st.integers(0, 4096), min_size=4, max_size=4),
    st.lists(st.just(1), max_size=256), st.lists(st.integers(1, 8192), min_size=256, max_size=256))


@settings(max_examples=150, deadline=None)
@given(batch=batches)
def test_preset_costs_are_positive_finite_and_sum_their_parts(batch):
    batch = BatchStats(batch.num_prefill_tokens, batch.num_prefill_seqs, batch.num_decode_seqs,
                       batch.prefill_context_tokens, batch.prefill_attention_work,
                       min(batch.decode_context_tokens, batch.num_decode_seqs * 8192))
    for cost in (build_cost(LLAMA2_70B, 2), build_cost(LLAMA2_7B, 1), build_cost(LLAMA3_8B, 1)):
        t = cost.iteration_time(batch)
        if batch.num_tokens == 0:
            assert t == 0
            continue
        assert math.isfinite(t) and t > 0
        assert t == pytest.approx(sum(cost.breakdown(batch).values()))


def _plain_parts_ms(cost, batch):
    """The model's per-layer parts evaluated from its tables directly: nothing memoised, every
    table row interpolated (the oracle of `parts_ms`)."""
    tokens, n = batch.num_tokens, batch.num_decode_seqs
    all_reduce = 0.0
    if cost.all_reduce is not None:
        all_reduce = cost.all_reduces_per_layer * (cost.all_reduce(tokens * cost.hidden_size * 2)
                                                   + cost.all_reduce_launch_time / 1e-3)
    decode = 0.0
    if n:
        base = cost.decode(n, 0.0)
        decode = ((base + cost.decode_context_scale * (cost.decode(n, batch.decode_context_tokens / n) - base))
                  * (1 + cost.attention_batching_overhead * (n > 1)))
    parts = (cost.linear(tokens), cost.elementwise(tokens), cost._prefill_ms(batch), decode, all_reduce)
    return tuple(max(p, 0.0) for p in parts)


@settings(max_examples=300, deadline=None)
@given(batch=batches, overhead=st.sampled_from([0.0, 0.004]))
def test_memoised_evaluation_equals_the_plain_formula_bit_for_bit(batch, overhead):
    """`iteration_time` (`parts_ms`, per-size terms memoised, two table rows) and
    `decode_iteration_time` give exactly the plain evaluation: the per-layer parts (every table row
    interpolated) added left to right. The fast path's exactness rests on this."""
    for cost in (build_cost(LLAMA2_70B, 2, iteration_overhead_time=overhead), build_cost(LLAMA2_7B, 1),
                 build_cost(LLAMA3_8B, 1)):
        if not batch.num_tokens:
            assert cost.iteration_time(batch) == 0.0
            continue
        parts = _plain_parts_ms(cost, batch)
        assert cost.parts_ms(batch) == parts
        plain = 0.0
        for part in parts:
            plain += part
        assert cost.iteration_time(batch) == plain * cost.num_layers * 1e-3 + cost.iteration_overhead_time
        if batch.num_decode_seqs:
            n, context = batch.num_decode_seqs, batch.decode_context_tokens
            decodes = BatchStats(num_decode_seqs=n, decode_context_tokens=context)
            assert cost.decode_iteration_time(n, context) == cost.iteration_time(decodes)
            run = cost.decode_run_durations(n, context, 5)
            assert list(run) == [cost.iteration_time(BatchStats(num_decode_seqs=n,
                                                                decode_context_tokens=context + k * n))
                                 for k in range(5)]


@settings(max_examples=60, deadline=None)
@given(chunk=st.integers(1, 4096), cached=st.integers(0, 4096), extra=st.integers(1, 2048))
def test_prefill_attention_grows_with_cached_context(chunk, cached, extra):
    cost = build_cost(LLAMA2_70B, 2)

    def prefill(k):
        return cost.breakdown(BatchStats(num_prefill_tokens=chunk, num_prefill_seqs=1,
                                         prefill_context_tokens=chunk + k,
                                         prefill_attention_work=chunk * (chunk + k)))["attn_prefill"]
    assert prefill(cached + extra) > prefill(cached)


# ---------------------------------------------------------------------------- against the raw profiles
def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@needs_profiles
def test_70b_tp2_decode_batches_match_the_profiled_operators():
    """Per layer, linear + elementwise + decode attention vs the profiles' medians at the same point."""
    mlp = {int(r["num_tokens"]): r for r in _rows(PROFILES / "compute/a100/meta-llama/Llama-2-70b-hf/mlp.csv")
           if r["num_tensor_parallel_workers"] == "2"}
    attention = {(int(r["batch_size"]), int(r["kv_cache_size"])): float(r["time_stats.attn_decode.median"])
                 for r in _rows(PROFILES / "a100/attention.csv") if r["is_prefill"] == "False"}
    ops = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
           "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
    cost = build_cost(LLAMA2_70B, 2, attention_batching_overhead=0.0)
    errors = []
    for batch_size in (1, 8, 16, 32, 64, 128):
        for context in (512, 1024, 2048, 4032):
            measured = sum(float(mlp[batch_size][f"time_stats.{op}.median"]) for op in ops)
            measured += attention[(batch_size, context)]
            parts = cost.breakdown(BatchStats(num_decode_seqs=batch_size,
                                              decode_context_tokens=batch_size * context))
            ours = (parts["linear"] + parts["elementwise"] + parts["attn_decode"]) / 80 / 1e-3
            errors.append(abs(ours / measured - 1))
    assert max(errors) < 0.10
    assert sum(errors) / len(errors) < 0.04


@needs_profiles
def test_shipped_calibration_is_what_the_fit_script_writes(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("fit_calibration", REPO_ROOT / "scripts" / "fit_calibration.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "calibration.json"
    assert module.main(["--output", str(out)]) == 0
    _assert_close(json.loads(out.read_text()), load_calibration())
    printed = capsys.readouterr().out
    assert "attn_decode" in printed and "held-out MAPE" in printed


def _assert_close(a, b, path="calibration"):
    """Equal structure, numbers equal to 1e-4 relative (BLAS builds may differ in the last digits)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-9), path
    else:
        assert a == b, path


def test_stored_fit_errors_are_small():
    cal = load_calibration()
    for group in ("linear", "elementwise"):
        for by_tp in cal[group].values():
            for fit in by_tp.values():
                assert 0 < fit["mape"] < 8 and fit["num_test"] > 0
    assert cal["attn_prefill"]["mape"] < 8 and cal["attn_decode"]["mape"] < 10
    assert all(fit["mape"] < 8 for fit in cal["all_reduce"].values())
