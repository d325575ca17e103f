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


def series_label(row: dict, multiple_predictors: bool, multiple_horizons: bool = False) -> str:
    label = row.get("label") or row.get("policy_id")
    if multiple_predictors:
        label = f"{label} [{row.get('predictor') or 'none'}]"
    if multiple_horizons:
        label = f"{label} n={row.get('num_requests_config')}"
    return label


def _multiples(rows: list[dict]) -> tuple[bool, bool]:
    """Whether the rows span several predictors, and several horizons."""
    return (len({r.get("predictor") for r in rows}) > 1,
            len({r.get("num_requests_config") for r in rows}) > 1)


def by_series_and_rate(rows: list[dict], metric: str) -> dict[str, dict[float, list[float]]]:
    """label → rate → metric values across seeds."""
    multi = _multiples(rows)
    out: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        out[series_label(row, *multi)][row.get("rate") or 0.0].append(row.get(metric))
    return out


def paired_ratios(rows: list[dict], metric: str) -> list[dict]:
    """For each series vs the first one: the ratio of `metric` on identical request streams
    (same workload, rate, predictor and seed), with a 95% CI across the pairs."""
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
        pairs = [keyed[label][k] / keyed[base][k] for k in keyed[label]
                 if k in keyed[base] and keyed[base][k] and keyed[label][k] is not None]
        mean, half, n = mean_ci(pairs)
        out.append({"series": label, "baseline": base, "metric": metric, "mean_ratio": mean,
                    "ci95": half, "pairs": n})
    return out
