"""Iteration-time models and hardware presets (DESIGN.md §5).

- `models`: the `CostModel` protocol, `BatchStats`, `UnitTime`, `LinearCost`;
- `calibrated`: `CalibratedCost`, fitted to measured operator profiles (data/calibration.json);
- `roofline`: `RooflineCost`, any dense model (a config.json) on any GPU of `gpus` (datasheets),
  with efficiencies fitted on the A100 profiles (data/roofline_efficiencies.json);
- `presets`: (model, GPU, tensor-parallel) presets with their KV capacity.
"""

from .calibrated import CalibratedCost
from .gpus import GPUSpec, get_gpu
from .models import BatchStats, CostModel, LinearCost, UnitTime
from .roofline import ModelConfig, RooflineCost, build_roofline, load_model_config

__all__ = ["BatchStats", "CalibratedCost", "CostModel", "GPUSpec", "LinearCost", "ModelConfig", "RooflineCost",
           "UnitTime", "build_roofline", "get_gpu", "load_model_config"]
