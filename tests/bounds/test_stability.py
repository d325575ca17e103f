"""The stability threshold μ = M / (b̄·E[g(s,o)]) of Nie, Si, Zhou (arXiv 2605.04595)."""

import json

import numpy as np
import pytest
from cli_helpers import assert_user_error, run
from hypothesis import given
from hypothesis import strategies as st

from kvsched import LinearCost, Simulator, UnitTime, Workload
from kvsched.bounds.fluid import per_request_bound
from kvsched.bounds.stability import lifetime_kv_demand, saturated_batch, stability_bound
from kvsched.errors import ConfigError
from kvsched.policies import make
from kvsched.workload.synthetic import default_workload


def test_lifetime_demand_hand_worked():
    # s = 3, o = 4: computed 3+4+5+6 = 18, emitted 4+5+6+7 = 22, paper 12 + 16/2 = 20.
    assert lifetime_kv_demand([3], [4], "computed").tolist() == [18]
    assert lifetime_kv_demand([3], [4], "emitted").tolist() == [22]
    assert lifetime_kv_demand([3], [4], "paper").tolist() == [20]
    with pytest.raises(ConfigError, match="--kv-convention"):
        lifetime_kv_demand([3], [4], "other")


def test_service_rate_hand_worked():
    # g = 18 and 1 + 2 = 3 → E[g] = 10.5; μ = 1000 / (0.5 · 10.5) ≈ 190.48 requests/s.
    bound = stability_bound([3, 1], [4, 2], 1000, batch_time=0.5)
    assert bound.mean_kv_demand == 10.5
    assert bound.service_rate == pytest.approx(1000 / 5.25)
    assert bound.slack == pytest.approx(7 / 1000)


@given(M=st.integers(100, 10**6), s=st.floats(1, 4000), o=st.floats(1, 2000),
       d0=st.floats(1e-4, 0.1), d1=st.floats(0, 1e-5))
def test_saturated_batch_holds_the_whole_memory(M, s, o, d0, d1):
    g = o * s + o * (o - 1) / 2
    batch = saturated_batch(M, s, o, max(g, 1.0))
    assert abs(batch.kv_tokens - M) <= 1
    assert LinearCost(d0, d1).iteration_time(batch) == pytest.approx(d0 + d1 * M, abs=d1 + 1e-12)


def test_linear_cost_threshold_is_the_fluid_memory_limit():
    w = default_workload(2000, rate=None, seed=3)
    cost = LinearCost(0.01, 2e-6)
    M = 50_000
    bound = stability_bound(w.num_prompt_tokens, w.true_output_tokens, M, cost=cost)
    x1 = per_request_bound(w.num_prompt_tokens, w.true_output_tokens, 1.0, LinearCost(0.01, 0.0)).kv_token_rate
    assert bound.service_rate == pytest.approx(M / ((0.01 + 2e-6 * M) * x1), rel=1e-6)


def _latency_growth(rate: float, n: int = 600) -> float:
    """Mean latency of the last quarter over the first quarter: near 1 when stable."""
    w = Workload.build(np.arange(n) / rate, np.full(n, 4), np.full(n, 4))
    result = Simulator(UnitTime(), 220, block_size=1).run(w, make("vllm"), seed=0)
    latency = result.finish_time - w.arrival_time
    return latency[-n // 4:].mean() / latency[: n // 4].mean()


def test_threshold_separates_stable_from_overloaded_in_simulation():
    # s = o = 4 under UnitTime: g = 16 + 6 = 22, M = 220 → μ = 10 requests per round.
    assert stability_bound([4], [4], 220, batch_time=1.0).service_rate == pytest.approx(10.0)
    assert _latency_growth(0.95 * 10) < 1.05     # measured: 1.00
    assert _latency_growth(1.05 * 10) > 1.3      # measured: 1.62


def test_cli_prints_the_threshold_and_the_fluid_limit():
    result = run("bound", "stability", "--num-requests", "500", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["service_rate"] == pytest.approx(data["fluid_memory_limit"], rel=1e-9)
    assert data["num_requests"] == 500 and data["convention"] == "computed"


@pytest.mark.parametrize("args, fragment", [
    (("--kv-capacity", "0"), "--kv-capacity"),
    (("--kv-convention", "nope"), "--kv-convention"),
    (("--batch-time", "-1"), "--batch-time"),
    (("--workload", "sharegpt"), "--workload"),
    (("--num-requests", "0"), "--num-requests"),
])
def test_cli_bad_input_is_one_line(args, fragment):
    assert_user_error(run("bound", "stability", *args), fragment)
