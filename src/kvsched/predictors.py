"""Output-length predictors: they add predictions to a workload (part of the request stream).

A predictor is applied once to a workload, with its own seeded generator, so that every policy in
a comparison sees the same predictions. ``parse_predictor("interval:alpha=0.5")`` builds one from
the command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .workload import Workload


class Predictor(Protocol):
    def apply(self, workload: Workload, rng: np.random.Generator) -> Workload: ...


@dataclass(frozen=True, slots=True)
class Exact:
    """Point prediction = the true output length, and the interval [o, o]."""

    def apply(self, workload: Workload, rng: np.random.Generator) -> Workload:
        o = workload.true_output_tokens
        return workload.with_columns(predicted_output_tokens=o.astype(np.float64),
                                     predicted_lo=o.copy(), predicted_hi=o.copy())


def apply_predictor(workload: Workload, spec: str | None, seed: int = 0) -> Workload:
    """Apply the predictor named by `spec` (None: leave the workload as it is)."""
    if spec is None:
        return workload
    return parse_predictor(spec).apply(workload, np.random.default_rng(seed))


def parse_predictor(spec: str) -> Predictor:
    from .errors import ConfigError
    name = spec.partition(":")[0].strip()
    if name == "exact":
        return Exact()
    raise ConfigError(f"--predictor: unknown predictor {name!r}; expected one of: exact")
