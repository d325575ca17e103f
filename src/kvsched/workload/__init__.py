"""Request streams (DESIGN.md §6).

- `synthetic`: `Workload` (columnar), arrival processes, length distributions, the default workload;
- `traces`: trace files (CSV, JSONL, Parquet, ShareGPT JSON);
- `predictors`: output-length predictions added to a workload;
- `typed`: WAIT's typed workloads.
"""

from .synthetic import (AllAtZero, ArrivalProcess, Bursts, Deterministic, Empirical, Fixed,
                        GammaArrivals, LengthDistribution, LogNormal, Poisson, Request, Uniform,
                        Workload, default_workload, synthesize)

__all__ = ["AllAtZero", "ArrivalProcess", "Bursts", "Deterministic", "Empirical", "Fixed",
           "GammaArrivals", "LengthDistribution", "LogNormal", "Poisson", "Request", "Uniform",
           "Workload", "default_workload", "synthesize"]
