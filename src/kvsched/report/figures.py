"""Matplotlib figures of a sweep. Each function returns a Figure; `html.py` embeds them as SVG.

Built to stay readable at 20+ series (issue 19): small multiples, one panel per horizon or per
predictor (`stats.by_panel`), each series one colour in every panel, one legend for the whole
figure placed outside the axes, and confidence bands only with `stats.MIN_CI_SEEDS` seeds or more.
"""

from __future__ import annotations

import math

import numpy as np

from .stats import MIN_CI_SEEDS, by_panel, by_series_and_rate, mean_ci

#: Panels per row of a small-multiples figure, and the size of one panel (inches).
PANEL_COLUMNS = 3
PANEL_SIZE = (4.2, 3.0)


def _figure(num_panels: int, *, sharey: bool = False):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cols = min(PANEL_COLUMNS, num_panels)
    rows = math.ceil(num_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(6.4, PANEL_SIZE[0] * cols), PANEL_SIZE[1] * rows + 0.6),
                             layout="constrained", squeeze=False, sharey=sharey)
    flat = list(axes.flat)
    for ax in flat[num_panels:]:
        ax.set_visible(False)
    for ax in flat:
        ax.grid(True, alpha=0.3)
    return fig, flat[:num_panels]


def _colours(labels: list[str]) -> dict[str, tuple]:
    """One colour per series, the same in every panel (tab10, or tab20 beyond ten series)."""
    import matplotlib
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def _labels(panels) -> list[str]:
    seen: dict[str, None] = {}
    for _, rows in panels:
        for label in by_series_and_rate(rows, "seed"):
            seen.setdefault(label)
    return list(seen)


def _legend_outside(fig, colours: dict[str, tuple], marker: str = "o") -> None:
    """One legend for the figure, beside the panels (below them when there are many series)."""
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=c, marker=marker) for c in colours.values()]
    if len(handles) <= 8:
        fig.legend(handles, list(colours), loc="outside right upper", fontsize="small")
    else:
        fig.legend(handles, list(colours), loc="outside lower center", fontsize="small",
                   ncols=min(4, math.ceil(len(handles) / 6)))


def metric_vs_rate(rows: list[dict], metric: str, ylabel: str, title: str):
    """Mean over seeds per arrival rate, one line per series in each panel, with a 95%
    confidence band when there are enough seeds (a bar per series when a panel has one rate)."""
    panels = by_panel(rows)
    colours = _colours(_labels(panels))
    fig, axes = _figure(len(panels))
    single_rate = len({r.get("rate") or 0.0 for r in rows}) == 1
    for ax, (panel, panel_rows) in zip(axes, panels):
        series = by_series_and_rate(panel_rows, metric)
        if single_rate:
            _bars(ax, series, ylabel)
        else:
            _lines(ax, series, colours)
            ax.set_xlabel("arrival rate (req/s)")
            ax.set_ylabel(ylabel)
        if panel:
            ax.set_title(panel, fontsize="medium")
    fig.suptitle(title)
    if not single_rate:
        _legend_outside(fig, colours)
    return fig


def _lines(ax, series: dict, colours: dict) -> None:
    for label, per_rate in series.items():
        rates = sorted(per_rate)
        stats = [mean_ci(per_rate[r]) for r in rates]
        mean = np.array([s[0] for s in stats])
        ax.plot(rates, mean, marker="o", color=colours[label], label=label)
        if all(s[2] >= MIN_CI_SEEDS for s in stats):
            half = np.array([s[1] for s in stats])
            ax.fill_between(rates, mean - half, mean + half, color=colours[label], alpha=0.2)


def _bars(ax, series: dict, xlabel: str) -> None:
    labels = list(series)
    stats = [mean_ci(next(iter(series[label].values()))) for label in labels]
    half = [h if n >= MIN_CI_SEEDS else 0.0 for _, h, n in stats]
    ax.barh(range(len(labels)), [m for m, _, _ in stats], xerr=half, color="tab:blue", alpha=0.7)
    ax.set_yticks(range(len(labels)), labels, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)


def latency_cdf(panels: list[tuple[str | None, dict[str, np.ndarray]]], rate: float):
    """Empirical CDF of end-to-end latency per series at one arrival rate (all seeds pooled),
    one panel per (title, {label: latencies})."""
    labels: dict[str, None] = {}
    for _, data in panels:
        for label in data:
            labels.setdefault(label)
    colours = _colours(list(labels))
    fig, axes = _figure(len(panels), sharey=True)
    for ax, (title, data) in zip(axes, panels):
        for label, latency in data.items():
            x = np.sort(latency[~np.isnan(latency)])
            if x.size:
                ax.step(x, np.arange(1, x.size + 1) / x.size, where="post", color=colours[label])
        ax.set_xlabel("end-to-end latency (s)")
        ax.set_ylabel("fraction of requests")
        if title:
            ax.set_title(title, fontsize="medium")
    fig.suptitle(f"Latency CDF at {rate:g} req/s")
    _legend_outside(fig, colours, marker="")
    return fig
