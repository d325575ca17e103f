"""Output-length predictors: they add predictions to a workload (part of the request stream).

A predictor is applied once to a workload, with its own seeded generator, so that every policy in
a comparison sees the same predictions (DESIGN.md §6). ``parse_predictor("interval:alpha=0.5")``
builds one from the command line; ``apply_predictor(workload, spec, seed)`` does both steps.

Specs (parameters after ``:``, separated by ``,`` or ``;``):

- ``exact``: point = o, interval [o, o].
- ``point:sigma=S``: point = max(1, round(o · exp(S·Z))), Z ~ N(0, 1) (multiplicative log-normal
  noise with median 1). No interval.
- ``interval:alpha=A``: an interval [lo, hi] with lo/hi ≈ A that contains o: a real lower end ℓ is
  drawn uniformly in [A·o, o] (so the truth sits at a uniformly random position), then
  lo = max(1, ⌊ℓ⌋), hi = ⌈ℓ/A⌉ (rounding keeps lo ≤ o ≤ hi). A = 1 is exact.
- ``binned:width=W``: the fixed-width bin holding o: [k·W + 1, (k+1)·W] (W = 50, o = 120 → [101, 150]).
- ``naive``: [1, 1000] for every request (``naive:lo=L,hi=H`` to change the ends). The truth can
  lie outside when o > H.
- ``logt:scale=S[,nu=V,coverage=C]``: a predicted log-t distribution per request (TIE): point =
  its median, interval = its central C quantiles (holds the truth with probability C);
  `conditional_quantile` re-predicts from it as tokens are generated (`LogT`).
- ``miss=P`` (interval, binned): with probability P the interval misses the truth: it keeps its
  width and is moved just past o, above or below with equal probability (above when o = 1), by a
  gap uniform in {1, …, width + 1}.

Columns: point predictions go to ``predicted_output_tokens``; interval predictors fill
``predicted_lo``/``predicted_hi`` and set the point to ``hi`` (a conservative point, what MC-SF
needs to avoid overflow when the interval holds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import ConfigError
from .synthetic import Workload


class Predictor(Protocol):
    def apply(self, workload: Workload, rng: np.random.Generator) -> Workload: ...


def _with_interval(workload: Workload, lo: np.ndarray, hi: np.ndarray) -> Workload:
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    return workload.with_columns(predicted_output_tokens=hi.astype(np.float64),
                                 predicted_lo=lo, predicted_hi=hi)


def _miss(lo: np.ndarray, hi: np.ndarray, truth: np.ndarray, p: float,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Move each interval off the truth with probability p (width kept)."""
    n = len(truth)
    missed = rng.random(n) < p
    above = (rng.random(n) < 0.5) | (truth <= 1)
    width = hi - lo
    gap = np.floor(rng.random(n) * (width + 1)).astype(np.int64) + 1
    up_lo = truth + gap
    down_hi = np.maximum(truth - gap, 1)
    new_lo = np.where(above, up_lo, np.maximum(down_hi - width, 1))
    new_hi = np.where(above, up_lo + width, down_hi)
    return np.where(missed, new_lo, lo), np.where(missed, new_hi, hi)


@dataclass(frozen=True, slots=True)
class Exact:
    """Point prediction = the true output length, and the interval [o, o]."""

    def apply(self, workload: Workload, rng: np.random.Generator) -> Workload:
        o = workload.true_output_tokens
        return workload.with_columns(predicted_output_tokens=o.astype(np.float64),
                                     predicted_lo=o.copy(), predicted_hi=o.copy())


@dataclass(frozen=True, slots=True)
class PointNoise:
    """Point prediction max(1, round(o · exp(sigma · Z))), Z standard normal."""

    sigma: float

    def apply(self, workload: Workload, rng: np.random.Generator) -> Workload:
        o = workload.true_output_tokens
        noisy = np.maximum(1.0, np.rint(o * np.exp(self.sigma * rng.standard_normal(len(o)))))
        return workload.with_columns(predicted_output_tokens=noisy, predicted_lo=None, predicted_hi=None)


@dataclass(frozen=True, slots=True)
class Interval:
    """[lo, hi] with lo/hi ≈ alpha containing the truth at a uniform position (see module doc)."""

    alpha: float
    miss: float = 0.0

    def apply(self, workload: Workload, rng: np.random.Generator) -> Workload:
        o = workload.true_output_tokens.astype(np.float64)
        low_end = o * (self.alpha + (1.0 - self.alpha) * rng.random(len(o)))
        lo = np.maximum(1, np.floor(low_end)).astype(np.int64)
        hi = np.maximum(np.ceil(low_end / self.alpha - 1e-9), lo).astype(np.int64)
        hi = np.maximum(hi, workload.true_output_tokens)   # guard float rounding
        lo = np.minimum(lo, workload.true_output_tokens)
        if self.miss:
            lo, hi = _miss(lo, hi, workload.true_output_tokens, self.miss, rng)
        return _with_interval(workload, lo, hi)


@dataclass(frozen=True, slots=True)
class Binned:
    """The fixed-width bin [k·width + 1, (k+1)·width] holding the truth."""

    width: int
    miss: float = 0.0

    def apply(self, workload: Workload, rng: np.random.Generator) -> Workload:
        o = workload.true_output_tokens
        lo = (o - 1) // self.width * self.width + 1
        hi = lo + self.width - 1
        if self.miss:
            lo, hi = _miss(lo, hi, o, self.miss, rng)
        return _with_interval(workload, lo, hi)


@dataclass(frozen=True, slots=True)
class Naive:
    """The same interval [lo, hi] (default [1, 1000]) for every request."""

    lo: int = 1
    hi: int = 1000

    def apply(self, workload: Workload, rng: np.random.Generator) -> Workload:
        n = len(workload)
        return _with_interval(workload, np.full(n, self.lo), np.full(n, self.hi))


def apply_predictor(workload: Workload, spec: str | None, seed: int = 0) -> Workload:
    """Apply the predictor named by `spec` (None: leave the workload as it is)."""
    if spec is None:
        return workload
    out = parse_predictor(spec).apply(workload, np.random.default_rng(seed))
    out.meta["predictor"] = spec
    return out


# --------------------------------------------------------------------------- parsing

def _positive_float(value: str, where: str, *, upper: float | None = None, zero_ok: bool = False) -> float:
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    low_ok = x >= 0 if zero_ok else x > 0
    if not (math.isfinite(x) and low_ok and (upper is None or x <= upper)):
        bounds = f"{'[' if zero_ok else '('}0, {upper:g}]" if upper is not None else \
            f"{'[' if zero_ok else '('}0, inf)"
        raise ConfigError(f"--predictor: {where} must be a number in {bounds}, got {value!r}")
    return x


def _positive_int(value: str, where: str) -> int:
    try:
        x = int(value)
    except ValueError:
        x = 0
    if x < 1:
        raise ConfigError(f"--predictor: {where} must be an integer >= 1, got {value!r}")
    return x


def _probability(value: str, where: str) -> float:
    p = _positive_float(value, where, upper=1.0, zero_ok=True)
    if p >= 1.0:
        raise ConfigError(f"--predictor: {where} must be in [0, 1), got {value!r}")
    return p


#: name → (required params, optional params, builder)
_SPECS = {
    "exact": ((), (), lambda p: Exact()),
    "point": (("sigma",), (), lambda p: PointNoise(_positive_float(p["sigma"], "point sigma", zero_ok=True))),
    "interval": (("alpha",), ("miss",), lambda p: Interval(
        _positive_float(p["alpha"], "interval alpha", upper=1.0),
        _probability(p.get("miss", "0"), "interval miss"))),
    "binned": (("width",), ("miss",), lambda p: Binned(
        _positive_int(p["width"], "binned width"), _probability(p.get("miss", "0"), "binned miss"))),
    "naive": ((), ("lo", "hi"), lambda p: _naive(p)),
}


def _naive(p: dict[str, str]) -> Naive:
    lo = _positive_int(p.get("lo", "1"), "naive lo")
    hi = _positive_int(p.get("hi", "1000"), "naive hi")
    if hi < lo:
        raise ConfigError(f"--predictor: naive hi ({hi}) must be >= lo ({lo})")
    return Naive(lo, hi)


def parse_predictor(spec: str) -> Predictor:
    """ "interval:alpha=0.5,miss=0.1" → a predictor; unknown names/params/values raise ConfigError."""
    name, _, params_text = spec.partition(":")
    name = name.strip()
    if name not in _SPECS:
        raise ConfigError(f"--predictor: unknown predictor {name!r}; expected one of: {', '.join(_SPECS)}")
    required, optional, build = _SPECS[name]
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in params_text.replace(";", ",").split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not value.strip():
            raise ConfigError(f"--predictor {name}: expected name=value, got {item!r}")
        if key not in required + optional:
            allowed = ", ".join(required + optional) or "(none)"
            raise ConfigError(f"--predictor {name}: unknown parameter {key!r}; expected one of: {allowed}")
        params[key] = value.strip()
    missing = [k for k in required if k not in params]
    if missing:
        raise ConfigError(f"--predictor {name}: missing parameter {missing[0]!r} (e.g. {name}:{missing[0]}=...)")
    return build(params)


# --------------------------------------------------------------------------- log-t (distributional)

def _betacf(a: float, b: float, x: np.ndarray, iterations: int = 300) -> np.ndarray:
    """Continued fraction of the regularised incomplete beta function (modified Lentz), vectorised
    over x, stopped when every term's factor is 1 to 1e-15; converges fast for
    x < (a + 1)/(a + b + 2), where `_betainc` calls it."""
    tiny = 1e-300
    c = np.ones_like(x)
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
    h = d.copy()
    for m in range(1, iterations + 1):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
            c = 1.0 + num / c
            c = np.where(np.abs(c) < tiny, tiny, c)
            h = h * d * c
        if np.all(np.abs(d * c - 1.0) < 1e-15):
            break
    return h


def _betainc(a: float, b: float, x: np.ndarray) -> np.ndarray:
    """Regularised incomplete beta I_x(a, b) for x in [0, 1] (the textbook continued fraction,
    using the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) where it converges slowly)."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    inner = (x > 0) & (x < 1)
    safe = np.where(inner, x, 0.5)
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * np.log(safe) + b * np.log1p(-safe))
    front = np.exp(log_front)
    direct = (safe < (a + 1.0) / (a + b + 2.0))
    value = np.where(direct, front * _betacf(a, b, safe) / a,
                     1.0 - front * _betacf(b, a, 1.0 - safe) / b)
    return np.where(inner, value, x)


def student_t_cdf(t, nu: float) -> np.ndarray:
    """P(T ≤ t) for Student's t with `nu` degrees of freedom (numpy only): with x = ν/(ν + t²),
    P(T > |t|) = I_x(ν/2, 1/2) / 2."""
    t = np.asarray(t, dtype=np.float64)
    tail = 0.5 * _betainc(nu / 2.0, 0.5, nu / (nu + t * t))
    return np.where(t >= 0, 1.0 - tail, tail)


def student_t_ppf(p, nu: float) -> np.ndarray:
    """The p-quantile of Student's t (bisection on `student_t_cdf`, 1e-10 relative), p in (0, 1)."""
    p = np.asarray(p, dtype=np.float64)
    if np.any((p <= 0) | (p >= 1)):
        raise ValueError("quantile levels must lie in (0, 1)")
    lo, hi = np.full_like(p, -1.0), np.full_like(p, 1.0)
    while np.any(student_t_cdf(lo, nu) > p):
        lo = np.where(student_t_cdf(lo, nu) > p, lo * 4, lo)
    while np.any(student_t_cdf(hi, nu) < p):
        hi = np.where(student_t_cdf(hi, nu) < p, hi * 4, hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        below = student_t_cdf(mid, nu) < p
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        if np.all(hi - lo <= 1e-10 * np.maximum(1.0, np.abs(mid))):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True, slots=True)
class LogT:
    """A distributional predictor (TIE, Zheng et al., arXiv 2604.00499: output length modelled as
    log-t). Each request gets a predicted distribution log O ~ μ_i + scale · T_nu. Simulated
    model error (ours): μ_i = log o_i + scale · T_nu with an independent draw, so the truth is a
    draw from its own predicted distribution (a calibrated predictor). Columns: the point
    ``predicted_output_tokens`` = the median exp(μ_i) (what `conditional_quantile` re-predicts
    from), the interval [⌊q_lo quantile⌋, ⌈q_hi quantile⌉] with (q_lo, q_hi) = ((1 − coverage)/2,
    (1 + coverage)/2) — it holds the truth with probability ``coverage`` only (lo at least 1).
    TIE's ordering key (an expectation inflated by the tail probability) is not reproduced: its
    exact form is not in the abstract."""

    scale: float
    nu: float = 3.0
    coverage: float = 0.9

    def apply(self, workload: Workload, rng: np.random.Generator) -> Workload:
        o = workload.true_output_tokens.astype(np.float64)
        mu = np.log(o) + self.scale * rng.standard_t(self.nu, len(o))
        lo_q, hi_q = student_t_ppf([(1 - self.coverage) / 2, (1 + self.coverage) / 2], self.nu)
        lo = np.maximum(1, np.floor(np.exp(mu + self.scale * lo_q))).astype(np.int64)
        hi = np.maximum(lo, np.ceil(np.exp(mu + self.scale * hi_q))).astype(np.int64)
        return workload.with_columns(predicted_output_tokens=np.exp(mu), predicted_lo=lo, predicted_hi=hi)


class StudentTTable:
    """Student's t CDF and quantile by interpolation in a table (fast enough to call every
    iteration): the CDF on z ≤ 0 at 20,001 points spaced as sinh (dense near 0, out to −10⁶),
    the upper half by symmetry. Interpolation error below 1e-6 in probability (tested)."""

    __slots__ = ("nu", "_z", "_p")

    def __init__(self, nu: float) -> None:
        self.nu = nu
        self._z = -np.sinh(np.linspace(math.asinh(1e6), 0.0, 20_001))
        self._p = student_t_cdf(self._z, nu)

    def cdf(self, z) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        lower = np.interp(-np.abs(z), self._z, self._p)
        return np.where(z <= 0, lower, 1.0 - lower)

    def ppf(self, p) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        lower = np.interp(np.minimum(p, 1.0 - p), self._p, self._z)
        return np.where(p <= 0.5, lower, -lower)


def conditional_quantile(median, generated, scale: float, table: StudentTTable,
                         quantile: float) -> np.ndarray:
    """Re-prediction: the `quantile` of a log-t output length O (median `median`, log scale
    `scale`, t table `table` of ν degrees of freedom) given that O exceeds the `generated` tokens:
    F⁻¹(F(g) + q·(1 − F(g))), at least g + 1 (a request still running needs one more token).
    With g = 0 it is the unconditional quantile; as g grows past the median the prediction grows
    with it — under the heavy tail a request that outlived its median is predicted to run long."""
    median = np.asarray(median, dtype=np.float64)
    generated = np.asarray(generated, dtype=np.float64)
    started = generated > 0
    z = (np.log(np.where(started, generated, 1.0)) - np.log(median)) / scale
    u = np.where(started, table.cdf(z), 0.0)
    target = np.clip(u + quantile * (1.0 - u), 1e-12, 1 - 1e-12)
    value = np.exp(np.log(median) + scale * table.ppf(target))
    return np.maximum(np.ceil(value - 1e-9), generated + 1)    # (- 1e-9: a float hair over an integer)


def _logt(p: dict[str, str]) -> LogT:
    nu = _positive_float(p.get("nu", "3"), "logt nu")
    coverage = _positive_float(p.get("coverage", "0.9"), "logt coverage", upper=1.0)
    if coverage >= 1.0:
        raise ConfigError(f"--predictor: logt coverage must be in (0, 1), got {p['coverage']!r}")
    return LogT(_positive_float(p["scale"], "logt scale"), nu, coverage)


_SPECS["logt"] = (("scale",), ("nu", "coverage"), _logt)
