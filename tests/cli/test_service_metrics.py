"""Service-level metrics (kvsched.metrics): hand-worked token gaps, TPOT percentiles, SLO attainment
and goodput; the token times derived from iteration records agree with the engine's columns."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

from kvsched.engine.simulator import IterationRecord
from kvsched.metrics import Slo, summarize, token_gaps, token_times

from cli_helpers import assert_user_error, run


def _result(rejected=(False, False)):
    """Two requests at t=0: r0 (prompt 2, 3 tokens), r1 (prompt 1, 2 tokens), r1 evicted once.

    it0 [0,1] r0 prefills 2      -> r0 token 1 at 1
    it1 [1,2] r0 +1, r1 prefill  -> r0 token 2 at 2, r1 token 1 at 2
    it2 [2,4] r0 +1, r1 evicted  -> r0 token 3 at 4 (done)
    it3 [4,5] r1 recomputes 2    -> r1 token 2 at 5 (done)
    Gaps: r0 [1, 2], r1 [3]. TPOT: r0 (4-1)/2 = 1.5, r1 (5-2)/1 = 3. TTFT 1 and 2.
    """
    iterations = [IterationRecord(0.0, 1.0, {0: 2}, (), 2), IterationRecord(1.0, 1.0, {0: 1, 1: 1}, (), 4),
                  IterationRecord(2.0, 2.0, {0: 1}, (1,), 4), IterationRecord(4.0, 1.0, {1: 2}, (), 3)]
    n = len(rejected)
    workload = type("W", (), {"__len__": lambda self: n, "arrival_time": np.zeros(n),
                              "true_output_tokens": np.array([3, 2, 4][:n]),
                              "num_prompt_tokens": np.array([2, 1, 1][:n])})()
    return SimpleNamespace(
        policy="hand", workload=workload, rejected=np.array(rejected),
        first_token_time=np.array([1.0, 2.0, np.nan][:n]), finish_time=np.array([4.0, 5.0, np.nan][:n]),
        num_recomputed_tokens=np.array([0, 1, 0][:n]), num_evictions=np.array([0, 1, 0][:n]),
        kv_capacity_tokens=10, kv_peak_tokens=4, kv_token_seconds=10.0, num_iterations=4,
        wall_time=0.0, iterations=iterations, token_gaps=None)


def test_token_times_and_gaps_by_hand():
    r = _result()
    assert token_times(r.iterations, r.workload.num_prompt_tokens) == {0: [1.0, 2.0, 4.0], 1: [2.0, 5.0]}
    assert sorted(token_gaps(r.iterations, r.workload.num_prompt_tokens)) == [1.0, 2.0, 3.0]


def test_gap_distribution_and_per_request_tpot_are_different_numbers():
    s = summarize(_result())
    assert s.mean_token_gap == pytest.approx(2.0)          # (1 + 2 + 3) / 3 gaps
    assert s.p50_token_gap == pytest.approx(2.0)
    assert s.p99_token_gap == pytest.approx(2.98)          # linear between 2 and 3 at 0.98
    assert s.mean_tpot == pytest.approx(2.25)              # (1.5 + 3) / 2 requests
    assert s.p50_tpot == pytest.approx(2.25)
    assert s.p90_tpot == pytest.approx(1.5 + 0.9 * 1.5)
    assert s.p50_ttft == pytest.approx(1.5)


def test_no_records_no_gap_figures():
    s = summarize(SimpleNamespace(**{**vars(_result()), "iterations": None}))
    assert np.isnan(s.p99_token_gap) and s.mean_tpot == pytest.approx(2.25)


@pytest.mark.parametrize("text, attainment", [
    ("ttft=1.5", 0.5),                 # r1's TTFT is 2
    ("tpot=2", 0.5),                   # r1's TPOT is 3
    ("e2e=4.5", 0.5),                  # r1's latency is 5
    ("ttft=2,tpot=3,e2e=5", 1.0),      # all bounds inclusive
    ("ttft=0.5", 0.0),
])
def test_slo_attainment_and_goodput_by_hand(text, attainment):
    s = summarize(_result(), Slo.parse(text))
    assert s.slo_attainment == pytest.approx(attainment)
    assert s.goodput_requests_per_s == pytest.approx(2 * attainment / 5.0)   # makespan 5
    assert s.slo == str(Slo.parse(text))


def test_rejected_request_misses_the_slo():
    s = summarize(_result(rejected=(False, False, True)), Slo.parse("ttft=10"))
    assert s.slo_attainment == pytest.approx(2 / 3)


def test_without_slo_no_slo_figures():
    s = summarize(_result())
    assert s.slo is None and np.isnan(s.slo_attainment) and np.isnan(s.goodput_requests_per_s)


@pytest.mark.parametrize("text", ["", "ttft", "ttft=", "ttft=x", "ttft=-1", "ttft=0", "ttft=nan",
                                  "ttft=inf", "latency=3", "ttft=1,ttft=2"])
def test_bad_slo_texts(text):
    with pytest.raises(ValueError):
        Slo.parse(text)


def test_token_times_agree_with_the_engine_under_evictions():
    from kvsched.experiments.scenario import build_setup
    from kvsched.policies import make
    setup = build_setup(workload="default", trace=None, rate=None, num_requests=120, kv_capacity=1500,
                        block_size=None, kv_convention="computed", cost="linear:d0=0.022,d1=8.7e-7",
                        predictor=None, seed=1)
    sim = dataclasses.replace(setup.simulator, record_iterations=True)
    r = sim.run(setup.workload, make("vllm"), seed=1)
    assert r.num_evictions.sum() > 0
    times = token_times(r.iterations, setup.workload.num_prompt_tokens)
    for i in np.flatnonzero(~r.rejected):
        t = times[int(i)]
        assert len(t) == setup.workload.true_output_tokens[i]
        assert t[0] == pytest.approx(r.first_token_time[i]) and t[-1] == pytest.approx(r.finish_time[i])


def test_cli_json_has_the_service_metrics():
    result = run("simulate", "--num-requests", "40", "--slo", "ttft=2,tpot=0.1,e2e=30", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    for key in ("p50_tpot", "p90_tpot", "p99_tpot", "p50_token_gap", "p90_token_gap", "p99_token_gap",
                "p50_ttft", "p99_ttft", "slo_attainment", "goodput_requests_per_s"):
        assert isinstance(row[key], float), key
    assert row["slo"] == "ttft=2,tpot=0.1,e2e=30" and 0 <= row["slo_attainment"] <= 1


def test_cli_bad_slo_is_one_line():
    assert_user_error(run("compare", "--num-requests", "5", "--slo", "ttft=fast"), "--slo", "ttft")
