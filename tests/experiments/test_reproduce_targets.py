"""The bundled reproduction targets R2 and R3: specs valid, summaries computed as documented."""

from __future__ import annotations

import re

import pytest

from kvsched.errors import ConfigError
from kvsched.experiments.reproduce import (TARGETS, bundled_spec, summarize_r2, summarize_r3, with_horizons,
                                          with_rates)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_bundled_specs_load_and_name_real_policies_and_parameters(target):
    spec = bundled_spec(target)          # validates every policy id and parameter name
    assert spec.points()


def test_r2_growth_is_the_slope_of_mean_latency_against_the_horizon():
    rows = []
    for n in (1000, 2000, 3000):
        for label, slope in (("mcsf", 0.01), ("mc-benchmark", 0.04), ("alpha-protection(alpha=0.21)", 0.03)):
            rows.append({"label": label, "rate": 10.0, "num_requests_config": n,
                         "mean_latency": 5.0 + slope * n})
    _, headers, table, _ = summarize_r2(rows, None)
    (row,) = table
    assert row[0] == "recompute"          # rows stored without the setting
    assert row[1] == 10.0 and row[2] == pytest.approx(0.01)
    assert row[3] == "alpha-protection(alpha=0.21)" and row[4] == pytest.approx(0.03)
    assert row[5] == pytest.approx(1 / 3)
    assert headers[6] == "ratio (paper)" and row[6] == "1/8 ≈ 0.125"      # ours beside the paper's
    assert row[7] == pytest.approx(35.0)
    # MC-SF's mean latency over the best benchmark's at the largest horizon: 35 / (5 + 0.03 · 3000)
    assert headers[11] == "mean ratio (ours)" and row[11] == pytest.approx(35.0 / 95.0)


def test_r2_mean_ratio_is_nan_without_a_benchmark_and_the_note_names_its_sources():
    rows = [{"label": "mcsf", "rate": 50.0, "num_requests_config": n, "mean_latency": 1.0 + n}
            for n in (1000, 2000)]
    _, headers, table, note = summarize_r2(rows, None)
    (row,) = table
    assert row[3] == "–" and row[11] != row[11]                  # no benchmark: NaN, not a number
    # the figures are third-party summaries' readings of the paper, and the note says so
    assert "summary" in note and "not checked" in note
    assert "32.11" in note and "46.47" in note and "0.69" in note


def test_r2_keeps_each_eviction_semantics_apart_restart_first():
    rows = []
    for eviction, bench_slope in (("recompute", 0.04), ("restart", 0.08)):
        for n in (1000, 2000):
            for label, slope in (("mcsf", 0.02), ("mc-benchmark", bench_slope)):
                rows.append({"label": label, "rate": 50.0, "num_requests_config": n, "eviction": eviction,
                             "mean_latency": 1.0 + slope * n})
    _, _, table, note = summarize_r2(rows, None)
    assert [r[0] for r in table] == ["restart", "recompute"]
    assert [r[5] for r in table] == [pytest.approx(0.25), pytest.approx(0.5)]
    assert [r[6] for r in table] == ["1/3 ≈ 0.333"] * 2
    assert "restart" in note


def test_r2_spec_runs_both_semantics():
    evictions = {p["engine"]["eviction"] for p in bundled_spec("mcsf-real-trace").points()}
    assert evictions == {"restart", "recompute"}


def test_r2_horizons_replace_only_the_horizon_axis_and_leave_the_bundled_default():
    spec = bundled_spec("mcsf-real-trace")
    assert spec.num_requests == (1000, 2000, 3000)
    longer = with_horizons(spec, [10000, 2000, 6000, 2000])
    assert longer.num_requests == (2000, 6000, 10000)       # sorted, duplicates merged
    assert {p["num_requests"] for p in longer.points()} == {2000, 6000, 10000}
    strip = lambda points: [{k: v for k, v in p.items() if k != "num_requests"} for p in points]
    assert strip(longer.points()[:len(spec.points()) // 3]) == strip(spec.points()[:len(spec.points()) // 3])
    assert longer.hash != spec.hash                        # another sweep: its own --out
    assert bundled_spec("mcsf-real-trace").num_requests == (1000, 2000, 3000)


@pytest.mark.parametrize("horizons, message", [([1000], "two distinct"), ([3000, 3000], "two distinct"),
                                               ([0, 1000], "in [1, "), ([1000, 10 ** 8], "in [1, "),
                                               ([1000, True], "in [1, ")])
def test_r2_horizons_refuse_what_gives_no_slope(horizons, message):
    with pytest.raises(ConfigError, match=r"--horizons: .*" + re.escape(message)):
        with_horizons(bundled_spec("mcsf-real-trace"), horizons)


def test_r2_rates_replace_only_the_rate_axis_and_leave_the_bundled_default():
    spec = bundled_spec("mcsf-real-trace")
    assert spec.workload["rates"] == [10.0, 50.0]
    scan = with_rates(spec, [6, 4.5, 6.0])
    assert scan.workload["rates"] == [4.5, 6.0]             # sorted, duplicates merged
    assert {p["workload"]["rate"] for p in scan.points()} == {4.5, 6.0}
    strip = lambda points: [{k: v for k, v in p.items() if k != "workload"} for p in points]
    assert strip(scan.points()) == strip(spec.points())    # the other axes unchanged
    assert scan.hash != spec.hash
    assert bundled_spec("mcsf-real-trace").workload["rates"] == [10.0, 50.0]


@pytest.mark.parametrize("rates", [[], [0], [-1.0], [float("nan")], [float("inf")], [True], ["4"]])
def test_r2_rates_refuse_what_is_not_a_positive_rate(rates):
    with pytest.raises(ConfigError, match=r"--rates: .*finite and > 0"):
        with_rates(bundled_spec("mcsf-real-trace"), rates)


def test_r2_alpha_protection_clears_until_fit_so_restart_runs_end():
    # clear_mode "all" livelocks under restart (tests/policies/test_mcsf.py); the R2 sweep must finish
    modes = {p["params"].get("clear_mode") for p in bundled_spec("mcsf-real-trace").points()
             if p["policy"] == "alpha-protection"}
    assert modes == {"until-fit"}


def test_r3_ratios_are_relative_to_hsf_in_interval_order():
    rows = [{"predictor": p, "label": label, "total_latency": value, "num_evictions": 7}
            for p, values in (("naive", (100, 150, 400)), ("interval:alpha=0.5", (100, 90, 120)),
                              ("interval:alpha=1", (100, 100, 100)))
            for label, value in zip(("hsf", "amin", "amax"), values)]
    _, headers, table, _ = summarize_r3(rows, None)
    assert headers[:2] == ["eviction", "predictor"]
    assert [r[:2] for r in table] == [["recompute", "interval:alpha=1"], ["recompute", "interval:alpha=0.5"],
                                      ["recompute", "naive"]]      # rows stored without the setting
    assert headers[3] == "A_min / H-SF (paper)" and headers[5] == "A_max / H-SF (paper)"
    assert table[1][2:] == [pytest.approx(0.9), "–", pytest.approx(1.2), "–", 7]   # no paper figure
    assert table[2][2:] == [pytest.approx(1.5), "≈ 1", pytest.approx(4.0), "up to 5", 7]


def test_r3_prints_restart_first_then_recompute_each_against_its_own_hsf():
    rows = [{"predictor": "naive", "label": label, "total_latency": value, "num_evictions": ev,
             "eviction": eviction}
            for eviction, values in (("recompute", (100, 170, 400, 3)), ("restart", (100, 180, 400, 5)))
            for label, value, ev in zip(("hsf", "amin", "amax"), values[:3], (0, values[3], 0))]
    _, _, table, _ = summarize_r3(rows, None)
    assert table == [["restart", "naive", pytest.approx(1.8), "≈ 1", pytest.approx(4.0), "up to 5", 5],
                     ["recompute", "naive", pytest.approx(1.7), "≈ 1", pytest.approx(4.0), "up to 5", 3]]


def test_r3_spec_runs_both_semantics():
    evictions = {p["engine"]["eviction"] for p in bundled_spec("amin-intervals").points()}
    assert evictions == {"restart", "recompute"}


def test_r2_command_runs_the_horizons_given_into_its_own_sweep(tmp_path):
    import json

    from cli_helpers import runner
    from kvsched.cli.app import app
    out = tmp_path / "r2"
    result = runner.invoke(app, ["reproduce", "mcsf-real-trace", "--horizons", "10", "--horizons", "5",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.stderr[-2000:]
    assert json.loads((out / "spec.json").read_text())["spec"]["num_requests"] == [5, 10]
    assert "n=10" in result.stdout                       # the table's largest horizon
    refused = runner.invoke(app, ["reproduce", "mcsf-real-trace", "--horizons", "10", "--out", str(out)])
    assert refused.exit_code == 2 and "--horizons" in refused.stderr and "two distinct" in refused.stderr


def test_r2_command_runs_the_rates_given_into_its_own_sweep(tmp_path):
    import json

    from cli_helpers import runner
    from kvsched.cli.app import app
    out = tmp_path / "r2"
    result = runner.invoke(app, ["reproduce", "mcsf-real-trace", "--horizons", "10", "--horizons", "5",
                                 "--rates", "4.5", "--out", str(out)])
    assert result.exit_code == 0, result.stderr[-2000:]
    assert json.loads((out / "spec.json").read_text())["spec"]["workload"]["rates"] == [4.5]
    assert "4.5" in result.stdout and "1/8 ≈" not in result.stdout   # no paper cell at this rate
    for bad in ("0", "nan", "inf", "-2"):
        refused = runner.invoke(app, ["reproduce", "mcsf-real-trace", "--rates", bad, "--out", str(tmp_path / "n")])
        assert refused.exit_code == 2 and "--rates" in refused.stderr and "finite and > 0" in refused.stderr
        assert not (tmp_path / "n").exists()                # refused before anything is written
