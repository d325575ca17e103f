"""Matplotlib figures of a sweep. Each function returns a Figure; `html.py` embeds them as SVG.

Built to stay readable at 20+ series (issue 19): small multiples, one panel per horizon or per
predictor (`stats.by_panel`), each series one look (colour, line style, marker) in every panel, one
legend for the whole figure placed outside the axes, and confidence intervals only with
`stats.MIN_CI_SEEDS` seeds or more (bands for a few series, error bars for many).
"""

from __future__ import annotations

import math

import numpy as np

from .stats import MIN_CI_SEEDS, by_panel, by_series_and_rate, mean_ci

#: Panels per row of a small-multiples figure, and the size of one panel (inches).
PANEL_COLUMNS = 3
PANEL_SIZE = (4.2, 3.0)


def _figure(num_panels: int, *, sharey: bool = False, panel_height: float = PANEL_SIZE[1]):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cols = min(PANEL_COLUMNS, num_panels)
    rows = math.ceil(num_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(6.4, PANEL_SIZE[0] * cols), panel_height * rows + 0.6),
                             layout="constrained", squeeze=False, sharey=sharey)
    flat = list(axes.flat)
    for ax in flat[num_panels:]:
        ax.set_visible(False)
    for ax in flat:
        ax.grid(True, alpha=0.3)
    return fig, flat[:num_panels]


#: Line styles and markers that tell apart series sharing a colour (tab10 repeats every ten).
_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"))


def _styles(labels: list[str]) -> dict[str, dict]:
    """A distinct look per series, the same in every panel: tab10's colours, then the next line
    style and marker once the colours run out (tab20's pale halves were hard to tell apart)."""
    import matplotlib
    colours = matplotlib.colormaps["tab10"].colors
    out = {}
    for i, label in enumerate(labels):
        linestyle, marker = _STYLES[(i // len(colours)) % len(_STYLES)]
        out[label] = {"color": colours[i % len(colours)], "linestyle": linestyle, "marker": marker}
    return out


def _labels(panels) -> list[str]:
    seen: dict[str, None] = {}
    for _, rows in panels:
        for label in by_series_and_rate(rows, "seed"):
            seen.setdefault(label)
    return list(seen)


#: Series beyond which the legend goes below the panels, in columns, rather than beside them.
LEGEND_BESIDE_MAX = 8
#: Rows of the legend below the panels before it takes another column, and the height of one
#: row (inches, at the legend's "small" font).
LEGEND_ROWS = 8
LEGEND_ROW_HEIGHT = 0.17


def _legend_outside(fig, styles: dict[str, dict], *, markers: bool = True) -> None:
    """One legend for the figure, outside the panels: beside them, or below them in columns when
    there are many series (the saved image grows to hold it: `html._svg` saves with a tight box)."""
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=s["color"], linestyle=s["linestyle"],
                      marker=s["marker"] if markers else "") for s in styles.values()]
    if len(handles) <= LEGEND_BESIDE_MAX:
        fig.legend(handles, list(styles), loc="outside right upper", fontsize="small")
    else:
        # the figure grows by the legend's height: constrained layout would shrink the panels
        fig.set_figheight(fig.get_figheight() + LEGEND_ROW_HEIGHT * min(len(handles), LEGEND_ROWS) + 0.2)
        fig.legend(handles, list(styles), loc="outside lower center", fontsize="small",
                   ncols=math.ceil(len(handles) / LEGEND_ROWS))


def metric_vs_rate(rows: list[dict], metric: str, ylabel: str, title: str):
    """Mean over seeds per arrival rate, one line per series in each panel, with its 95%
    confidence interval when there are enough seeds (a bar per series when a panel has one rate)."""
    panels = by_panel(rows)
    styles = _styles(_labels(panels))
    single_rate = len({r.get("rate") or 0.0 for r in rows}) == 1
    most_series = max(len(by_series_and_rate(panel_rows, metric)) for _, panel_rows in panels)
    # one rate: a bar per series, and panels tall enough that the series' names do not overlap
    height = max(PANEL_SIZE[1], BAR_HEIGHT * most_series + 1.0) if single_rate else PANEL_SIZE[1]
    fig, axes = _figure(len(panels), panel_height=height)
    for ax, (panel, panel_rows) in zip(axes, panels):
        series = by_series_and_rate(panel_rows, metric)
        if single_rate:
            _bars(ax, series, ylabel)
        else:
            _lines(ax, series, styles)
            ax.set_xlabel("arrival rate (req/s)")
            ax.set_ylabel(ylabel)
        if panel:
            ax.set_title(panel, fontsize="medium")
    fig.suptitle(title)
    if not single_rate:
        _legend_outside(fig, styles)
    return fig


#: Height of one bar with its label (inches).
BAR_HEIGHT = 0.2
#: Series in a panel up to which confidence intervals are shaded bands; beyond, the bands hide
#: each other, so each mean gets an error bar, the series nudged apart along the rate axis.
BANDS_MAX = 4


def _lines(ax, series: dict, styles: dict) -> None:
    all_rates = sorted({r for per_rate in series.values() for r in per_rate})
    # the nudge spreads a rate's error bars over at most 8% of the axis and 30% of the gap to the
    # next rate, so that a cluster still reads as that rate
    spread = 0.0
    if len(all_rates) > 1:
        spread = min(0.3 * min(np.diff(all_rates)), 0.08 * (all_rates[-1] - all_rates[0]))
    bands = len(series) <= BANDS_MAX
    for i, (label, per_rate) in enumerate(series.items()):
        rates = np.array(sorted(per_rate))
        stats = [mean_ci(per_rate[r]) for r in rates]
        mean = np.array([s[0] for s in stats])
        with_ci = all(s[2] >= MIN_CI_SEEDS for s in stats)
        if with_ci and not bands:
            rates = rates + spread * (i / max(1, len(series) - 1) - 0.5)
        ax.plot(rates, mean, label=label, **styles[label])
        if not with_ci:
            continue
        half = np.array([s[1] for s in stats])
        low = np.minimum(half, mean)          # the metrics are never negative: clip the interval at 0
        if bands:
            ax.fill_between(rates, mean - low, mean + half, color=styles[label]["color"], alpha=0.2)
        else:
            ax.errorbar(rates, mean, yerr=[low, half], fmt="none", ecolor=styles[label]["color"],
                        elinewidth=1, capsize=2, alpha=0.7)


def _bars(ax, series: dict, xlabel: str) -> None:
    labels = list(series)
    stats = [mean_ci(next(iter(series[label].values()))) for label in labels]
    means = np.array([m for m, _, _ in stats])
    half = np.array([h if n >= MIN_CI_SEEDS else 0.0 for _, h, n in stats])
    ax.barh(range(len(labels)), means, xerr=[np.minimum(half, means), half], color="tab:blue", alpha=0.7)
    ax.set_yticks(range(len(labels)), labels, fontsize="small")
    ax.set_ylim(len(labels) - 0.5, -0.5)      # first series on top, no empty margin
    ax.set_xlabel(xlabel)


def latency_cdf(panels: list[tuple[str | None, dict[str, np.ndarray]]], rate: float):
    """Empirical CDF of end-to-end latency per series at one arrival rate (all seeds pooled),
    one panel per (title, {label: latencies})."""
    labels: dict[str, None] = {}
    for _, data in panels:
        for label in data:
            labels.setdefault(label)
    styles = _styles(list(labels))
    fig, axes = _figure(len(panels), sharey=True)
    for ax, (title, data) in zip(axes, panels):
        for label, latency in data.items():
            x = np.sort(latency[~np.isnan(latency)])
            if x.size:
                ax.step(x, np.arange(1, x.size + 1) / x.size, where="post",
                        color=styles[label]["color"], linestyle=styles[label]["linestyle"])
        ax.set_xlabel("end-to-end latency (s)")
        ax.set_ylabel("fraction of requests")
        if title:
            ax.set_title(title, fontsize="medium")
    fig.suptitle(f"Latency CDF at {rate:g} req/s")
    _legend_outside(fig, styles, markers=False)
    return fig
