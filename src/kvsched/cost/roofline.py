"""A roofline cost model for any dense decoder-only model on any GPU (issue 15).

Inputs: a Hugging Face ``config.json`` (Llama/Qwen2/Mistral-style: dense MLP, grouped-query
attention; MoE is refused) and a `GPUSpec` datasheet row (`kvsched.cost.gpus`), with the weight
dtype and the tensor-parallel degree. The model follows the roofline accounting BLIS uses for
LLM serving (a config and a GPU table, with a few fitted efficiency terms) and Vidur's operator
split (microsoft/vidur: per-layer GEMMs, elementwise ops, attention prefill/decode, two all-reduces
per layer; `kvsched.cost.calibrated`); it is written from that description, not from their code.

Per iteration, per GPU, per transformer layer (T = tokens in the batch, b = bytes per weight):

- ``gemm`` (QKV, O, gate/up, down): FLOPs 2·T·W, bytes b·(W + T·activations in and out), W the
  layer's linear weights on this GPU;
- ``elementwise`` (2 RMSNorms, RoPE, SiLU·mul, 2 residual adds): bytes only, b·T·(10·h +
  2·(q + kv dims) + 3·I/TP);
- ``attn_prefill``: FLOPs 4·d·(query heads per GPU)·(causal pairs: Σ chunk·cached + chunk·(chunk+1)/2),
  bytes: the K and V of every prefill sequence's context, read once per 128-query tile and query
  head (FlashAttention-2's grid), plus Q in and O out;
- ``attn_decode``: FLOPs 4·d·(query heads per GPU)·(decode context tokens), bytes: their K and V
  (the KV cache read, which makes decode memory-bound) plus Q and O;
- ``all_reduce`` (TP > 1): two ring all-reduces of T·h·b bytes: 2·(TP−1)/TP of it over one direction
  of the GPU's interconnect (half the datasheet's bidirectional figure);

each part costing ``fixed + max(C, M) + overlap · min(C, M)`` with C = FLOPs / (peak · e_compute)
and M = bytes / (bandwidth · e_memory) (`PartFit`), times the layers; then the LM head (one row of logits per sequence: vLLM samples each sequence's last
token), priced as a GEMM without the fixed time, and the CPU overheads ``iteration_overhead_time``
plus ``seq_overhead_time`` per sequence (both 0 by default: Vidur's profiles time the GPU only).

The efficiencies and fixed times (`Efficiencies`) are fitted once, by ``scripts/fit_roofline.py``,
on Vidur's A100 profiles, and shipped in ``data/roofline_efficiencies.json`` with their held-out
errors; on another GPU they are an assumption (that kernels reach the same fraction of its
datasheet peaks), which is the point of a roofline and its main source of error.

Floors: with every efficiency <= 1 an iteration never takes less than `memory_floor_time` (the
weights it reads / HBM bandwidth) nor `compute_floor_time` (its FLOPs / dense peak).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .gpus import GPUSpec, get_gpu
from .models import BatchStats
from ..errors import ConfigError

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "bfloat16": 2, "float16": 2, "fp8": 1}
PARTS = ("gemm", "elementwise", "attn_prefill", "attn_decode", "all_reduce")
_MOE_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size")


# --------------------------------------------------------------------------- model config

@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The architecture numbers of a dense decoder (Hugging Face ``config.json`` names in comments)."""

    name: str
    num_layers: int             # num_hidden_layers
    hidden_size: int            # hidden_size
    num_q_heads: int            # num_attention_heads
    num_kv_heads: int           # num_key_value_heads (= num_attention_heads when absent)
    head_dim: int               # head_dim (= hidden_size / num_attention_heads when absent)
    intermediate_size: int      # intermediate_size (gated MLP: gate, up, down)
    vocab_size: int             # vocab_size
    tie_word_embeddings: bool = False
    qkv_bias: bool = False      # Qwen2 (model_type "qwen2") or attention_bias

    @classmethod
    def from_hf(cls, config: Mapping, name: str) -> ModelConfig:
        """From a parsed ``config.json``; `ConfigError` naming `name` and the field otherwise."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"{name}: expected a JSON object (a Hugging Face config.json)")
        moe = [k for k in _MOE_FIELDS if config.get(k)]
        if moe:
            raise ConfigError(f"{name}: field {moe[0]!r}: mixture-of-experts models are not supported "
                              "(dense Llama/Qwen2/Mistral-style configs only)")

        def integer(key: str, default: int | None = None) -> int:
            value = config.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: field {key!r} is {value!r}, expected a positive integer")
            return value

        hidden, heads = integer("hidden_size"), integer("num_attention_heads")
        if config.get("head_dim") is None and hidden % heads:
            raise ConfigError(f"{name}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
        kv_heads = integer("num_key_value_heads", heads)
        if heads % kv_heads:
            raise ConfigError(f"{name}: num_attention_heads {heads} is not a multiple of "
                              f"num_key_value_heads {kv_heads}")
        bias = bool(config.get("attention_bias", False)) or config.get("model_type") == "qwen2"
        return cls(name=str(config.get("_name_or_path") or name), num_layers=integer("num_hidden_layers"),
                   hidden_size=hidden, num_q_heads=heads, num_kv_heads=kv_heads,
                   head_dim=integer("head_dim", hidden // heads), intermediate_size=integer("intermediate_size"),
                   vocab_size=integer("vocab_size"), tie_word_embeddings=bool(config.get("tie_word_embeddings")),
                   qkv_bias=bias)

    def layer_params(self) -> int:
        """Parameters of one layer: attention (+ QKV bias), gated MLP, two norms."""
        h, d = self.hidden_size, self.head_dim
        qkv = h * d * (self.num_q_heads + 2 * self.num_kv_heads)
        bias = d * (self.num_q_heads + 2 * self.num_kv_heads) if self.qkv_bias else 0
        return qkv + bias + self.num_q_heads * d * h + 3 * h * self.intermediate_size + 2 * h

    @property
    def num_params(self) -> int:
        """All parameters: layers, final norm, embedding and (unless tied) the LM head."""
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * self.layer_params() + self.hidden_size + embeddings


def list_model_configs() -> list[str]:
    """Names of the shipped ``config.json`` files (``data/configs/NAME.json``)."""
    folder = resources.files("kvsched.cost").joinpath("data/configs")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_model_config(name_or_path: str) -> ModelConfig:
    """A shipped config by name (``llama-3.1-70b``) or by its HF id, or a ``config.json`` path."""
    key = name_or_path.strip()
    shipped = _shipped_configs()
    if key.lower() in shipped:
        return shipped[key.lower()]
    by_id = {c.name.lower(): c for c in shipped.values()}
    if key.lower() in by_id:
        return by_id[key.lower()]
    path = Path(key).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ConfigError(f"model {name_or_path!r}: not a shipped config ({', '.join(list_model_configs())}) "
                          "nor a config.json file")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read a JSON config ({exc})") from None
    return ModelConfig.from_hf(config, str(path))


@lru_cache(maxsize=1)
def _shipped_configs() -> dict[str, ModelConfig]:
    folder = resources.files("kvsched.cost").joinpath("data/configs")
    return {name: ModelConfig.from_hf(json.loads(folder.joinpath(name + ".json").read_text()), name)
            for name in list_model_configs()}


# --------------------------------------------------------------------------- work per part

@dataclass(frozen=True, slots=True)
class Shard:
    """What one GPU of a tensor-parallel group holds of a model (Megatron split; KV heads are
    replicated when TP exceeds them, as vLLM does)."""

    model: ModelConfig
    tensor_parallel: int
    dtype_bytes: int

    def __post_init__(self) -> None:
        if self.tensor_parallel < 1 or self.model.num_q_heads % self.tensor_parallel:
            raise ConfigError(f"tp={self.tensor_parallel}: expected a divisor of the model's "
                              f"{self.model.num_q_heads} attention heads")

    @property
    def q_heads(self) -> int:
        return self.model.num_q_heads // self.tensor_parallel

    @property
    def kv_heads(self) -> int:
        return -(-self.model.num_kv_heads // self.tensor_parallel)

    @property
    def linear_weights(self) -> int:
        """Linear-layer parameters of one layer on this GPU."""
        m, d = self.model, self.model.head_dim
        qkv = m.hidden_size * d * (self.q_heads + 2 * self.kv_heads)
        return qkv + self.q_heads * d * m.hidden_size + 3 * m.hidden_size * m.intermediate_size // self.tensor_parallel

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of one token, all layers, on this GPU."""
        return 2 * self.model.num_layers * self.kv_heads * self.model.head_dim * self.dtype_bytes

    @property
    def lm_head_weights(self) -> int:
        return -(-self.model.vocab_size // self.tensor_parallel) * self.model.hidden_size

    def weight_bytes_read(self) -> int:
        """Weight bytes one iteration reads on this GPU: every layer and the LM head (the embedding
        table is only gathered, one row per token)."""
        return (self.model.num_layers * self.linear_weights + self.lm_head_weights) * self.dtype_bytes

    def weight_bytes(self) -> int:
        """All weights on this GPU (vocab-parallel embedding and LM head, everything split evenly)."""
        return -(-self.model.num_params * self.dtype_bytes // self.tensor_parallel)

    # Per-layer (FLOPs, bytes) of each part.
    def gemm(self, tokens: int) -> tuple[float, float]:
        m, d = self.model, self.model.head_dim
        io = 4 * m.hidden_size + d * (2 * self.q_heads + 2 * self.kv_heads) + 3 * m.intermediate_size // self.tensor_parallel
        return 2.0 * tokens * self.linear_weights, float(self.dtype_bytes * (self.linear_weights + tokens * io))

    def elementwise(self, tokens: int) -> tuple[float, float]:
        m = self.model
        per_token = (10 * m.hidden_size + 2 * m.head_dim * (self.q_heads + self.kv_heads)
                     + 3 * m.intermediate_size // self.tensor_parallel)
        return 0.0, float(self.dtype_bytes * tokens * per_token)

    def attention(self, query_tokens: float, pairs: float, context_tokens: float,
                  kv_passes: float | None = None) -> tuple[float, float]:
        """`query_tokens` queries attending over `pairs` (query, key) pairs of `context_tokens` keys.

        Decode (`kv_passes` None) reads each KV head once. A FlashAttention prefill runs one thread
        block per (query tile, query head), each loading its K and V: `kv_passes` tiles × query heads."""
        d = self.model.head_dim
        flops = 4.0 * d * self.q_heads * pairs
        heads = self.kv_heads if kv_passes is None else kv_passes * self.q_heads
        kv = 2 * context_tokens * heads * d
        return flops, float(self.dtype_bytes * (kv + 2 * query_tokens * self.q_heads * d))

    def all_reduce_bytes(self, tokens: int) -> float:
        """Bytes one GPU sends in one ring all-reduce of the batch's activations."""
        n = self.tensor_parallel
        return 2 * (n - 1) / n * tokens * self.model.hidden_size * self.dtype_bytes


#: FlashAttention-2's query tile (rows of Q per thread block): a prefill chunk reads K and V once per tile.
QUERY_TILE = 128


def prefill_kv_passes(batch: BatchStats) -> float:
    """Query tiles per prefill chunk (exact for one chunk; the mean chunk's count otherwise)."""
    n = batch.num_prefill_seqs
    return float(-(-batch.num_prefill_tokens // (n * QUERY_TILE))) if n else 0.0


def causal_pairs(batch: BatchStats) -> float:
    """Σ over prefill chunks of chunk·cached + chunk·(chunk+1)/2, from `BatchStats`' sums.

    Σ chunk² is `BatchStats.prefill_chunk_squares` (exact or estimated, as `CalibratedCost`'s)."""
    n, p = batch.num_prefill_seqs, batch.num_prefill_tokens
    if n == 0 or p == 0:
        return 0.0
    squares = batch.prefill_chunk_squares
    return max(batch.prefill_attention_work - squares, 0) + (squares + p) / 2


# --------------------------------------------------------------------------- efficiencies

@dataclass(frozen=True, slots=True)
class PartFit:
    """``fixed_time + max(C, M) + overlap · min(C, M)`` seconds, with C = FLOPs / (peak · compute)
    and M = bytes / (bandwidth · memory).

    ``overlap`` 0 is the pure roofline (compute hides memory traffic or the reverse); 1 adds them
    (no overlap). Near the ridge point real kernels sit between the two: the fitted GEMM value
    (about 0.5) is what brings the A100's 64–256-token GEMMs within a few per cent.
    """

    fixed_time: float = 0.0
    compute: float = 1.0
    memory: float = 1.0
    overlap: float = 0.0

    def __post_init__(self) -> None:
        if not (0 < self.compute <= 1 and 0 < self.memory <= 1 and self.fixed_time >= 0
                and 0 <= self.overlap <= 1):
            raise ValueError(f"efficiencies must lie in (0, 1], the overlap in [0, 1] and fixed times be "
                             f">= 0, got {self}")

    def time(self, flops: float, nbytes: float, peak: float, bandwidth: float) -> float:
        compute, memory = flops / (peak * self.compute), nbytes / (bandwidth * self.memory)
        return self.fixed_time + max(compute, memory) + self.overlap * min(compute, memory)


@dataclass(frozen=True, slots=True)
class Efficiencies:
    """One `PartFit` per part (`PARTS`); ``all_reduce.memory`` is the interconnect's efficiency."""

    gemm: PartFit = PartFit()
    elementwise: PartFit = PartFit()
    attn_prefill: PartFit = PartFit()
    attn_decode: PartFit = PartFit()
    all_reduce: PartFit = PartFit()

    @classmethod
    def from_dict(cls, data: Mapping) -> Efficiencies:
        return cls(**{part: PartFit(**{k: float(v) for k, v in data[part].items()
                                       if k in ("fixed_time", "compute", "memory", "overlap")}) for part in PARTS})


@lru_cache(maxsize=1)
def load_fit() -> dict:
    """``data/roofline_efficiencies.json``: the fitted efficiencies and their held-out errors."""
    return json.loads(resources.files("kvsched.cost").joinpath("data/roofline_efficiencies.json").read_text())


def fitted_efficiencies() -> Efficiencies:
    return Efficiencies.from_dict(load_fit()["efficiencies"])


# --------------------------------------------------------------------------- the cost model

@dataclass(frozen=True, slots=True)
class RooflineCost:
    """Iteration time (seconds) of a batch on `gpu` × `tensor_parallel`; see the module docstring."""

    model: ModelConfig
    gpu: GPUSpec
    tensor_parallel: int = 1
    dtype: str = "bf16"
    efficiencies: Efficiencies = field(default_factory=fitted_efficiencies)
    iteration_overhead_time: float = 0.0
    seq_overhead_time: float = 0.0
    _shard: Shard = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_BYTES:
            raise ConfigError(f"dtype={self.dtype!r}: expected one of {', '.join(DTYPE_BYTES)}")
        if not (self.iteration_overhead_time >= 0 and self.seq_overhead_time >= 0):
            raise ConfigError("overhead times must be >= 0 seconds")
        object.__setattr__(self, "_shard", Shard(self.model, self.tensor_parallel, DTYPE_BYTES[self.dtype]))

    @property
    def shard(self) -> Shard:
        return self._shard

    def __str__(self) -> str:
        return f"roofline({self.model.name}, {self.gpu.name}, tp={self.tensor_parallel}, {self.dtype})"

    def iteration_time(self, batch: BatchStats) -> float:
        return sum(self.breakdown(batch).values())

    def breakdown(self, batch: BatchStats) -> dict[str, float]:
        """Seconds per part for the whole iteration (all layers), LM head and overhead included."""
        tokens = batch.num_tokens
        if tokens == 0:
            return dict.fromkeys((*PARTS, "lm_head", "overhead"), 0.0)
        s, e, g, layers = self._shard, self.efficiencies, self.gpu, self.model.num_layers
        peak, hbm = g.dense_bf16_flops, g.hbm_bandwidth
        out = {"gemm": e.gemm.time(*s.gemm(tokens), peak, hbm),
               "elementwise": e.elementwise.time(*s.elementwise(tokens), peak, hbm),
               "attn_prefill": 0.0, "attn_decode": 0.0, "all_reduce": 0.0}
        if batch.num_prefill_tokens:
            work = s.attention(batch.num_prefill_tokens, causal_pairs(batch), batch.prefill_context_tokens,
                               prefill_kv_passes(batch))
            out["attn_prefill"] = e.attn_prefill.time(*work, peak, hbm)
        if batch.num_decode_seqs:
            work = s.attention(batch.num_decode_seqs, batch.decode_context_tokens, batch.decode_context_tokens)
            out["attn_decode"] = e.attn_decode.time(*work, peak, hbm)
        if self.tensor_parallel > 1:
            link = g.interconnect_bandwidth / 2   # one direction of the datasheet's bidirectional figure
            out["all_reduce"] = 2 * e.all_reduce.time(0.0, s.all_reduce_bytes(tokens), peak, link)
        out = {k: v * layers for k, v in out.items()}
        head = s.lm_head_weights
        lm_fit = PartFit(0.0, e.gemm.compute, e.gemm.memory, e.gemm.overlap)
        out["lm_head"] = lm_fit.time(2.0 * batch.num_seqs * head, float(s.dtype_bytes * head), peak, hbm)
        out["overhead"] = self.iteration_overhead_time + self.seq_overhead_time * batch.num_seqs
        return out

    def memory_floor_time(self) -> float:
        """Weight bytes one iteration reads per GPU / HBM bandwidth (seconds)."""
        return self._shard.weight_bytes_read() / self.gpu.hbm_bandwidth

    def compute_floor_time(self, batch: BatchStats) -> float:
        """The batch's FLOPs per GPU (GEMMs, attention, LM head) / dense peak (seconds)."""
        return iteration_flops(self._shard, batch) / self.gpu.dense_bf16_flops


def iteration_flops(shard: Shard, batch: BatchStats) -> float:
    """FLOPs per GPU of one iteration (all layers and the LM head)."""
    if batch.num_tokens == 0:
        return 0.0
    per_layer = shard.gemm(batch.num_tokens)[0]
    per_layer += shard.attention(0, causal_pairs(batch), 0)[0]
    per_layer += shard.attention(0, batch.decode_context_tokens, 0)[0]
    return shard.model.num_layers * per_layer + 2.0 * batch.num_seqs * shard.lm_head_weights


# --------------------------------------------------------------------------- KV capacity

@dataclass(frozen=True, slots=True)
class KVCapacity:
    """vLLM's KV-cache budget on one GPU of the group (bytes, tokens)."""

    kv_capacity_tokens: int
    bytes_per_kv_token: int          # per GPU
    weight_bytes_per_gpu: int
    activation_bytes_per_gpu: int
    gpu_memory_bytes: int
    gpu_memory_utilization: float

    @property
    def kv_bytes_per_gpu(self) -> int:
        return (int(self.gpu_memory_utilization * self.gpu_memory_bytes) - self.weight_bytes_per_gpu
                - self.activation_bytes_per_gpu)


def vllm_kv_capacity(model: ModelConfig, gpu: GPUSpec, tensor_parallel: int = 1, *, dtype: str = "bf16",
                     gpu_memory_utilization: float = 0.9, max_num_batched_tokens: int = 8192,
                     max_num_seqs: int = 256, block_size: int = 16) -> KVCapacity:
    """KV tokens as vLLM sizes its cache: ``gpu_memory_utilization · GPU memory − the peak of a
    profiling forward pass`` (vLLM's ``determine_num_available_blocks`` / V1
    ``determine_available_memory``), divided by the KV bytes per token, in whole blocks.

    The peak is the weights plus the activations of a ``max_num_batched_tokens``-token pass. vLLM
    measures it; this estimates it as the largest live tensors of a layer — the gate/up output and
    the activated MLP input (3·I/TP per token), the residual stream and its norm (2·h) — plus the
    fp32 logits of ``max_num_seqs`` sequences and their softmax copy (2 · 4 · vocab bytes each).
    CUDA graphs and NCCL buffers are not counted, so a real instance may report somewhat less.
    """
    if not 0 < gpu_memory_utilization <= 1:
        raise ConfigError(f"gpu_memory_utilization={gpu_memory_utilization}: expected a fraction in (0, 1]")
    shard = Shard(model, tensor_parallel, DTYPE_BYTES[dtype])
    per_token = shard.dtype_bytes * (3 * model.intermediate_size // tensor_parallel + 2 * model.hidden_size)
    activation = max_num_batched_tokens * per_token + max_num_seqs * 8 * model.vocab_size
    weights = shard.weight_bytes()
    budget = int(gpu_memory_utilization * gpu.memory_bytes) - weights - activation
    per_kv = shard.kv_bytes_per_token
    if budget < per_kv * block_size:
        raise ConfigError(f"{model.name} at tp={tensor_parallel} on {gpu.name}: weights "
                          f"{weights / 1e9:.1f} GB and activations {activation / 1e9:.1f} GB per GPU leave "
                          f"no room for a KV block in {gpu_memory_utilization:g} × {gpu.memory_bytes / 2**30:g} GiB")
    tokens = budget // per_kv // block_size * block_size
    return KVCapacity(tokens, per_kv, weights, activation, gpu.memory_bytes, gpu_memory_utilization)


# --------------------------------------------------------------------------- from a spec

def build_roofline(model: str, gpu: str, tensor_parallel: int = 1, dtype: str = "bf16",
                   **overheads: float) -> RooflineCost:
    """`RooflineCost` from names: a shipped config or a path, a GPU of `kvsched.cost.gpus`."""
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"dtype={dtype!r}: expected one of {', '.join(DTYPE_BYTES)}")
    for key, value in overheads.items():
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{key}={value}: expected seconds >= 0")
    return RooflineCost(load_model_config(model), get_gpu(gpu), tensor_parallel, dtype, **overheads)
