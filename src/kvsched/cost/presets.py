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

Roofline presets (``cost_model == "roofline"``) price common (model, GPU, TP) pairs with
`kvsched.cost.roofline.RooflineCost` on a shipped ``config.json``; their KV capacity is vLLM's rule
with the activation peak estimated (`kvsched.cost.roofline.vllm_kv_capacity`, bf16), and their
``fit_error`` is the roofline's held-out error on the A100 profiles (on other GPUs unmeasured).

Presets whose attention was not profiled (Llama-2-7B, Llama-3-8B, and 70B at TP 4 and 8) derive it
from the Llama-2-70B TP2 attention table by shape; ``Preset.attention_derived`` says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .calibrated import ModelShape, build_cost, fit_errors
from .gpus import get_gpu
from .models import CostModel
from .roofline import ModelConfig, build_roofline, load_fit, load_model_config, vllm_kv_capacity
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
    model: ModelShape | ModelConfig
    gpu: str
    tensor_parallel: int
    cost: CostModel = field(repr=False)
    kv_capacity_tokens: int
    block_size: int
    bytes_per_kv_token: int            # per GPU
    weight_bytes_per_gpu: int
    gpu_memory_bytes: int
    gpu_memory_utilization: float
    fit_error: Mapping[str, float]     # held-out MAPE (%) per operator group (read-only)
    attention_derived: bool            # attention fitted on another shape (see module docstring)
    description: str
    cost_model: str = "calibrated"     # or "roofline"
    activation_bytes_per_gpu: int = 0  # vLLM's profiling-pass activations (roofline presets)

    @property
    def kv_bytes_per_gpu(self) -> int:
        return (int(self.gpu_memory_utilization * self.gpu_memory_bytes) - self.weight_bytes_per_gpu
                - self.activation_bytes_per_gpu)


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


#: Roofline presets: name -> (shipped config, GPU, TP). Each fits its GPU's memory in bf16.
_ROOFLINE_PRESETS = {
    "llama-3.1-8b-a100-80gb": ("llama-3.1-8b", "a100-80gb", 1),
    "llama-3.1-8b-h100-sxm": ("llama-3.1-8b", "h100-sxm", 1),
    "llama-3.1-8b-l40s": ("llama-3.1-8b", "l40s", 1),
    "llama-3.1-8b-l4": ("llama-3.1-8b", "l4", 1),
    "llama-3.1-70b-a100-80gb-tp4": ("llama-3.1-70b", "a100-80gb", 4),
    "llama-3.1-70b-h100-sxm-tp4": ("llama-3.1-70b", "h100-sxm", 4),
    "llama-3.1-70b-h200-tp2": ("llama-3.1-70b", "h200", 2),
    "llama-3.1-70b-b200-tp2": ("llama-3.1-70b", "b200", 2),
    "llama-3.1-70b-mi300x": ("llama-3.1-70b", "mi300x", 1),
    "qwen2.5-7b-h100-sxm": ("qwen2.5-7b", "h100-sxm", 1),
    "qwen2.5-72b-h100-sxm-tp4": ("qwen2.5-72b", "h100-sxm", 4),
    "mistral-7b-h100-sxm": ("mistral-7b", "h100-sxm", 1),
    "llama-2-70b-a100-80gb-tp2": ("llama-2-70b", "a100-80gb", 2),
}


def roofline_fit_errors() -> dict[str, float]:
    """The roofline's held-out MAPE (%) per part on the A100 profiles (`scripts/fit_roofline.py`)."""
    return {part: e["mape"] for part, e in load_fit()["held_out_mape"]["per_operator"].items()}


def _make_roofline(name: str, config: str, gpu: str, tensor_parallel: int) -> Preset:
    cost = build_roofline(config, gpu, tensor_parallel)
    kv = vllm_kv_capacity(cost.model, cost.gpu, tensor_parallel)
    errors = roofline_fit_errors()
    if tensor_parallel == 1:
        errors.pop("all_reduce")
    return Preset(name=name, model=load_model_config(config), gpu=gpu, tensor_parallel=tensor_parallel,
                  cost=cost, kv_capacity_tokens=kv.kv_capacity_tokens, block_size=16,
                  bytes_per_kv_token=kv.bytes_per_kv_token, weight_bytes_per_gpu=kv.weight_bytes_per_gpu,
                  gpu_memory_bytes=kv.gpu_memory_bytes, gpu_memory_utilization=kv.gpu_memory_utilization,
                  fit_error=MappingProxyType(errors), attention_derived=False,
                  description=f"{config}, {tensor_parallel} × {get_gpu(gpu).name}, roofline (bf16)",
                  cost_model="roofline", activation_bytes_per_gpu=kv.activation_bytes_per_gpu)


def list_presets() -> list[str]:
    """Names of the built-in presets (calibrated and roofline)."""
    return sorted((*_PRESETS, *_ROOFLINE_PRESETS))


def get_preset(name: str) -> Preset:
    """The preset called `name`; `ConfigError` naming the known ones otherwise."""
    if name in _ROOFLINE_PRESETS:
        return _make_roofline(name, *_ROOFLINE_PRESETS[name])
    try:
        model, tp, description = _PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; expected one of {', '.join(list_presets())}") from None
    return _make(name, model, tp, description)
