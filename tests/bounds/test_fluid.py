"""The fluid benchmark (bounds/fluid.py) and typed workloads (typed.py): hand-computed numbers."""

from __future__ import annotations

import re

import numpy as np
import pytest

from kvsched import LinearCost, Simulator, Workload
from kvsched.bounds.fluid import (UnstableError, fluid_bound, kv_token_rate, max_stable_rate,
                                  per_request_bound)
from kvsched.errors import ConfigError
from kvsched.policies import make
from kvsched.workload.typed import bin_lengths, binned_workload, parse_mix, synthesize_typed


def test_fluid_identities_by_hand():
    # Type 1: l=2, l'=3 → (l'+1)(l + l'/2) = 4·3.5 = 14; type 2: l=4, l'=1 → 2·4.5 = 9.
    # X = 1·14 + 2·9 = 32; d1·X = 0.32; τ* = 0.1/0.68 = 5/34; M* = τ*·X = 80/17.
    mix = parse_mix("p2d3@1+p4d1@2")
    b = fluid_bound(mix, LinearCost(0.1, 0.01))
    assert kv_token_rate(mix) == 32
    assert b.load == pytest.approx(0.32)
    assert b.iteration_time == pytest.approx(5 / 34)
    assert b.memory_tokens == pytest.approx(80 / 17)
    assert b.num_prompts_per_stage == pytest.approx((5 / 34, 10 / 34))
    assert b.num_prompts_per_type == pytest.approx((20 / 34, 20 / 34))       # τ*·λ_j·(l'_j + 1)
    assert b.decode_tokens_per_s == 5                                        # 1·3 + 2·1
    assert b.output_tokens_per_s == 8                                        # 1·4 + 2·2
    assert b.max_total_rate == pytest.approx(3 / 0.32)
    # M* = d0 + d1·M* times the per-iteration arrivals: τ* = d0 + d1·M*.
    assert b.iteration_time == pytest.approx(0.1 + 0.01 * b.memory_tokens)


def test_unstable_load_is_a_clear_error():
    with pytest.raises(UnstableError, match=r"d1·X = 1\.28 >= 1.*limit for this mix is 2\.34"):
        fluid_bound(parse_mix("p2d3@1+p4d1@2"), LinearCost(0.1, 0.04))
    assert issubclass(UnstableError, ConfigError)


def test_max_stable_rate_with_and_without_capacity():
    mix = parse_mix("p2d3@1+p4d1@2")                 # X per unit total rate: 32/3
    cost = LinearCost(0.1, 0.01)
    assert max_stable_rate(mix, cost) == pytest.approx(1 / (0.01 * 32 / 3))
    # M* ≤ C ⇔ X ≤ C/(d0 + d1·C): C = 10 → X ≤ 50 → Λ ≤ 50/(32/3) = 4.6875.
    assert max_stable_rate(mix, cost, 10) == pytest.approx(4.6875)
    b = fluid_bound(mix.with_total_rate(4.6875), cost)
    assert b.memory_tokens == pytest.approx(10)


def test_typed_workload_maps_types_to_requests():
    mix = parse_mix("p512d20@0.7+p512d50@0.3", total_rate=10)
    assert mix.rates == pytest.approx([7, 3])
    w = synthesize_typed(mix, 300, np.random.default_rng(3))
    assert w.type_id is not None and set(np.unique(w.type_id)) <= {0, 1}
    assert np.all(w.num_prompt_tokens == 512)
    assert np.all(w.true_output_tokens == np.where(w.type_id == 0, 21, 51))   # l'_j + 1
    assert w.arrival_time[0] == 0 and np.all(np.diff(w.arrival_time) >= 0)


@pytest.mark.parametrize("text", ["p512", "x512d20", "p512d20@", "", "p0d3"])
def test_bad_mix_text(text):
    with pytest.raises(ConfigError):
        parse_mix(text)


def _deterministic(per_unit: list[tuple[int, int, int]], units: int) -> Workload:
    """Arrivals at t = 0, 1, 2, …: per unit, `count` requests of (type, l, l')."""
    t, p, o, k = [], [], [], []
    for u in range(units):
        for type_id, (count, l, d) in enumerate(per_unit):
            t += [float(u)] * count
            p += [l] * count
            o += [d + 1] * count
            k += [type_id] * count
    return Workload.build(t, p, o, type_id=k)


def test_engine_mapping_wait_at_fluid_thresholds_runs_the_fluid_equilibrium():
    # Types A = p2d2 at 2/s and B = p1d1 at 1/s: X = 2·3·3 + 1·2·1.5 = 21. With d1 = 1/42 and
    # d0 = 1/2: τ* = 0.5/(1 − 0.5) = 1, M* = 21, and WAIT's thresholds τ*·λ_j = (2, 1).
    mix = parse_mix("p2d2@2+p1d1@1")
    cost = LinearCost(0.5, 1 / 42)
    b = fluid_bound(mix, cost)
    assert (b.iteration_time, b.memory_tokens) == pytest.approx((1, 21))
    assert b.num_prompts_per_stage == pytest.approx((2, 1))
    workload = _deterministic([(2, 2, 2), (1, 1, 1)], units=30)
    sim = Simulator(cost, kv_capacity_tokens=21, record_iterations=True)
    result = sim.run(workload, make("wait", thresholds="2/1"))
    steady = [it for it in result.iterations if 2 <= it.start_time <= 28]
    assert len(steady) == 27
    for it in steady:                 # each iteration: stage s of A holds 2 + s, of B 1 + s
        assert it.duration == pytest.approx(b.iteration_time)
        assert it.kv_used_tokens == 21
        assert len(it.num_tokens) == 2 * 3 + 1 * 2
    assert result.summary().num_evictions == 0
    # Per-request KV over its life is Σ_s (l + s) = (l'+1)(l + l'/2): the batch KV the engine
    # charged over the whole run is 30·(2·9 + 1·3) = 630 = 30 units × X.
    charged = sum((it.duration - cost.d0) / cost.d1 for it in result.iterations)
    assert charged == pytest.approx(30 * 21)


def test_binning_by_hand():
    prompts = [10, 20, 30, 40, 50, 60]
    outputs = [1, 2, 2, 6, 10, 10]             # decode stages 0, 1, 1, 5, 9, 9
    b = bin_lengths(prompts, outputs, num_bins=2, total_rate=6.0)
    assert b.edges == (-1, 5, 9)               # median (upper) of the stages is 5
    assert list(b.type_id) == [0, 0, 0, 0, 1, 1]
    t0, t1 = b.mix.types
    assert (t0.num_prompt_tokens, t0.num_decode_stages, t0.rate) == (25, 2, 4.0)   # mean 1.75 → 2
    assert (t1.num_prompt_tokens, t1.num_decode_stages, t1.rate) == (55, 9, 2.0)
    big = bin_lengths(prompts, outputs, num_bins=2, total_rate=6.0, representative="max")
    assert [(t.num_prompt_tokens, t.num_decode_stages) for t in big.mix.types] == [(40, 5), (60, 9)]


def test_per_request_bound_is_the_empirical_fluid():
    rng = np.random.default_rng(0)
    prompts = rng.integers(1, 50, 200)
    outputs = rng.integers(1, 30, 200)
    cost = LinearCost(0.01, 1e-4)
    b = per_request_bound(prompts, outputs, 2.0, cost)
    d = outputs - 1
    assert b.kv_token_rate == pytest.approx(2.0 * np.mean((d + 1) * prompts + d * (d + 1) / 2))
    # Binning with means is close to it; with maxima it is an over-estimate.
    w = Workload.build(np.zeros(200), prompts, outputs)
    _, mean_mix = binned_workload(w, num_bins=8, total_rate=2.0)
    _, max_mix = binned_workload(w, num_bins=8, total_rate=2.0, representative="max")
    assert kv_token_rate(mean_mix) == pytest.approx(b.kv_token_rate, rel=0.15)
    assert kv_token_rate(max_mix) > b.kv_token_rate


@pytest.mark.parametrize("text", ["p512d20@1.2.3", "p512d20@1e", "p1d1@2+p512d20@--1"])
def test_bad_mix_weight_names_the_option_and_the_item(text):
    bad = text.split("+")[-1]
    with pytest.raises(ConfigError, match=rf"^--types: type '{re.escape(bad)}': weight .* not a number"):
        parse_mix(text)


def test_cli_bound_fluid_bad_weight_is_a_one_line_error():
    from typer.testing import CliRunner

    from kvsched.cli.app import app
    result = CliRunner().invoke(app, ["bound", "fluid", "--types", "p512d20@1.2.3"])
    assert result.exit_code == 2
    assert not isinstance(result.exception, ValueError)
    assert "--types" in result.output and "p512d20@1.2.3" in result.output


def test_typed_workload_from_sweep_tables():
    from kvsched.workload.typed import mix_from_tables, typed_workload
    tables = [{"share": 0.7, "prompt": 512, "output": 20}, {"share": 0.3, "prompt": 64, "output": 1}]
    mix = mix_from_tables(tables, 10.0)
    assert mix.describe() == "p512d19@7+p64d0@3"      # output tokens = decode stages + 1
    w = typed_workload(tables, rate=10.0, num_requests=4000, seed=3)
    assert np.all(w.num_prompt_tokens == np.where(w.type_id == 0, 512, 64))
    assert np.all(w.true_output_tokens == np.where(w.type_id == 0, 20, 1))
    assert abs(np.mean(w.type_id == 0) - 0.7) < 0.03
    rate = (len(w.arrival_time) - 1) / w.arrival_time[-1]
    assert 9.5 < rate < 10.5
    again = typed_workload(tables, rate=10.0, num_requests=4000, seed=3)
    assert np.array_equal(again.arrival_time, w.arrival_time) and np.array_equal(again.type_id, w.type_id)
    at_zero = typed_workload(tables, rate=0, num_requests=50, seed=3)
    assert np.all(at_zero.arrival_time == 0) and set(at_zero.type_id) <= {0, 1}


@pytest.mark.parametrize("tables, where", [
    ([{"prompt": 512, "output": 20}], r"workload.types\[1\]: missing key 'share'"),
    ([{"share": 1, "output": 20}], r"workload.types\[1\]: missing key 'prompt'"),
    ([{"share": 1, "prompt": 5}, {"share": 1, "prompt": 5}], r"workload.types\[1\]: missing key 'output'"),
    ([{"share": 1, "prompt": 5, "output": 2}, {"share": 0, "prompt": 5, "output": 2}],
     r"workload.types\[2\].share: got 0"),
    ([{"share": 1, "prompt": -5, "output": 2}], r"workload.types\[1\].prompt: got -5"),
    ([{"share": 1, "prompt": 5, "output": 0}], r"workload.types\[1\].output: got 0"),
    ([{"share": 1, "prompt": 5.5, "output": 2}], r"workload.types\[1\].prompt: got 5.5"),
    ([{"share": 1, "prompt": 5, "output": 2, "rate": 3}], r"unknown key 'rate'"),
    (["p512d20"], r"workload.types\[1\]: expected a table"),
    ([], r"workload.types: expected a non-empty list"),
])
def test_typed_workload_bad_tables(tables, where):
    from kvsched.workload.typed import typed_workload
    with pytest.raises(ConfigError, match=where):
        typed_workload(tables, rate=1.0, num_requests=5, seed=0)


def test_typed_sweep_point_runs():
    from kvsched.experiments.runner import build_workload
    config = {"workload": {"kind": "typed", "rate": 2.0,
                           "types": [{"share": 1, "prompt": 8, "output": 3}]},
              "seed": 1, "num_requests": 20}
    w = build_workload(config)
    assert len(w.arrival_time) == 20 and np.all(w.true_output_tokens == 3)
