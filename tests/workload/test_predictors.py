import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsched import Workload, default_workload
from kvsched.errors import ConfigError
from kvsched.workload.predictors import apply_predictor, parse_predictor


def _workload(outputs):
    n = len(outputs)
    return Workload.build(np.zeros(n), np.full(n, 10), np.asarray(outputs))


def test_exact_copies_truth():
    w = apply_predictor(_workload([3, 7, 1]), "exact")
    assert w.predicted_output_tokens.tolist() == [3, 7, 1]
    assert w.predicted_lo.tolist() == [3, 7, 1] and w.predicted_hi.tolist() == [3, 7, 1]


def test_binned_hand_worked():
    w = apply_predictor(_workload([120, 150, 151, 1, 50]), "binned:width=50")
    assert w.predicted_lo.tolist() == [101, 101, 151, 1, 1]
    assert w.predicted_hi.tolist() == [150, 150, 200, 50, 50]
    assert w.predicted_output_tokens.tolist() == [150, 150, 200, 50, 50]   # point = hi


def test_naive_interval_and_its_params():
    w = apply_predictor(_workload([5, 2000]), "naive")
    assert w.predicted_lo.tolist() == [1, 1] and w.predicted_hi.tolist() == [1000, 1000]
    w = apply_predictor(_workload([5]), "naive:lo=2;hi=30")
    assert (w.predicted_lo[0], w.predicted_hi[0]) == (2, 30)


def test_interval_alpha_one_is_exact():
    w = apply_predictor(default_workload(300), "interval:alpha=1")
    assert np.array_equal(w.predicted_lo, w.true_output_tokens)
    assert np.array_equal(w.predicted_hi, w.true_output_tokens)


@settings(max_examples=200, deadline=None)
@given(alpha=st.floats(0.05, 1.0), seed=st.integers(0, 10_000),
       outputs=st.lists(st.integers(1, 5000), min_size=1, max_size=40))
def test_interval_contains_truth_with_ratio_alpha(alpha, seed, outputs):
    w = apply_predictor(_workload(outputs), f"interval:alpha={alpha!r}", seed=seed)
    o, lo, hi = w.true_output_tokens, w.predicted_lo, w.predicted_hi
    assert np.all((lo >= 1) & (lo <= o) & (o <= hi))
    # Up to rounding to integers, lo/hi is alpha: hi <= lo/alpha + 1/alpha + 1.
    assert np.all(hi <= (lo + 1) / alpha + 1)


def test_interval_position_is_random_and_seeded():
    w1 = apply_predictor(default_workload(2000), "interval:alpha=0.25", seed=3)
    w2 = apply_predictor(default_workload(2000), "interval:alpha=0.25", seed=3)
    w3 = apply_predictor(default_workload(2000), "interval:alpha=0.25", seed=4)
    assert np.array_equal(w1.predicted_lo, w2.predicted_lo)
    assert not np.array_equal(w1.predicted_lo, w3.predicted_lo)
    o = w1.true_output_tokens
    big = o >= 200
    # Relative position of the truth inside [lo, hi]: spread over the interval, not pinned to an end.
    pos = (o[big] - w1.predicted_lo[big]) / (w1.predicted_hi[big] - w1.predicted_lo[big])
    assert 0.1 < pos.mean() < 0.6 and pos.min() < 0.1 and pos.max() > 0.9


@pytest.mark.parametrize("spec", ["interval:alpha=0.5,miss=0.3", "binned:width=50;miss=0.3"])
def test_miss_rate(spec):
    w = apply_predictor(default_workload(4000), spec, seed=1)
    o, lo, hi = w.true_output_tokens, w.predicted_lo, w.predicted_hi
    outside = (o < lo) | (o > hi)
    assert 0.26 < outside.mean() < 0.34
    assert np.all(lo >= 1) and np.all(hi >= lo)
    assert np.all(o[o == 1] <= hi[o == 1])        # truth 1: a miss can only lie above
    assert (o < lo).any() and (o > hi).any()


def test_point_noise_median_one_and_rounding():
    w = apply_predictor(default_workload(4000), "point:sigma=0.5", seed=2)
    p, o = w.predicted_output_tokens, w.true_output_tokens
    assert np.all(p >= 1) and np.all(p == np.rint(p))
    ratio = np.log(p[o >= 100] / o[o >= 100])
    assert abs(np.median(ratio)) < 0.05 and 0.4 < ratio.std() < 0.6
    assert w.predicted_lo is None
    assert np.array_equal(apply_predictor(default_workload(50), "point:sigma=0").predicted_output_tokens,
                          default_workload(50).true_output_tokens)


def test_same_seed_same_predictions_for_every_policy():
    w = default_workload(100)
    a = apply_predictor(w, "point:sigma=1", seed=7)
    b = apply_predictor(w, "point:sigma=1", seed=7)
    assert np.array_equal(a.predicted_output_tokens, b.predicted_output_tokens)
    assert a.meta["predictor"] == "point:sigma=1"


@pytest.mark.parametrize("spec, message", [
    ("oracle", "unknown predictor 'oracle'"),
    ("interval", "missing parameter 'alpha'"),
    ("interval:alpha=0", "interval alpha must be a number in (0, 1]"),
    ("interval:alpha=1.5", "interval alpha"),
    ("interval:alpha=x", "interval alpha"),
    ("interval:alpha=0.5,width=3", "unknown parameter 'width'"),
    ("interval:alpha=0.5,miss=1", "interval miss must be in [0, 1)"),
    ("binned:width=0", "binned width must be an integer >= 1"),
    ("point:sigma=-1", "point sigma"),
    ("point:sigma", "expected name=value"),
    ("naive:lo=10,hi=5", "naive hi (5) must be >= lo (10)"),
    ("exact:x=1", "unknown parameter 'x'; expected one of: (none)"),
])
def test_parse_errors(spec, message):
    with pytest.raises(ConfigError) as info:
        parse_predictor(spec)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
