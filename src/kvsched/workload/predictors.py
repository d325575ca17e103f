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
