"""The HTML report: self-contained, with every section, and figures saved as files."""

from __future__ import annotations


import pytest

from kvsched.errors import ConfigError
from kvsched.experiments import load_spec, run_sweep
from kvsched.experiments.store import ResultStore
from kvsched.report import write_report
from kvsched.report.stats import mean_ci, paired_ratios

from sweep_helpers import SPEC, _write


def test_report_has_every_section_and_inline_figures(tmp_path):
    spec = load_spec(_write(tmp_path))
    run_sweep(spec, ResultStore.open(tmp_path / "out", spec))
    page = write_report(tmp_path / "out", tmp_path / "report.html").read_text()
    for heading in ("Mean end-to-end latency", "p99 end-to-end latency", "Mean time to first token",
                    "Throughput", "Latency CDF", "Paired comparison", "Gap to the bound"):
        assert heading in page
    assert page.count("<svg") == 5
    assert "src=" not in page and "href=\"http" not in page      # nothing loaded from outside
    for label in ("vllm(watermark=0.0)", "vllm(watermark=0.05)", "sarathi"):
        assert label in page
    figures = sorted(p.name for p in (tmp_path / "report_figures").iterdir())
    assert figures == ["latency_cdf.svg", "mean_latency_vs_rate.svg", "mean_ttft_vs_rate.svg",
                       "p99_latency_vs_rate.svg", "throughput_tokens_per_s_vs_rate.svg"]


def test_report_of_an_empty_sweep_is_a_clear_error(tmp_path):
    spec = load_spec(_write(tmp_path))
    ResultStore.open(tmp_path / "out", spec)
    with pytest.raises(ConfigError, match="no finished points"):
        write_report(tmp_path / "out", tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()


def test_mean_ci_by_hand():
    mean, half, n = mean_ci([1.0, 2.0, 3.0])
    # sd = 1, t(2) = 4.303, half-width = 4.303 / sqrt(3)
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.303 / 3 ** 0.5)


def test_paired_ratios_pair_by_rate_and_seed():
    rows = [{"label": "a", "policy_id": "a", "rate": 1.0, "seed": s, "mean_latency": 2.0 * (s + 1)}
            for s in range(3)]
    rows += [{"label": "b", "policy_id": "b", "rate": 1.0, "seed": s, "mean_latency": 3.0 * (s + 1)}
             for s in range(3)]
    (ratio,) = paired_ratios(rows, "mean_latency")
    assert ratio["series"] == "b" and ratio["baseline"] == "a"
    assert ratio["mean_ratio"] == pytest.approx(1.5) and ratio["pairs"] == 3
    assert ratio["ci95"] == pytest.approx(0.0)


def test_the_spec_s_first_policy_is_the_paired_baseline(tmp_path):
    from kvsched.experiments import load_runs
    text = SPEC.replace('[[policy]]\nid = "sarathi"\n', "")
    text = text.replace('[[policy]]\nid = "vllm"', '[[policy]]\nid = "sarathi"\n\n[[policy]]\nid = "vllm"')
    spec = load_spec(_write(tmp_path, text))
    run_sweep(spec, ResultStore.open(tmp_path / "out", spec), jobs=2)
    rows = sorted(load_runs(tmp_path / "out").to_pylist(), key=lambda r: r["point_index"])
    assert [r["point_index"] for r in rows] == list(range(len(spec.points())))
    assert {p["baseline"] for p in paired_ratios(rows, "mean_latency")} == {"sarathi"}
