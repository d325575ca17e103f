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
    # the five figures as SVG data URIs: nothing loaded from outside
    assert page.count('src="data:image/svg+xml;base64,') == page.count("src=") == 5
    assert "http" not in page
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


# --------------------------------------------------------------------------- 20+ series (issue 19)

def _many_series_spec(seeds: str) -> str:
    """3 horizons × 2 rates × 8 policy variants = 24 series, as in `reproduce mcsf-real-trace`."""
    return f"""
name = "many"
seeds = {seeds}
num_requests = [40, 60, 80]
per_request = true
predictors = ["exact"]
[workload]
kind = "default"
rates = [4.0, 16.0]
[engine]
cost = "linear:d0=0.01,d1=2e-7"
kv_capacity = 3000
block_size = 16
[[policy]]
id = "mcsf"
[[policy]]
id = "vllm"
params = {{ watermark = [0.0, 0.01, 0.02, 0.05] }}
[[policy]]
id = "sarathi"
params = {{ chunk_size = [128, 512] }}
[[policy]]
id = "mc-benchmark"
"""


@pytest.fixture(scope="module")
def many_series(tmp_path_factory):
    out = {}
    for name, seeds in (("one", "[0]"), ("three", "[0, 1, 2]")):
        root = tmp_path_factory.mktemp(name)
        spec = load_spec(_write(root, _many_series_spec(seeds)))
        run_sweep(spec, ResultStore.open(root / "out", spec), jobs=2)
        out[name] = (root, write_report(root / "out", root / "report.html").read_text())
    return out


def _paired_rows(page: str) -> list[list[str]]:
    import re
    section = page[page.index("Paired comparison"):page.index("Gap to the bound")]
    return [re.findall(r"<td(?: class=\"num\")?>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", section)
            if "<td>" in row]


def test_small_multiples_one_panel_per_horizon_and_one_legend(many_series):
    root, page = many_series["one"]
    svg = (root / "report_figures" / "mean_latency_vs_rate.svg").read_text()
    for title in ("n = 40", "n = 60", "n = 80"):
        assert title in svg
    # one legend for the figure: each series named once, not once per panel
    assert svg.count("vllm(watermark=0.01)") == 1 and svg.count("sarathi(chunk_size=512)") == 1
    assert "n=40" not in svg                          # the horizon is the panel, not in the labels


def test_paired_table_lists_only_series_with_pairs_and_no_ci_from_one_seed(many_series):
    _, page = many_series["one"]
    rows = _paired_rows(page)
    assert len(rows) == 3 * 7 * 2                     # 3 panels × 7 series vs mcsf × 2 metrics
    assert all(int(r[-2]) == 2 for r in rows)          # pairs: the two rates
    assert all(r[5] == "–" for r in rows)              # no CI from one seed ...
    assert "this sweep has 1 seed, so the ratios are point estimates" in page   # ... and it says so
    assert "figures and tables show means only" in page
    assert " ± " not in page


def test_with_three_seeds_the_cis_appear(many_series):
    _, page = many_series["three"]
    rows = _paired_rows(page)
    assert rows and all(int(r[-1]) == 3 and r[5] != "–" for r in rows)
    assert "95% confidence intervals across the 3 seeds" in page and " ± " in page


def test_paired_ratios_drop_series_without_pairs():
    rows = [{"label": "a", "rate": 1.0, "seed": 0, "mean_latency": 2.0},
            {"label": "b", "rate": 2.0, "seed": 0, "mean_latency": 3.0}]   # never on the same stream
    assert paired_ratios(rows, "mean_latency") == []


def test_every_series_gets_its_own_look():
    """Beyond tab10's ten colours the line style and marker change: 50 series, 50 looks."""
    from kvsched.report.figures import _styles
    styles = _styles([f"series {i}" for i in range(50)])
    looks = {(s["color"], str(s["linestyle"]), s["marker"]) for s in styles.values()}
    assert len(looks) == 50
    assert styles["series 0"]["color"] == styles["series 10"]["color"]
    assert styles["series 0"]["linestyle"] != styles["series 10"]["linestyle"]


def test_tables_align_numbers_right_and_text_left():
    from kvsched.report.html import _table
    page = _table(["policy", "rate", "mean"], [["a", 1.0, "2.1 ± 0.3"], ["b", 2, None]])
    assert page.startswith('<div class="table"><table>')
    assert '<th>policy</th><th class="num">rate</th><th class="num">mean</th>' in page
    assert '<td>b</td><td class="num">2</td><td class="num">–</td>' in page


def test_bar_panels_grow_with_the_number_of_series():
    """One rate: a bar per series, 0.2 in each, so that 24 names do not overlap (seen in Chromium)."""
    from kvsched.report.figures import metric_vs_rate
    rows = [{"label": f"p{i}", "rate": 1.0, "seed": 0, "mean_latency": 1.0 + i} for i in range(24)]
    fig = metric_vs_rate(rows, "mean_latency", "s", "t")
    assert fig.get_figheight() == pytest.approx(0.2 * 24 + 1.0 + 0.6)
    few = metric_vs_rate(rows[:3], "mean_latency", "s", "t")
    assert few.get_figheight() == pytest.approx(3.0 + 0.6)
