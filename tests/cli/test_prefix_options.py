"""The prefix-caching options of simulate and compare: --prefix-caching reaches the Simulator (off by
default), --workload multiturn, the shared-prefix options, Mooncake traces through --trace, the
hit-rate column of compare and the new fields of --json.

Hits themselves come from the engine's prefix cache; these tests check what the command line owns:
the flag, the workload it builds and the fields it reports.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import run
from kvsched.cli import common as cc
from kvsched.experiments.scenario import build_setup, build_workload
from kvsched.workload.synthetic import default_workload

MOONCAKE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mooncake" / "conversation_trace.jsonl"
SMALL = ["--num-requests", "30", "--rate", "4"]


@pytest.fixture
def simulators(monkeypatch):
    """The Simulator each policy run of a command gets (the runs still happen)."""
    seen = []
    real = cc.run_policy

    def recording(setup, policy, label, **kwargs):
        seen.append(setup.simulator)
        return real(setup, policy, label, **kwargs)
    monkeypatch.setattr(cc, "run_policy", recording)
    return seen


@pytest.mark.parametrize("command", ["simulate", "compare"])
def test_prefix_caching_reaches_the_simulator_and_is_off_by_default(command, simulators):
    assert run(command, *SMALL, "--json").exit_code == 0
    assert simulators and not any(sim.prefix_caching for sim in simulators)
    simulators.clear()
    result = run(command, *SMALL, "--prefix-caching", "--json")
    assert result.exit_code == 0, result.output
    assert simulators and all(sim.prefix_caching for sim in simulators)


@pytest.mark.parametrize("command", ["simulate", "compare"])
def test_help_says_default_off_and_why(command):
    text = " ".join(run(command, "--help").output.split())
    assert "--prefix-caching" in text and "Default off" in text and "theory papers" in text
    assert "multiturn" in text and "--shared-prefix-tokens" in text


def test_json_carries_the_prefix_fields():
    rows = json.loads(run("compare", *SMALL, "--prefix-caching", "--json").stdout)
    assert all({"num_cached_tokens", "prefix_hit_rate"} <= set(row) for row in rows)
    row = json.loads(run("simulate", *SMALL, "--json").stdout)
    assert row["num_cached_tokens"] is None and row["prefix_hit_rate"] is None     # caching off


def test_compare_table_shows_the_hit_rate_only_with_caching():
    with_caching = run("compare", *SMALL, "--prefix-caching")
    assert with_caching.exit_code == 0 and "hit rate" in with_caching.stdout
    assert "prefix caching" in with_caching.stdout                          # the scenario line
    without = run("compare", *SMALL)
    assert without.exit_code == 0 and "hit rate" not in without.stdout


def test_multiturn_workload_from_the_command_line():
    row = json.loads(run("simulate", "--workload", "multiturn", "--num-requests", "25", "--think-time", "2",
                         "--json").stdout)
    assert row["num_requests"] == 25
    setup = build_setup(workload="multiturn", num_requests=25, think_time=2.0, seed=0)
    assert setup.workload.name == "multiturn-lmsys" and setup.workload.is_closed_loop
    assert setup.workload.meta["think_time_mean"] == 2.0


def test_shared_prefix_grows_prompts_and_keeps_the_draw():
    base = default_workload(200, seed=4)
    w = build_workload(num_requests=200, seed=4, shared_prefix_tokens=64, shared_prefix_fraction=0.5)
    chosen = w.segments.ids[w.segments.offsets[:-1]] == 0
    assert 0.3 < chosen.mean() < 0.7
    assert np.array_equal(w.num_prompt_tokens, base.num_prompt_tokens + 64 * chosen)
    assert np.array_equal(w.arrival_time, base.arrival_time)
    assert np.array_equal(w.true_output_tokens, base.true_output_tokens)
    everyone = build_workload(num_requests=200, seed=4, shared_prefix_tokens=64)     # fraction 1 by default
    assert np.array_equal(everyone.num_prompt_tokens, base.num_prompt_tokens + 64)


@pytest.mark.skipif(not MOONCAKE.is_file(), reason="shared/data/mooncake is not mounted")
def test_mooncake_trace_through_the_command_line(simulators):
    result = run("simulate", "--trace", str(MOONCAKE), "--num-requests", "40", "--prefix-caching",
                 "--kv-capacity", "200000", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["num_requests"] == 40 and "prefix_hit_rate" in row
    assert simulators[0].prefix_caching
