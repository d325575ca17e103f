"""`kvsched reproduce past-future`: LightLLM's Past-Future in its artifact's setting."""

from __future__ import annotations

import json

from cli_helpers import assert_user_error, run

from kvsched.experiments.past_future import ARTIFACT, DISTRIBUTIONS, RULES


def test_every_distribution_and_rule_beside_the_artifacts_figures():
    result = run("reproduce", "past-future", "--num-requests", "40", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = report["rows"]
    assert [(r["distribution"], r["rule"]) for r in rows] == [(d, k) for d in DISTRIBUTIONS for k in RULES]
    for r in rows:
        assert 0 < r["memory_utilization"] <= 100
        if r["rule"] == "true-length":       # a true-length future check never overflows
            assert r["evicted"] == 0 and r["recomputed"] == 0
    d = list(DISTRIBUTIONS).index(rows[0]["distribution"])
    assert (rows[0]["artifact_memory_utilization"], rows[0]["artifact_evicted"]) == ARTIFACT[rows[0]["rule"]][d]


def test_lengths_follow_the_artifacts_distributions():
    from kvsched.experiments.past_future import backlog
    w = backlog((32, 4096), (2048, 4096), 500, seed=1)
    assert w.num_prompt_tokens.min() >= 32 and w.num_prompt_tokens.max() <= 4096
    assert w.true_output_tokens.min() >= 2048 and (w.arrival_time == 0).all()


def test_a_bad_cost_is_one_line():
    assert_user_error(run("reproduce", "past-future", "--cost", "fast"), "--cost")
