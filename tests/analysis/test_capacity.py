"""The stability-limit finder (capacity.py), the tl tuner (tuning.py) and the CLI (cli_fluid.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kvsched import LinearCost, Simulator
from kvsched.bounds.fluid import max_stable_rate
from kvsched.analysis.capacity import find_capacity, probe_stability
from kvsched.policies import make
from kvsched.analysis.tuning import tune_nested_wait, tune_wait
from kvsched.workload.typed import parse_mix, synthesize_typed

MIX = parse_mix("p4d4@1")                  # X per unit rate = 5·(4 + 2) = 30
COST = LinearCost(0.05, 0.01)              # fluid limit 1/(0.01·30) = 3.33 req/s


def make_workload(rate, n, seed):
    return synthesize_typed(MIX.with_total_rate(rate), n, np.random.default_rng(seed))


def vllm():
    return make("vllm", max_num_batched_tokens=10**9, max_num_seqs=10**9)


def test_probe_tells_stable_from_unstable():
    limit = max_stable_rate(MIX, COST)
    assert limit == pytest.approx(10 / 3)
    sim = Simulator(COST, 10**6)
    low = probe_stability(sim, vllm(), make_workload, 0.5 * limit, num_requests=300)
    high = probe_stability(sim, vllm(), make_workload, 1.5 * limit, num_requests=300)
    assert low.stable and abs(low.change) < 0.1
    assert not high.stable and high.change > 0.5        # latency grows with the horizon


def test_probe_averages_latencies_over_seeds():
    sim = Simulator(COST, 10**6)
    one = [probe_stability(sim, vllm(), make_workload, 2.0, num_requests=100, seed=s) for s in (5, 6)]
    both = probe_stability(sim, vllm(), make_workload, 2.0, num_requests=100, seed=5, num_seeds=2)
    assert both.mean_latency == pytest.approx((one[0].mean_latency + one[1].mean_latency) / 2)
    assert both.change == pytest.approx(both.mean_latency_doubled / both.mean_latency - 1)


def test_capacity_of_unconstrained_continuous_batching_is_near_the_fluid_limit():
    # With unlimited memory and budget, vLLM admits everything: the fluid limit applies.
    limit = max_stable_rate(MIX, COST)
    sim = Simulator(COST, 10**6)
    result = find_capacity(sim, vllm(), make_workload, lo=1.0, hi=2.0, num_requests=300,
                           rel_precision=0.03)
    assert result.rate < result.unstable_rate <= result.rate * 1.04
    # The doubling criterion is conservative at small n (the warm-up from an empty system raises
    # L(2n) over L(n) near the limit), so the found rate lies below the fluid limit, not far below.
    assert 0.5 * limit <= result.rate <= 1.05 * limit
    assert result.probes[1].rate == 2.0 and result.probes[1].stable        # the bracket grew
    assert result.policy == "vllm"


def test_memory_lowers_the_limit_to_the_fluid_memory_bound():
    # C caps the limit at M* ≤ C: with C = 60, Λ ≤ 60/((0.05 + 0.6)·30) = 3.08 (vs 3.33).
    assert max_stable_rate(MIX, COST, 60) == pytest.approx(60 / (0.65 * 30))


def test_tuners_pick_from_their_grid():
    mix = parse_mix("p4d2@0.7+p4d6@0.3", total_rate=2.0)
    w = synthesize_typed(mix, 150, np.random.default_rng(0))
    sim = Simulator(COST, 400)
    res = tune_wait(sim, w, mix.describe(), tl_grid=(5, 20, 60))
    assert res.params["tl"] in (5, 20, 60) and len(res.trials) == 3
    assert res.mean_latency == min(t[1] for t in res.trials)
    nres = tune_nested_wait(sim, w, tl_grid=(10, 40), num_segments_grid=(1, 2))
    assert len(nres.trials) == 4 and nres.params["num_segments"] in (1, 2)
    assert nres.mean_latency == min(t[1] for t in nres.trials)


# --------------------------------------------------------------------------- CLI

typer = pytest.importorskip("typer")
from cli_helpers import assert_user_error, runner
from typer.testing import CliRunner  # noqa: E402


def _app():
    from kvsched.cli.fluid import register
    app, bound = typer.Typer(), typer.Typer()
    app.add_typer(bound, name="bound")
    register(app, bound)
    return app


def test_cli_bound_fluid_json():
    out = CliRunner().invoke(_app(), ["bound", "fluid", "--types", "p2d3@1+p4d1@2", "--d0", "0.1",
                                      "--d1", "0.01", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["memory_tokens"] == pytest.approx(80 / 17)
    assert data["kv_token_rate"] == 32


def test_cli_bound_fluid_unstable_is_one_line_exit_2():
    assert_user_error(runner.invoke(_app(), ["bound", "fluid", "--types", "p2d3@1+p4d1@2", "--d0", "0.1",
                                             "--d1", "0.04"]), "unstable")


def test_cli_bound_fluid_binned_default_workload():
    out = CliRunner().invoke(_app(), ["bound", "fluid", "--bins", "4", "--rate", "2", "--d0", "0.01",
                                      "--d1", "1e-6", "--json"])
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.stdout)["types"]) <= 4


def test_cli_capacity_runs():
    out = CliRunner().invoke(_app(), ["capacity", "--policy", "wait", "--types", "p4d4@1",
                                      "--d0", "0.05", "--d1", "0.01", "--kv-capacity", "100000",
                                      "--num-requests", "100", "--lo", "1", "--hi", "8",
                                      "--precision", "0.1", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert 0 < data["rate"] < data["unstable_rate"] <= 8


@pytest.mark.parametrize(("args", "expected"), [
    (["bound", "fluid", "--d0", "0.1", "--d1", "0.01"], "--types"),
    (["bound", "fluid", "--types", "p2d3@1", "--d0", "nan"], "--d0"),
    (["bound", "fluid", "--types", "p2d3@1", "--d0", "0", "--d1", "0"], "--d0"),
    (["bound", "fluid", "--types", "p2d3@1", "--d1", "inf"], "--d1"),
    (["bound", "fluid", "--types", "bogus"], "bogus"),
    (["capacity", "--policy", "wait"], "wait"),                    # WAIT needs --types
    (["capacity", "--policy", "no-such-policy", "--types", "p4d4@1"], "no-such-policy"),
    (["capacity", "--policy", "wait", "--types", "p4d4@1", "--d0", "nan"], "--d0"),
])
def test_cli_bad_input_is_one_line_exit_2(args, expected):
    assert_user_error(runner.invoke(_app(), args), expected)


def test_cli_bound_fluid_table():
    out = CliRunner().invoke(_app(), ["bound", "fluid", "--types", "p2d3@1+p4d1@2", "--d0", "0.1",
                                      "--d1", "0.01", "--kv-capacity", "100"])
    assert out.exit_code == 0, out.output
    assert "fluid benchmark" in out.stdout and "kv_token_rate" in out.stdout
