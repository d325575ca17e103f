"""Matplotlib figures of a sweep. Each function returns a Figure; `html.py` embeds them as SVG."""

from __future__ import annotations

import math

import numpy as np

from .stats import by_series_and_rate, mean_ci


def _new_figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    ax.grid(True, alpha=0.3)
    return fig, ax


def metric_vs_rate(rows: list[dict], metric: str, ylabel: str, title: str):
    """Mean over seeds per arrival rate, one line per policy, with a 95% confidence band
    (a bar per policy, with its interval, when the sweep has a single rate)."""
    series = by_series_and_rate(rows, metric)
    if len({rate for per_rate in series.values() for rate in per_rate}) == 1:
        return _bars(series, ylabel, title)
    fig, ax = _new_figure()
    for label, per_rate in series.items():
        rates = sorted(per_rate)
        stats = [mean_ci(per_rate[r]) for r in rates]
        mean = np.array([s[0] for s in stats])
        half = np.array([0.0 if math.isnan(s[1]) else s[1] for s in stats])
        line, = ax.plot(rates, mean, marker="o", label=label)
        ax.fill_between(rates, mean - half, mean + half, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("arrival rate (req/s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small")
    return fig


def _bars(series: dict, xlabel: str, title: str):
    fig, ax = _new_figure()
    labels = list(series)
    stats = [mean_ci(next(iter(series[label].values()))) for label in labels]
    half = [0.0 if math.isnan(h) else h for _, h, _ in stats]
    ax.barh(range(len(labels)), [m for m, _, _ in stats], xerr=half, color="tab:blue", alpha=0.7)
    ax.set_yticks(range(len(labels)), labels, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.set_size_inches(6.4, max(3.0, 0.3 * len(labels) + 1))
    return fig


def latency_cdf(requests: dict[str, np.ndarray], rate: float):
    """Empirical CDF of end-to-end latency per policy at one arrival rate (all seeds pooled)."""
    fig, ax = _new_figure()
    for label, latency in requests.items():
        x = np.sort(latency[~np.isnan(latency)])
        if x.size:
            ax.step(x, np.arange(1, x.size + 1) / x.size, where="post", label=label)
    ax.set_xlabel("end-to-end latency (s)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"Latency CDF at {rate:g} req/s")
    ax.legend(fontsize="small")
    return fig
