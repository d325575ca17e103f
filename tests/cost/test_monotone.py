"""Every cost model the package ships: iteration time never falls when a batch grows.

Over a grid of shapes, time is non-decreasing in decode sequences (at a fixed context per
sequence), in decode context tokens and in prefill tokens (one prefill chunk, with and without
decodes beside it). The calibrated presets broke this before their fits were made monotone
(llama2-7b-a100: 13.2 ms at 4 decodes, 12.6 ms at 8; llama2-70b-a100-tp2: 62 ms at 2, 52 ms at 4).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kvsched.cost.gpus import GPUS
from kvsched.cost.models import BatchStats, LinearCost, UnitTime
from kvsched.cost.presets import get_preset, list_presets
from kvsched.cost.roofline import build_roofline, list_model_configs

DECODE_SEQS = (1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 384, 512)
CONTEXT_PER_SEQ = (0, 1, 16, 100, 256, 511, 1000, 2048, 4000, 4096, 6000, 8192, 16384)
PREFILL_TOKENS = (1, 2, 8, 16, 64, 100, 128, 256, 500, 512, 1024, 2048, 3000, 4096, 6000, 8192, 16384)
#: float rounding in the sums: a step may "fall" by this relative amount without being a dip
EPS = 1e-12


def cost_models() -> dict:
    """UnitTime, LinearCost, every preset's cost model (calibrated and roofline), and the roofline of every shipped config
    on every GPU of the table (at TP 1, and TP 8 for the 70B-class models)."""
    models = {"unit": UnitTime(), "linear": LinearCost(0.022, 8.7e-7)}
    models.update({name: get_preset(name).cost for name in list_presets()})
    for config, gpu in itertools.product(list_model_configs(), GPUS):
        tp = 8 if "70b" in config or "72b" in config else 1
        models[f"roofline:{config}@{gpu}/tp{tp}"] = build_roofline(config, gpu, tp)
    return models


def decode(n: int, per_seq: int) -> BatchStats:
    return BatchStats(num_decode_seqs=n, decode_context_tokens=n * per_seq + n)


def prefill(tokens: int, cached: int = 0, decodes: int = 0, per_seq: int = 0) -> BatchStats:
    return BatchStats(num_prefill_tokens=tokens, num_prefill_seqs=1, prefill_context_tokens=cached + tokens,
                      prefill_attention_work=tokens * (cached + tokens), num_decode_seqs=decodes,
                      decode_context_tokens=decodes * per_seq + decodes)


def assert_non_decreasing(times: list[float], labels: list, what: str) -> None:
    for (a, la), (b, lb) in zip(zip(times, labels), zip(times[1:], labels[1:])):
        assert b >= a * (1 - EPS), f"{what}: {b * 1e3:.4f} ms at {lb} < {a * 1e3:.4f} ms at {la}"


MODELS = cost_models()


@pytest.fixture(params=sorted(MODELS))
def cost(request):
    return request.param, MODELS[request.param]


def test_non_decreasing_in_decode_seqs(cost):
    name, model = cost
    for per_seq in CONTEXT_PER_SEQ:
        times = [model.iteration_time(decode(n, per_seq)) for n in DECODE_SEQS]
        assert_non_decreasing(times, list(DECODE_SEQS), f"{name}, {per_seq} context tokens per sequence")


def test_non_decreasing_in_context_tokens(cost):
    name, model = cost
    for n in DECODE_SEQS:
        times = [model.iteration_time(decode(n, c)) for c in CONTEXT_PER_SEQ]
        assert_non_decreasing(times, list(CONTEXT_PER_SEQ), f"{name}, {n} decodes")
    for tokens in (16, 512, 2048):   # a prefill chunk's cached context
        times = [model.iteration_time(prefill(tokens, cached=c)) for c in CONTEXT_PER_SEQ]
        assert_non_decreasing(times, list(CONTEXT_PER_SEQ), f"{name}, chunk of {tokens} after cached")


def test_non_decreasing_in_prefill_tokens(cost):
    name, model = cost
    for decodes, cached in itertools.product((0, 1, 32, 128), (0, 1000)):
        times = [model.iteration_time(prefill(p, cached, decodes, 500)) for p in PREFILL_TOKENS]
        assert_non_decreasing(times, list(PREFILL_TOKENS), f"{name}, {decodes} decodes, {cached} cached")


def test_adding_a_decode_to_a_prefill_never_saves_time(cost):
    name, model = cost
    for p in PREFILL_TOKENS:
        alone, with_decode = model.iteration_time(prefill(p)), model.iteration_time(prefill(p, decodes=1))
        assert with_decode >= alone * (1 - EPS), f"{name}: chunk {p}"


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(MODELS)), n=st.integers(1, 600), extra=st.integers(1, 64),
       per_seq=st.integers(0, 20000), more=st.integers(0, 5000))
def test_growing_a_decode_batch_never_saves_time(name, n, extra, per_seq, more):
    """Property: more sequences and more context per sequence never make a decode step faster."""
    model = MODELS[name]
    small = model.iteration_time(decode(n, per_seq))
    assert model.iteration_time(decode(n + extra, per_seq)) >= small * (1 - EPS)
    assert model.iteration_time(decode(n, per_seq + more)) >= small * (1 - EPS)


def test_the_reported_dips_are_gone():
    """The two cases of issue 15, at the context the issue measured them (10 tokens per sequence)."""
    for name, (a, b) in (("llama2-7b-a100", (4, 8)), ("llama2-70b-a100-tp2", (2, 4))):
        model = get_preset(name).cost
        assert model.iteration_time(decode(b, 10)) >= model.iteration_time(decode(a, 10))
    fine = np.array([get_preset("llama2-7b-a100").cost.iteration_time(decode(n, 10)) for n in range(1, 65)])
    assert (np.diff(fine) >= -EPS * fine[1:]).all()


def test_gemms_beyond_the_profiled_range_keep_growing_linearly():
    """The fit's tail knot: beyond the largest profiled batch (4,096 tokens for the Llama-2 profiles)
    the GEMMs continue at the upper half's slope. Before it, a flat or falling last segment priced
    8,192 tokens like 4,096 (llama2-70b-a100-tp2 prefill of 8,192: 2.14 s, now 3.27 s)."""
    for name in list_presets():
        preset = get_preset(name)
        if preset.cost_model != "calibrated":
            continue
        linear = [preset.cost.breakdown(BatchStats(num_decode_seqs=t))["linear"] for t in (4096, 8192, 16384)]
        assert 1.9 < linear[1] / linear[0] < 2.05 and 1.9 < linear[2] / linear[1] < 2.05, name
