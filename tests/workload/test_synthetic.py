"""Workloads: construction, validation, arrival processes and length distributions."""

from __future__ import annotations

import numpy as np
import pytest

from kvsched import Workload
from kvsched.errors import UserError, WorkloadError
from kvsched.workload.synthetic import (
    AllAtZero, Bursts, Deterministic, Empirical, Fixed, GammaArrivals, LogNormal, Poisson, Uniform,
    DEFAULT_RATE, default_workload, synthesize,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- construction

def test_build_sorts_stably_by_arrival_and_carries_every_column():
    w = Workload.build([2.0, 0.0, 2.0, 1.0], [10, 20, 30, 40], [1, 2, 3, 4],
                       predicted_output_tokens=[1.5, 2.5, 3.5, 4.5], type_id=[7, 8, 9, 6])
    np.testing.assert_array_equal(w.arrival_time, [0, 1, 2, 2])
    np.testing.assert_array_equal(w.num_prompt_tokens, [20, 40, 10, 30])   # the two t=2 rows keep order
    np.testing.assert_array_equal(w.true_output_tokens, [2, 4, 1, 3])
    np.testing.assert_array_equal(w.predicted_output_tokens, [2.5, 4.5, 1.5, 3.5])
    np.testing.assert_array_equal(w.type_id, [8, 6, 7, 9])
    assert w.predicted_lo is None
    assert w.request(1).num_prompt_tokens == 40 and w.request(1).request_id == 1
    assert [r.true_output_tokens for r in w] == [2, 4, 1, 3]


def test_head_and_with_arrivals():
    w = Workload.build([0, 1, 2], [1, 2, 3], [4, 5, 6])
    assert len(w.head(2)) == 2 and w.head(2).num_prompt_tokens.tolist() == [1, 2]
    moved = w.with_arrivals([5.0, 0.0, 1.0])
    assert moved.arrival_time.tolist() == [0, 1, 5] and moved.num_prompt_tokens.tolist() == [2, 3, 1]


@pytest.mark.parametrize("columns, where, what", [
    (([0, 1, 2], [5, 0, 3], [1, 1, 1]), "row 2, field 'num_prompt_tokens'", ">= 1"),
    (([0, 1, 2], [5, 1, 3], [1, 1, -2]), "row 3, field 'true_output_tokens'", ">= 1"),
    (([0, -1, 2], [5, 1, 3], [1, 1, 1]), "row 2, field 'arrival_time'", ">= 0"),
    (([0, np.inf], [5, 1], [1, 1]), "row 2, field 'arrival_time'", "finite"),
    (([0, 1], [5, 1.5], [1, 1]), "row 2, field 'num_prompt_tokens'", "expected an integer"),
    (([0, 1], [5, 1], [np.nan, 1]), "row 1, field 'true_output_tokens'", "expected an integer"),
    (([0, 1, 2], [5, 1], [1, 1, 1]), "field 'num_prompt_tokens'", "shape (2,), expected (3,)"),
])
def test_validation_names_row_and_field(columns, where, what):
    for make in (Workload, Workload.build):
        with pytest.raises(WorkloadError) as info:
            make(*columns)
        assert where in str(info.value) and what in str(info.value)
        assert isinstance(info.value, UserError)


def test_build_reports_the_callers_row_not_the_sorted_one():
    # The bad prompt is the caller's row 1 (arrival 3), which sorts last.
    with pytest.raises(WorkloadError, match="row 1, field 'num_prompt_tokens'"):
        Workload.build([3.0, 0.0, 1.0], [0, 1, 1], [1, 1, 1])
    with pytest.raises(WorkloadError, match="row 2, field 'arrival_time'"):
        Workload.build([3.0, np.nan, 1.0], [1, 1, 1], [1, 1, 1])


def test_constructor_requires_sorted_arrivals():
    with pytest.raises(WorkloadError, match="use Workload.build"):
        Workload([1.0, 0.0], [1, 1], [1, 1])


def test_synthesize_needs_a_request():
    with pytest.raises(WorkloadError, match="num_requests"):
        synthesize(0, Poisson(1.0), Fixed(1), Fixed(1), rng())


# ---------------------------------------------------------------- arrival processes

N = 20_000


def gaps(times: np.ndarray) -> np.ndarray:
    return np.diff(times)


def test_poisson():
    t = Poisson(4.0).sample(N, rng(1))
    assert t[0] == 0.0 and np.all(np.diff(t) >= 0)
    g = gaps(t)
    assert g.mean() == pytest.approx(0.25, rel=0.03)
    assert g.std() / g.mean() == pytest.approx(1.0, rel=0.05)      # exponential: cv = 1


def test_gamma_arrivals_rate_and_burstiness():
    g = gaps(GammaArrivals(2.0, cv=3.0).sample(N, rng(2)))
    assert g.mean() == pytest.approx(0.5, rel=0.06)
    assert g.std() / g.mean() == pytest.approx(3.0, rel=0.1)


def test_deterministic_and_all_at_zero():
    np.testing.assert_array_equal(Deterministic(4.0).sample(5, rng()), [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_array_equal(AllAtZero().sample(3, rng()), [0, 0, 0])


def test_bursts():
    t = Bursts(rate=8.0, burst_size=4).sample(N + 2, rng(3))
    assert len(t) == N + 2
    starts = t[::4]
    assert np.all(t.reshape(-1, 2)[:, 0] == t.reshape(-1, 2)[:, 1])   # pairs inside a burst
    assert np.all(t[:N].reshape(-1, 4) == starts[:N // 4, None])       # 4 equal times per burst
    assert gaps(starts).mean() == pytest.approx(4 / 8.0, rel=0.05)      # mean rate 8 req/s


@pytest.mark.parametrize("process", [Poisson(3.0), GammaArrivals(3.0, 0.5), Bursts(3.0, 3)])
def test_arrivals_are_reproducible_from_the_seed(process):
    np.testing.assert_array_equal(process.sample(100, rng(5)), process.sample(100, rng(5)))
    assert not np.array_equal(process.sample(100, rng(5)), process.sample(100, rng(6)))


# ---------------------------------------------------------------- length distributions

def test_fixed_and_uniform():
    np.testing.assert_array_equal(Fixed(7).sample(3, rng()), [7, 7, 7])
    u = Uniform(3, 7).sample(N, rng(4))
    assert u.min() == 3 and u.max() == 7                         # both ends included
    assert u.mean() == pytest.approx(5.0, rel=0.01)
    assert u.dtype == np.int64


def test_lognormal_mean_and_clipping():
    x = LogNormal(mean=100.0, sigma=0.5).sample(N, rng(5))
    assert x.mean() == pytest.approx(100.0, rel=0.02)
    assert np.median(x) == pytest.approx(100.0 * np.exp(-0.5 ** 2 / 2), rel=0.03)
    clipped = LogNormal(mean=100.0, sigma=1.0, low=20, high=150).sample(N, rng(5))
    assert clipped.min() == 20 and clipped.max() == 150


def test_empirical_resamples_the_observed_values():
    x = Empirical((1, 1, 1, 5)).sample(N, rng(6))
    assert set(np.unique(x).tolist()) == {1, 5}
    assert (x == 5).mean() == pytest.approx(0.25, abs=0.02)


@pytest.mark.parametrize("dist", [Uniform(1, 100), LogNormal(50.0, 1.0), Empirical((1, 2, 3))])
def test_lengths_are_reproducible_from_the_seed(dist):
    np.testing.assert_array_equal(dist.sample(100, rng(7)), dist.sample(100, rng(7)))
    assert not np.array_equal(dist.sample(100, rng(7)), dist.sample(100, rng(8)))


def test_synthesize_and_default_workload_are_reproducible():
    a = synthesize(50, Poisson(2.0), Uniform(1, 9), Uniform(1, 9), rng(9))
    b = synthesize(50, Poisson(2.0), Uniform(1, 9), Uniform(1, 9), rng(9))
    assert a == b
    d = default_workload(2000, seed=3)
    assert d == default_workload(2000, seed=3) and d != default_workload(2000, seed=4)
    assert d.num_prompt_tokens.max() <= 2048 and d.true_output_tokens.max() <= 1000
    # LMSYS-Chat-1M means (69.5 prompt, 214.5 output tokens), a little lower after the caps.
    assert 55 < d.num_prompt_tokens.mean() < 80 and 180 < d.true_output_tokens.mean() < 230
    assert np.all(np.diff(d.arrival_time) >= 0)
    assert np.diff(d.arrival_time).mean() == pytest.approx(1 / DEFAULT_RATE, rel=0.1)
