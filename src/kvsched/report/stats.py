"""Grouping and confidence intervals over result rows (plain dicts; no pandas)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

# Two-sided 95% Student t quantiles by degrees of freedom (normal beyond 30).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}


def t95(df: int) -> float:
    if df < 1:
        return float("nan")
    keys = [k for k in _T95 if k <= df]
    return _T95[max(keys)] if df <= 30 else 1.96


def mean_ci(values) -> tuple[float, float, int]:
    """Mean and the half-width of its 95% confidence interval (NaN half-width for one value)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), 0
    if x.size == 1:
        return float(x[0]), float("nan"), 1
    return float(x.mean()), t95(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size), int(x.size)


def series_label(row: dict, multiple_predictors: bool, multiple_horizons: bool = False,
                 multiple_evictions: bool = False) -> str:
    label = row.get("label") or row.get("policy_id")
    if multiple_predictors:
        label = f"{label} [{row.get('predictor') or 'none'}]"
    if multiple_horizons:
        label = f"{label} n={row.get('num_requests_config')}"
    if multiple_evictions:          # points stored before the setting existed evicted by recompute
        label = f"{label} ({row.get('eviction') or 'recompute'})"
    return label


def _multiples(rows: list[dict]) -> tuple[bool, bool, bool]:
    """Whether the rows span several predictors, several horizons, and several eviction semantics."""
    return (len({r.get("predictor") for r in rows}) > 1,
            len({r.get("num_requests_config") for r in rows}) > 1,
            len({r.get("eviction") or "recompute" for r in rows}) > 1)


def by_series_and_rate(rows: list[dict], metric: str) -> dict[str, dict[float, list[float]]]:
    """label → rate → metric values across seeds."""
    multi = _multiples(rows)
    out: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        out[series_label(row, *multi)][row.get("rate") or 0.0].append(row.get(metric))
    return out


#: Seeds a 95% confidence interval needs before the report shows one: with two, the t quantile
#: (12.7) makes the interval wider than most effects, which reads as noise, not as a result.
MIN_CI_SEEDS = 3


def panel_axis(rows: list[dict]) -> str | None:
    """The dimension the report splits into small multiples: the horizon when the rows span
    several, else the predictor when they span several, else none (one panel)."""
    multiple_predictors, multiple_horizons, _ = _multiples(rows)
    if multiple_horizons:
        return "num_requests_config"
    return "predictor" if multiple_predictors else None


def panel_title(axis: str | None, value) -> str | None:
    if axis is None:
        return None
    return f"n = {value}" if axis == "num_requests_config" else f"predictor {value or 'none'}"


def by_panel(rows: list[dict]) -> list[tuple[str | None, list[dict]]]:
    """(panel title, its rows) in the order the values first appear (one panel when no axis).
    Within a panel the axis takes one value, so labels computed on a panel's rows leave it out."""
    axis = panel_axis(rows)
    if axis is None:
        return [(None, rows)]
    panels: dict = {}
    for row in rows:
        panels.setdefault(row.get(axis), []).append(row)
    return [(panel_title(axis, value), panel_rows) for value, panel_rows in panels.items()]


def num_seeds(rows: list[dict]) -> int:
    return len({r.get("seed") for r in rows})


def paired_ratios(rows: list[dict], metric: str) -> list[dict]:
    """For each series vs the first one of its panel (`by_panel`): the ratio of `metric` on
    identical request streams (same workload, rate, predictor, seed and horizon), pooled over
    rates and seeds. Series without a single pair are left out; ``ci95`` (across the pairs) is
    NaN unless the pairs come from at least `MIN_CI_SEEDS` seeds."""
    out = []
    for title, panel_rows in by_panel(rows):
        for entry in _paired_in_panel(panel_rows, metric):
            out.append({**entry, "panel": title})
    return out


def _paired_in_panel(rows: list[dict], metric: str) -> list[dict]:
    multi = _multiples(rows)
    keyed: dict[str, dict[tuple, float]] = defaultdict(dict)
    order: list[str] = []
    for row in rows:
        label = series_label(row, *multi)
        if label not in order:
            order.append(label)
        key = (row.get("workload_kind"), row.get("rate"), row.get("predictor"), row.get("seed"),
               row.get("num_requests_config"))
        keyed[label][key] = row.get(metric)
    if not order:
        return []
    base = order[0]
    out = []
    for label in order[1:]:
        keys = [k for k in keyed[label]
                if k in keyed[base] and keyed[base][k] and keyed[label][k] is not None]
        mean, half, n = mean_ci([keyed[label][k] / keyed[base][k] for k in keys])
        if n == 0:
            continue
        seeds = len({k[3] for k in keys})
        out.append({"series": label, "baseline": base, "metric": metric, "mean_ratio": mean,
                    "ci95": half if seeds >= MIN_CI_SEEDS else float("nan"), "pairs": n, "seeds": seeds})
    return out
