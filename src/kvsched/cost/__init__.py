"""Iteration-time models and hardware presets (DESIGN.md §5).

- `models`: the `CostModel` protocol, `BatchStats`, `UnitTime`, `LinearCost`;
- `calibrated`: `CalibratedCost`, fitted to measured operator profiles (data/calibration.json);
- `presets`: (model, GPU, tensor-parallel) presets with their KV capacity.
"""

from .calibrated import CalibratedCost
from .models import BatchStats, CostModel, LinearCost, UnitTime

__all__ = ["BatchStats", "CalibratedCost", "CostModel", "LinearCost", "UnitTime"]
