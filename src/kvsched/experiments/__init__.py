"""Experiments: sweep specifications (TOML), runners (local processes, Ray) and the result store."""

from .spec import SweepSpec, load_spec
from .store import ResultStore, load_runs
from .runner import run_sweep, run_point

__all__ = ["ResultStore", "SweepSpec", "load_runs", "load_spec", "run_point", "run_sweep"]
