"""`--eviction recompute|restart` on simulate and compare."""

from __future__ import annotations

import json

from kvsched import Simulator
from kvsched.cost.models import LinearCost
from kvsched.policies import make
from kvsched.workload.synthetic import DEFAULT_RATE, default_workload

from cli_helpers import assert_user_error, run

TIGHT = ("--num-requests", "300", "--kv-capacity", "4000", "--json")


def test_restart_discards_tokens_and_matches_the_library():
    restart = json.loads(run("simulate", "--eviction", "restart", *TIGHT).stdout)
    recompute = json.loads(run("simulate", *TIGHT).stdout)
    assert restart["num_evictions"] > 0 and restart["num_restarted_tokens"] > 0
    assert recompute["num_restarted_tokens"] == 0
    sim = Simulator(LinearCost(0.022, 8.7e-7), 4000, block_size=16, eviction="restart")
    expected = sim.run(default_workload(300, rate=DEFAULT_RATE, seed=0), make("vllm")).summary()
    assert restart["mean_latency"] == expected.mean_latency
    assert restart["num_restarted_tokens"] == expected.num_restarted_tokens


def test_compare_takes_it_too():
    rows = json.loads(run("compare", "--policies", "vllm,sarathi", "--eviction", "restart", *TIGHT).stdout)
    rows = rows["results"] if isinstance(rows, dict) else rows
    assert {r["policy"] for r in rows} == {"vllm", "sarathi"}
    assert all(r["num_restarted_tokens"] > 0 for r in rows)


def test_a_bad_value_is_one_line():
    assert_user_error(run("simulate", "--eviction", "drop"), "--eviction", "'restart'")
