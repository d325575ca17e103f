"""The log-t distributional predictor and re-prediction (TIE, arXiv 2604.00499; TRAIL, arXiv 2410.01035)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsched import default_workload
from kvsched.errors import ConfigError
from kvsched.workload.predictors import (StudentTTable, apply_predictor, conditional_quantile,
                                         parse_predictor, student_t_cdf, student_t_ppf)

T3 = StudentTTable(3.0)        # built once (about 0.5 s)


def test_student_t_cdf_closed_forms():
    # ν = 1 (Cauchy): 1/2 + atan(t)/π; ν = 2: 1/2 + t / (2·sqrt(2 + t²)).
    t = np.array([-3.0, -1.0, 0.0, 0.5, 1.0, 4.0])
    assert np.allclose(student_t_cdf(t, 1), 0.5 + np.arctan(t) / math.pi, atol=1e-12)
    assert np.allclose(student_t_cdf(t, 2), 0.5 + t / (2 * np.sqrt(2 + t * t)), atol=1e-12)


def test_student_t_quantiles_from_the_table_of_critical_values():
    for nu, value in ((1, 12.706), (3, 3.182), (10, 2.228), (30, 2.042)):
        assert student_t_ppf([0.975], nu)[0] == pytest.approx(value, abs=1e-3)
    assert student_t_ppf([0.025], 3)[0] == pytest.approx(-3.182, abs=1e-3)


def test_quantiles_match_sampled_t_draws():
    draws = np.random.default_rng(0).standard_t(4, 400_000)
    levels = [0.05, 0.25, 0.5, 0.75, 0.95]
    assert np.allclose(np.quantile(draws, levels), student_t_ppf(levels, 4), atol=0.02)


def test_interpolation_table_is_accurate():
    z = np.linspace(-200, 200, 4001)
    assert np.abs(T3.cdf(z) - student_t_cdf(z, 3.0)).max() < 1e-6
    p = np.linspace(0.001, 0.999, 999)
    assert np.abs(T3.cdf(T3.ppf(p)) - p).max() < 1e-6


def test_conditional_quantile_hand_worked_cauchy():
    # ν = 1, scale 1, median 100. g = 0: the median, 100. g = 100 (= the median): F(0) = 1/2, the
    # conditional median is F⁻¹(3/4) = tan(π/4) = 1, i.e. 100·e ≈ 271.8 → 272 tokens.
    table = StudentTTable(1.0)
    assert conditional_quantile([100, 100], [0, 100], 1.0, table, 0.5).tolist() == [100, 272]


@settings(max_examples=100, deadline=None)
@given(median=st.floats(1, 5000), g=st.integers(0, 5000), step=st.integers(1, 500),
       q=st.floats(0.05, 0.95), scale=st.floats(0.1, 2.0))
def test_conditional_quantile_grows_with_the_tokens_generated(median, g, step, q, scale):
    now, later = conditional_quantile([median, median], [g, g + step], scale, T3, q)
    assert now >= g + 1 and later >= g + step + 1
    assert later >= now


def test_logt_predictor_is_calibrated():
    w = apply_predictor(default_workload(20_000, rate=None, seed=1), "logt:scale=0.5,nu=3,coverage=0.8", seed=2)
    o = w.true_output_tokens
    inside = (w.predicted_lo <= o) & (o <= w.predicted_hi)
    assert inside.mean() == pytest.approx(0.8, abs=0.015)          # the interval's coverage
    assert (o <= w.predicted_output_tokens).mean() == pytest.approx(0.5, abs=0.015)   # the median
    assert (w.predicted_lo >= 1).all() and (w.predicted_lo <= w.predicted_hi).all()
    again = apply_predictor(default_workload(20_000, rate=None, seed=1), "logt:scale=0.5,nu=3,coverage=0.8", seed=2)
    assert np.array_equal(again.predicted_output_tokens, w.predicted_output_tokens)


@pytest.mark.parametrize("spec, fragment", [("logt", "scale"), ("logt:scale=0", "scale"),
                                            ("logt:scale=1,coverage=1", "coverage"),
                                            ("logt:scale=1,nu=-2", "nu"), ("logt:scale=1,df=3", "df")])
def test_bad_logt_specs(spec, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_predictor(spec)
