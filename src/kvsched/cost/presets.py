"""Hardware/model presets: a calibrated cost model and a KV capacity for a (model, GPU, TP) triple.

``get_preset("llama2-70b-a100-tp2")`` returns a `Preset` whose ``cost`` is a `CalibratedCost` fitted
to Vidur's A100 profiles and whose ``kv_capacity_tokens`` follows vLLM's memory rule:

    KV bytes per GPU   = gpu_memory_utilization · GPU memory − weight bytes per GPU
    bytes per KV token = 2 (K and V) · layers · kv_heads · head_dim · 2 (fp16) / TP   (per GPU)
    kv_capacity_tokens = floor(KV bytes per GPU / bytes per KV token), rounded down to whole blocks

with GPU memory 80 GiB (A100-80GB; 80 · 2³⁰ bytes, the figure Vidur uses), utilization 0.9, fp16
weights counted in full (embedding and LM head included) and split evenly over the TP ranks,
block size 16. No activation or CUDA-graph reserve is subtracted (vLLM measures those at start-up;
we cannot here), so this is an upper bound on what a real vLLM instance reports.

Llama-2-70B on 2 × A100-80GB: weights 68.98e9 parameters → 68.98 GB per GPU in fp16, KV budget
77.31 − 68.98 = 8.33 GB per GPU, 160 KiB per token per GPU → 50,848 tokens (3,178 blocks of 16). The
MC-SF paper (Jaillet et al., 2025) uses M = 16,492 tokens for the same deployment, about 3.1×
fewer: 16,492 tokens are 2.70 GB per GPU at 160 KiB per token, i.e. their setup left ~5.6 GB per
GPU less for the KV cache. That gap is the size of what vLLM subtracts beyond the weights (the
activation peak of a profiling forward pass at max_num_batched_tokens, CUDA graphs, NCCL buffers
and the non-torch allocations) and/or of counting 80 GB as 80 · 10⁹ bytes with a lower
utilisation; the paper does not give its accounting. Vidur itself, for the reference runs under
shared/data/vidur/runs, reserves 13 requests × 4,096 tokens = 53,248 tokens (it ignores the
embedding and LM head and rounds down to whole max-length request slots). Use
``--kv-capacity`` to reproduce either figure.

Presets whose attention was not profiled (Llama-2-7B, Llama-3-8B, and 70B at TP 4 and 8) derive it
from the Llama-2-70B TP2 attention table by shape; ``Preset.attention_derived`` says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .calibrated import CalibratedCost, ModelShape, build_cost, fit_errors
from ..errors import ConfigError

GIB = 1024 ** 3

LLAMA2_70B = ModelShape("meta-llama/Llama-2-70b-hf", num_layers=80, hidden_size=8192, num_q_heads=64,
                        num_kv_heads=8, intermediate_size=28672, vocab_size=32000)
LLAMA2_7B = ModelShape("meta-llama/Llama-2-7b-hf", num_layers=32, hidden_size=4096, num_q_heads=32,
                       num_kv_heads=32, intermediate_size=11008, vocab_size=32000)
LLAMA3_8B = ModelShape("meta-llama/Meta-Llama-3-8B", num_layers=32, hidden_size=4096, num_q_heads=32,
                       num_kv_heads=8, intermediate_size=14336, vocab_size=128256)


@dataclass(frozen=True, slots=True)
class Preset:
    """A named (model, GPU, tensor-parallel) deployment: batch-time model and KV capacity."""

    name: str
    model: ModelShape
    gpu: str
    tensor_parallel: int
    cost: CalibratedCost = field(repr=False)
    kv_capacity_tokens: int
    block_size: int
    bytes_per_kv_token: int            # per GPU
    weight_bytes_per_gpu: int
    gpu_memory_bytes: int
    gpu_memory_utilization: float
    fit_error: Mapping[str, float]     # held-out MAPE (%) per operator group (read-only)
    attention_derived: bool            # attention fitted on another shape (see module docstring)
    description: str

    @property
    def kv_bytes_per_gpu(self) -> int:
        return int(self.gpu_memory_utilization * self.gpu_memory_bytes) - self.weight_bytes_per_gpu


def kv_capacity(model: ModelShape, tensor_parallel: int, *, gpu_memory_bytes: int = 80 * GIB,
                gpu_memory_utilization: float = 0.9, block_size: int = 16) -> tuple[int, int, int]:
    """(kv_capacity_tokens, bytes_per_kv_token, weight_bytes_per_gpu) by the rule in the module docstring."""
    bytes_per_token = 2 * model.num_layers * model.num_kv_heads * model.head_dim * 2 // tensor_parallel
    weights = -(-model.num_params * 2 // tensor_parallel)
    free = int(gpu_memory_utilization * gpu_memory_bytes) - weights
    if free < bytes_per_token * block_size:
        raise ConfigError(f"{model.name} at TP{tensor_parallel} leaves no room for a KV block")
    return free // bytes_per_token // block_size * block_size, bytes_per_token, weights


def _make(name: str, model: ModelShape, tensor_parallel: int, description: str) -> Preset:
    tokens, per_token, weights = kv_capacity(model, tensor_parallel)
    derived = not (model is LLAMA2_70B and tensor_parallel == 2)
    return Preset(name=name, model=model, gpu="a100-80gb", tensor_parallel=tensor_parallel,
                  cost=build_cost(model, tensor_parallel), kv_capacity_tokens=tokens, block_size=16,
                  bytes_per_kv_token=per_token, weight_bytes_per_gpu=weights, gpu_memory_bytes=80 * GIB,
                  gpu_memory_utilization=0.9,
                  fit_error=MappingProxyType(fit_errors(model, tensor_parallel)),
                  attention_derived=derived, description=description)


_PRESETS = {
    "llama2-70b-a100-tp2": (LLAMA2_70B, 2, "Llama-2-70B, 2 × A100-80GB (pairwise NVLink), the Vidur reference setup"),
    "llama2-70b-a100-tp4": (LLAMA2_70B, 4, "Llama-2-70B, 4 × A100-80GB (NVSwitch all-reduce profile)"),
    "llama2-70b-a100-tp8": (LLAMA2_70B, 8, "Llama-2-70B, 8 × A100-80GB (NVSwitch all-reduce profile)"),
    "llama2-7b-a100": (LLAMA2_7B, 1, "Llama-2-7B, 1 × A100-80GB (attention derived from the 70B table)"),
    "llama3-8b-a100": (LLAMA3_8B, 1, "Llama-3-8B, 1 × A100-80GB (attention derived from the 70B table)"),
}


def list_presets() -> list[str]:
    """Names of the built-in presets."""
    return sorted(_PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called `name`; `ConfigError` naming the known ones otherwise."""
    try:
        model, tp, description = _PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; expected one of {', '.join(list_presets())}") from None
    return _make(name, model, tp, description)
