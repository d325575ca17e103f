"""`kvsched bound fluid` and `kvsched capacity` take ``--cost linear:d0=..,d1=..`` like every
command; the older ``--d0``/``--d1`` keep working (issue 19)."""

from __future__ import annotations

import json

import pytest

from cli_helpers import assert_user_error, run
from kvsched.cli.fluid import DEFAULT_D0, DEFAULT_D1

MIX = ["--types", "p512d20@0.7+p512d50@0.3", "--rate", "20"]


def _fluid(*args: str) -> dict:
    result = run("bound", "fluid", *MIX, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cost_option_equals_the_older_d0_d1():
    by_cost = _fluid("--cost", "linear:d0=0.00939,d1=2.68e-6")
    assert by_cost == _fluid("--d0", "0.00939", "--d1", "2.68e-6")
    assert (by_cost["d0"], by_cost["d1"]) == (0.00939, 2.68e-6)


def test_default_cost_is_the_documented_fit():
    data = _fluid()
    assert (data["d0"], data["d1"]) == (DEFAULT_D0, DEFAULT_D1)


def test_the_cost_reaches_the_bound():
    """Stability needs d1·X < 1, X (KV tokens/s) proportional to the rate: the largest stable
    total rate is λ / (d1·X(λ)). At λ = 10 req/s, X = 158,895 KV tokens/s (half of 317,790 at 20);
    d1 = 2.68e-6 gives 23.48 req/s and d1 = 4e-6 gives 15.73 req/s (X does not depend on the cost)."""
    def at_ten(cost: str) -> dict:
        result = run("bound", "fluid", "--types", "p512d20@0.7+p512d50@0.3", "--rate", "10", "--cost", cost,
                     "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)
    cheap, dear = at_ten("linear:d0=0.00939,d1=2.68e-6"), at_ten("linear:d0=0.00939,d1=4e-6")
    assert cheap["kv_token_rate"] == dear["kv_token_rate"] == pytest.approx(158895, abs=1)
    assert cheap["max_total_rate"] == pytest.approx(10 / (2.68e-6 * 158895), rel=1e-5)
    assert cheap["max_total_rate"] == pytest.approx(23.48, abs=0.01)
    assert dear["max_total_rate"] == pytest.approx(15.73, abs=0.01)


@pytest.mark.parametrize("args, fragments", [
    (["--cost", "unit"], ["--cost", "linear:d0=..,d1=.."]),
    (["--cost", "preset:llama2-7b-a100"], ["--cost", "linear:d0=..,d1=.."]),
    (["--cost", "linear:d0=0.01"], ["--cost"]),
    (["--cost", "linear:d0=0.01,d1=1e-6", "--d1", "2e-6"], ["--cost", "--d0/--d1", "not both"]),
])
def test_bad_cost_is_one_line(args, fragments):
    assert_user_error(run("bound", "fluid", *MIX, *args), *fragments)


def test_capacity_takes_the_cost_option_too():
    common = ["capacity", "--policy", "vllm", "--types", "p64d8", "--num-requests", "50", "--precision", "0.3",
              "--json"]
    by_cost = run(*common, "--cost", "linear:d0=0.01,d1=3e-6")
    by_d = run(*common, "--d0", "0.01", "--d1", "3e-6")
    assert by_cost.exit_code == by_d.exit_code == 0, by_cost.output
    assert json.loads(by_cost.stdout) == json.loads(by_d.stdout)
    assert_user_error(run("capacity", "--policy", "vllm", "--cost", "unit"), "--cost")
