"""Prefix-cache metrics and realised arrivals in kvsched.metrics.summarize, on hand-built RunResults."""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from kvsched.cli.common import dumps
from kvsched.engine.result import RunResult
from kvsched.metrics import summarize
from kvsched.workload.segments import PromptSegments
from kvsched.workload.synthetic import Workload


def _result(**extra) -> RunResult:
    """r0 arrives at 0 (prompt 4, 2 tokens), first token at 1, done at 2. r1 is its follow-up (think
    time 1): its workload arrival 1.0 is a lower bound; it really arrives at 2 + 1 = 3, first token
    and finish at 4.5 (one output token)."""
    workload = Workload.build([0.0, 1.0], [4, 10], [2, 1], parent=[-1, 0], think_time=[0.0, 1.0],
                              segments=PromptSegments.from_lists([[(0, 4)], [(0, 4), (-1, 2), (1, 4)]]))
    fields = dict(policy="hand", workload=workload, kv_capacity_tokens=100,
                  first_scheduled_time=np.array([0.0, 3.0]), first_token_time=np.array([1.0, 4.5]),
                  finish_time=np.array([2.0, 4.5]), num_evictions=np.zeros(2, dtype=np.int64),
                  num_recomputed_tokens=np.zeros(2, dtype=np.int64),
                  total_computed_tokens=np.array([5, 6]), rejected=np.array([False, False]), reject_reasons={},
                  num_iterations=3, busy_time=3.0, kv_peak_tokens=12, kv_token_seconds=20.0, wall_time=0.0,
                  realized_arrival_time=np.array([0.0, 3.0]))
    return RunResult(**{**fields, **extra})


def test_latencies_from_realised_arrivals():
    s = summarize(_result())
    assert s.mean_latency == pytest.approx((2.0 + 1.5) / 2)          # not (2 + 3.5) / 2
    assert s.p99_ttft == pytest.approx(1.5, rel=0.02)                # r1: 4.5 - 3
    assert s.total_latency == pytest.approx(3.5)
    assert s.makespan == pytest.approx(4.5)


def test_without_realised_arrivals_the_workload_times_are_used():
    s = summarize(_result(realized_arrival_time=None))
    assert s.total_latency == pytest.approx(2.0 + 3.5)


def test_result_like_objects_without_arrival_time_fall_back_to_the_workload():
    r = _result()
    like = SimpleNamespace(**{f.name: getattr(r, f.name) for f in dataclasses.fields(r)
                              if f.name != "realized_arrival_time"})
    assert not hasattr(like, "arrival_time")
    assert summarize(like).total_latency == pytest.approx(2.0 + 3.5)


def test_a_follow_up_that_never_arrived_is_left_out():
    r = _result(rejected=np.array([False, True]), realized_arrival_time=np.array([0.0, np.nan]),
                first_token_time=np.array([1.0, np.nan]), finish_time=np.array([2.0, np.nan]))
    s = summarize(r)
    assert s.num_rejected == 1 and s.makespan == pytest.approx(2.0) and s.total_latency == pytest.approx(2.0)


def test_prefix_cache_fields_by_hand():
    # r0 looked up its 4 tokens once, no hit; r1 was admitted twice (evicted once): 10 + 12 looked
    # up, 4 + 8 served from the cache
    r = _result(num_cached_tokens=np.array([0, 12]), num_lookup_tokens=np.array([4, 22]))
    s = summarize(r)
    assert s.num_cached_tokens == 12
    assert s.prefix_hit_rate == pytest.approx(12 / 26)
    row = json.loads(dumps(s.as_dict()))
    assert row["num_cached_tokens"] == 12 and row["prefix_hit_rate"] == pytest.approx(12 / 26)


def test_caching_off_gives_none():
    s = summarize(_result())
    assert s.num_cached_tokens is None and s.prefix_hit_rate is None
    row = json.loads(dumps(s.as_dict()))
    assert "num_cached_tokens" in row and row["prefix_hit_rate"] is None


def test_nothing_looked_up_is_nan_then_null():
    s = summarize(_result(num_cached_tokens=np.zeros(2, dtype=np.int64), num_lookup_tokens=np.zeros(2, dtype=np.int64)))
    assert s.num_cached_tokens == 0 and math.isnan(s.prefix_hit_rate)
    assert json.loads(dumps(s.as_dict()))["prefix_hit_rate"] is None
