"""Calibrated batch-time models fitted to measured GPU operator profiles (DESIGN.md §5).

`CalibratedCost` is a `CostModel` that adds up, per transformer layer and GPU, the operators of a
Megatron-style tensor-parallel decoder layer, then multiplies by the number of layers:

    time = num_layers · (linear(T) + elementwise(T) + attn_prefill + attn_decode
                         + all_reduces_per_layer · (all_reduce(T · hidden · 2 bytes) + launch))
           + iteration_overhead_time

with T = prefill tokens + decode sequences (the tokens in the batch). This is Vidur's composition
(microsoft/vidur ``ExecutionTime.model_time``: the sum of per-operator predictions times the layers;
embedding and LM head left out; one all-reduce after attention and one after the MLP).

- ``linear`` (QKV, O, MLP up and down GEMMs) and ``elementwise`` (norms, RoPE, activation, residual
  add): piecewise-linear in T, fitted per (model, TP) to Vidur's ``mlp.csv`` profiles.
- ``attn_prefill``: ``a + b·P + c·Σ chunk·kv + d·Σ chunk²`` over the batch's prefill chunks (kv: the
  tokens already cached before the chunk). `BatchStats` carries Σ chunk·(kv + chunk) (prefill
  attention work W), Σ chunk (P) and Σ (kv + chunk) (C); Σ chunk² is exact when there is one prefill
  sequence (P²) or when no chunk has cached context (W); otherwise it is estimated assuming chunks and
  cached context are uncorrelated (Σ chunk·kv ≈ P·(C − P)/n), clipped to [P²/n, P²].
- ``attn_decode``: a bilinear table over (decode sequences, mean context per decode sequence).
- ``all_reduce``: piecewise-linear in message bytes (fp16 activations, T · hidden · 2 bytes).
- ``all_reduce_launch_time``: added to every all-reduce; Vidur's ``nccl_cpu_launch_overhead_ms``
  default (0.02 ms), not measured here.
- ``attention_batching_overhead``: attention times are multiplied by (1 + this) when more than one
  sequence shares a kernel call; Vidur's default 0.1, applied by Vidur to GQA models only. Not
  measured here; the profiles time one uniform batch.
- ``iteration_overhead_time``: a fixed per-iteration CPU overhead (seconds). 0 by default: Vidur's
  reference runs set ``skip_cpu_overhead_modeling`` and the CPU-overhead profiles are not in the data
  we have; real engines spend a few ms per iteration on scheduling, sampling and input preparation.

Model shapes whose attention was not profiled are derived from the Llama-2-70B TP2 table
(`attention_scales`): prefill (compute-bound) scales with query heads × head dim per GPU, the
context-dependent part of decode (memory-bound) with KV heads × head dim per GPU.

Coefficients live in ``kvsched/cost/data/calibration.json`` (written by ``scripts/fit_calibration.py``).
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np

from .models import BatchStats

MS = 1e-3


@dataclass(frozen=True, slots=True)
class PiecewiseLinear:
    """y(x) through (knots, values); linear extrapolation beyond both ends."""

    knots: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.knots) < 2 or len(self.knots) != len(self.values):
            raise ValueError("PiecewiseLinear needs >= 2 knots and one value per knot")
        if any(b <= a for a, b in zip(self.knots, self.knots[1:])):
            raise ValueError("PiecewiseLinear knots must increase strictly")

    def __call__(self, x: float) -> float:
        return _interpolate(self.knots, self.values, x)


def _segment(k: tuple[float, ...], x: float) -> tuple[int, float]:
    """(i, t): x lies at fraction t between knots k[i] and k[i + 1] (the end segments extend
    beyond the knots: linear extrapolation)."""
    i = bisect.bisect_right(k, x) - 1
    # min(max(i, 0), len(k) - 2), without the two builtin calls (this runs at every priced
    # iteration)
    if i < 0:
        i = 0
    elif i > len(k) - 2:
        i = len(k) - 2
    return i, (x - k[i]) / (k[i + 1] - k[i])


def _interpolate(k: tuple[float, ...], v: tuple[float, ...], x: float) -> float:
    i, t = _segment(k, x)
    return v[i] + t * (v[i + 1] - v[i])


def _interpolate_array(k: tuple[float, ...], v: tuple[float, ...], x: np.ndarray) -> np.ndarray:
    """`_interpolate` elementwise over an array, with the same floating-point operations."""
    knots, values = np.asarray(k, dtype=np.float64), np.asarray(v, dtype=np.float64)
    i = np.minimum(np.maximum(np.searchsorted(knots, x, side="right") - 1, 0), len(k) - 2)
    t = (x - knots[i]) / (knots[i + 1] - knots[i])
    return values[i] + t * (values[i + 1] - values[i])


@dataclass(frozen=True, slots=True)
class BilinearTable:
    """z(batch, context) on a grid; bilinear inside, linear extrapolation outside."""

    batch_knots: tuple[float, ...]
    context_knots: tuple[float, ...]
    values: tuple[tuple[float, ...], ...]     # values[i][j] at (batch_knots[i], context_knots[j])

    def __call__(self, batch: float, context: float) -> float:
        i, t = self.batch_segment(batch)
        low = _interpolate(self.context_knots, self.values[i], context)
        high = _interpolate(self.context_knots, self.values[i + 1], context)
        return low + t * (high - low)

    def batch_segment(self, batch: float) -> tuple[int, float]:
        """(i, t): `batch` lies at fraction t between batch_knots[i] and [i + 1] (extrapolated at
        both ends). Only those two rows of the table matter for it."""
        k = self.batch_knots
        i = min(max(bisect.bisect_right(k, batch) - 1, 0), len(k) - 2)
        return i, (batch - k[i]) / (k[i + 1] - k[i])


@dataclass(frozen=True, slots=True)
class CalibratedCost:
    """Iteration time (seconds) from per-layer operator fits; see the module docstring.

    Per-layer functions return milliseconds on one GPU. ``prefill_coef`` = (a, b, c, d) of
    ``a + b·P + c·Σchunk·kv + d·Σchunk²``; ``decode_context_scale`` multiplies the context-dependent
    part of the decode table (``decode(B, ctx) − decode(B, 0)``) for derived model shapes.
    """

    num_layers: int
    hidden_size: int
    linear: PiecewiseLinear
    elementwise: PiecewiseLinear
    prefill_coef: tuple[float, float, float, float]
    decode: BilinearTable
    decode_context_scale: float = 1.0
    all_reduce: PiecewiseLinear | None = None
    all_reduces_per_layer: int = 2
    all_reduce_launch_time: float = 0.02 * MS
    attention_batching_overhead: float = 0.0
    iteration_overhead_time: float = 0.0
    label: str = field(default="calibrated", compare=False)
    #: Memos of the parts that depend on one number alone (the operations stay `parts_ms`'s):
    #: per token count (linear, elementwise, all-reduce), per decode batch size the decode table's
    #: batch segment, its value at context 0 and the batching factor.
    _by_tokens: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)
    _by_batch: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.num_layers < 1 or self.hidden_size < 1:
            raise ValueError("num_layers and hidden_size must be >= 1")
        if min(self.attention_batching_overhead, self.iteration_overhead_time, self.all_reduce_launch_time,
               self.decode_context_scale) < 0:
            raise ValueError("overheads and scales must be >= 0")

    # The scalar form: `parts_ms` defines the model; `iteration_time`, `breakdown` and
    # `decode_iteration_time` add its parts up. `decode_run_durations` is the one vectorised form.
    def iteration_time(self, batch: BatchStats) -> float:
        if batch.num_tokens == 0:
            return 0.0
        return self._seconds(*self.parts_ms(batch))

    def parts_ms(self, batch: BatchStats) -> tuple[float, float, float, float, float]:
        """(linear, elementwise, attn_prefill, attn_decode, all_reduce) per layer, milliseconds,
        each clipped at 0."""
        linear, elementwise, all_reduce = self._token_terms(batch.num_tokens)
        n = batch.num_decode_seqs
        decode = max(self._decode_attention_ms(n, batch.decode_context_tokens / n), 0.0) if n else 0.0
        return linear, elementwise, max(self._prefill_ms(batch), 0.0), decode, all_reduce

    def decode_iteration_time(self, num_decode_seqs: int, decode_context_tokens: int) -> float:
        """`iteration_time` of `num_decode_seqs` decodes holding `decode_context_tokens` in all,
        without building a `BatchStats` (the engine's fast path prices short decode runs so)."""
        n = num_decode_seqs
        linear, elementwise, all_reduce = self._token_terms(n)
        decode = max(self._decode_attention_ms(n, decode_context_tokens / n), 0.0)
        return self._seconds(linear, elementwise, 0.0, decode, all_reduce)

    def breakdown(self, batch: BatchStats) -> dict[str, float]:
        """Seconds per operator group for the whole iteration (all layers), plus the fixed overhead."""
        names = ("linear", "elementwise", "attn_prefill", "attn_decode", "all_reduce")
        parts = self.parts_ms(batch) if batch.num_tokens else (0.0,) * 5
        out = {k: v * self.num_layers * MS for k, v in zip(names, parts)}
        out["overhead"] = self.iteration_overhead_time if batch.num_tokens else 0.0
        return out

    def _seconds(self, linear, elementwise, prefill, decode, all_reduce) -> float:
        # Added left to right (not with `sum`, which compensates on Python >= 3.12); the compiled
        # engine and `decode_run_durations` repeat these operations.
        return ((((linear + elementwise) + prefill) + decode) + all_reduce) * self.num_layers * MS \
            + self.iteration_overhead_time

    def _token_terms(self, tokens: int) -> tuple[float, float, float]:
        """(linear, elementwise, all-reduce) per layer (ms), clipped at 0, for `tokens` tokens."""
        terms = self._by_tokens.get(tokens)
        if terms is None:
            all_reduce = 0.0
            if self.all_reduce is not None:
                one = self.all_reduce(tokens * self.hidden_size * 2) + self.all_reduce_launch_time / MS
                all_reduce = self.all_reduces_per_layer * one
            terms = self._by_tokens[tokens] = (max(self.linear(tokens), 0.0),
                                               max(self.elementwise(tokens), 0.0), max(all_reduce, 0.0))
        return terms

    def _batch_terms(self, n: int) -> tuple[float, int, float, float]:
        """(decode table at context 0, its batch segment i and fraction t, batching factor)."""
        terms = self._by_batch.get(n)
        if terms is None:
            i, t = self.decode.batch_segment(n)
            terms = self._by_batch[n] = (self.decode(n, 0.0), i, t,
                                         1 + self.attention_batching_overhead * (n > 1))
        return terms

    def _decode_attention_ms(self, n: int, context_per_seq: float) -> float:
        """Decode attention per layer (ms), before clipping: n sequences of mean context x; the
        context-dependent part scaled by `decode_context_scale`."""
        base, i, t, batching = self._batch_terms(n)
        knots, values = self.decode.context_knots, self.decode.values
        # `_interpolate` of both batch rows at the same context: its segment found once
        j, u = _segment(knots, context_per_seq)
        row, next_row = values[i], values[i + 1]
        low, high = row[j] + u * (row[j + 1] - row[j]), next_row[j] + u * (next_row[j + 1] - next_row[j])
        return (base + self.decode_context_scale * ((low + t * (high - low)) - base)) * batching

    def decode_run_durations(self, num_decode_seqs: int, decode_context_tokens: int,
                             num_iterations: int) -> np.ndarray:
        """`decode_iteration_time` over a run in which every decode's context grows by one token
        per iteration (the `kvsched.engine.fastforward.DecodeRunCost` protocol), vectorised."""
        n = num_decode_seqs
        linear, elementwise, all_reduce = self._token_terms(n)
        base, i, t, batching = self._batch_terms(n)
        table = self.decode
        x = (decode_context_tokens + n * np.arange(num_iterations, dtype=np.int64)) / n
        low = _interpolate_array(table.context_knots, table.values[i], x)
        high = _interpolate_array(table.context_knots, table.values[i + 1], x)
        decode = np.maximum((base + self.decode_context_scale * ((low + t * (high - low)) - base)) * batching, 0.0)
        return ((((linear + elementwise) + 0.0) + decode) + all_reduce) * self.num_layers * MS \
            + self.iteration_overhead_time

    def _prefill_ms(self, batch: BatchStats) -> float:
        n, p = batch.num_prefill_seqs, batch.num_prefill_tokens
        if n == 0 or p == 0:
            return 0.0
        squares = batch.prefill_chunk_squares
        a, b, c, d = self.prefill_coef
        ms = a + b * p + c * max(batch.prefill_attention_work - squares, 0) + d * squares
        return ms * (1 + self.attention_batching_overhead * (n > 1))


@dataclass(frozen=True, slots=True)
class VidurRoundedCost(CalibratedCost):
    """`CalibratedCost` with the rounding of Vidur's batch-time predictor, for fidelity comparisons
    with Vidur only (not a better model of a GPU: Vidur looks its random-forest predictions up at
    rounded keys, so its batches run as if a little larger).

    Two rules of microsoft/vidur (the same in the WAIT authors' fork ``Luoxiaogan/vidur_or`` at
    853c943, where the line numbers are):

    - the token count of every linear, elementwise and all-reduce operator is rounded up to a
      multiple of 8 (``vidur/entities/batch.py`` line 49, ``_total_num_tokens_rounded``, used by every
      ``_predictions[...][(batch._total_num_tokens_rounded,)]`` lookup of
      ``vidur/execution_time_predictor/sklearn_execution_time_predictor.py`` lines 783–827);
    - decode attention is looked up at (decode sequences, the integer mean context rounded up to
      ``kv_cache_prediction_granularity``, 64 by default) (same file, lines 740–748).

    Not emulated: the same granularity applied to each prefill chunk's cached context (lines
    766–774; `BatchStats` carries only the sum), which changes nothing for prefills that start from
    an empty cache (every vLLM-V0 prefill, a restart included: Vidur makes the processed tokens the
    new prompt). The compiled kernels do not implement it, so runs under it take the Python engine.
    """

    token_multiple: int = 8
    context_granularity: int = 64

    def __post_init__(self) -> None:
        CalibratedCost.__post_init__(self)
        if self.token_multiple < 1 or self.context_granularity < 1:
            raise ValueError("token_multiple and context_granularity must be >= 1")

    def rounded_tokens(self, tokens: int) -> int:
        m = self.token_multiple
        return -(-tokens // m) * m

    def rounded_context(self, decode_context_tokens: int, num_decode_seqs: int) -> int:
        g = self.context_granularity
        return -(-(decode_context_tokens // num_decode_seqs) // g) * g

    def parts_ms(self, batch: BatchStats) -> tuple[float, float, float, float, float]:
        linear, elementwise, all_reduce = self._token_terms(self.rounded_tokens(batch.num_tokens))
        n = batch.num_decode_seqs
        decode = max(self._decode_attention_ms(n, self.rounded_context(batch.decode_context_tokens, n)), 0.0) \
            if n else 0.0
        return linear, elementwise, max(self._prefill_ms(batch), 0.0), decode, all_reduce

    def decode_iteration_time(self, num_decode_seqs: int, decode_context_tokens: int) -> float:
        n = num_decode_seqs
        linear, elementwise, all_reduce = self._token_terms(self.rounded_tokens(n))
        decode = max(self._decode_attention_ms(n, self.rounded_context(decode_context_tokens, n)), 0.0)
        return self._seconds(linear, elementwise, 0.0, decode, all_reduce)

    def decode_run_durations(self, num_decode_seqs: int, decode_context_tokens: int,
                             num_iterations: int) -> np.ndarray:
        n = num_decode_seqs
        return np.array([self.decode_iteration_time(n, decode_context_tokens + k * n)
                         for k in range(num_iterations)], dtype=np.float64)


def vidur_rounded(cost: CalibratedCost, *, token_multiple: int = 8, context_granularity: int = 64) -> VidurRoundedCost:
    """`cost` with Vidur's predictor rounding (`VidurRoundedCost`)."""
    fields = {f: getattr(cost, f) for f in CalibratedCost.__dataclass_fields__
              if CalibratedCost.__dataclass_fields__[f].init}
    return VidurRoundedCost(**fields, token_multiple=token_multiple, context_granularity=context_granularity)


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The shape numbers a cost model and a KV capacity need (HF config names in comments)."""

    name: str                  # profile folder, e.g. "meta-llama/Llama-2-70b-hf"
    num_layers: int            # num_hidden_layers
    hidden_size: int           # hidden_size
    num_q_heads: int           # num_attention_heads
    num_kv_heads: int          # num_key_value_heads
    intermediate_size: int     # intermediate_size (gated MLP)
    vocab_size: int            # vocab_size (the real one, for the weights)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_q_heads

    @property
    def num_params(self) -> int:
        """Parameters: untied embedding and LM head, attention, gated MLP, two norms per layer, final norm."""
        h, hd = self.hidden_size, self.head_dim
        attention = h * hd * (2 * self.num_q_heads + 2 * self.num_kv_heads)
        per_layer = attention + 3 * h * self.intermediate_size + 2 * h
        return self.num_layers * per_layer + 2 * self.vocab_size * h + h


@lru_cache(maxsize=1)
def load_calibration() -> dict:
    """The fitted coefficients shipped with the package."""
    text = resources.files("kvsched.cost").joinpath("data/calibration.json").read_text()
    return json.loads(text)


def attention_scales(shape: ModelShape, tensor_parallel: int, reference: dict) -> tuple[float, float]:
    """(prefill scale, decode-context scale) relative to the profiled attention table's shape."""
    q = shape.num_q_heads // tensor_parallel * shape.head_dim
    kv = -(-shape.num_kv_heads // tensor_parallel) * shape.head_dim
    return (q / (reference["q_heads_per_gpu"] * reference["head_dim"]),
            kv / (reference["kv_heads_per_gpu"] * reference["head_dim"]))


def build_cost(shape: ModelShape, tensor_parallel: int, *, attention_batching_overhead: float | None = None,
               iteration_overhead_time: float = 0.0, calibration: dict | None = None) -> CalibratedCost:
    """A `CalibratedCost` for (model shape, TP degree) from the shipped coefficients.

    ``attention_batching_overhead`` None: Vidur's rule (0.1 for GQA models, 0 otherwise).
    Raises KeyError when the model or TP degree was not profiled.
    """
    cal = calibration or load_calibration()
    tp = str(tensor_parallel)
    linear, elementwise = cal["linear"][shape.name][tp], cal["elementwise"][shape.name][tp]
    prefill, decode = cal["attn_prefill"], cal["attn_decode"]
    prefill_scale, decode_scale = attention_scales(shape, tensor_parallel, prefill["reference"])
    a, b, c, d = prefill["coef"]
    all_reduce = None
    if tensor_parallel > 1:
        fit = cal["all_reduce"][tp]
        all_reduce = PiecewiseLinear(tuple(fit["knots"]), tuple(fit["values"]))
    if attention_batching_overhead is None:
        attention_batching_overhead = 0.1 if shape.num_q_heads > shape.num_kv_heads else 0.0
    return CalibratedCost(
        num_layers=shape.num_layers, hidden_size=shape.hidden_size,
        linear=PiecewiseLinear(tuple(linear["knots"]), tuple(linear["values"])),
        elementwise=PiecewiseLinear(tuple(elementwise["knots"]), tuple(elementwise["values"])),
        prefill_coef=(a, b * prefill_scale, c * prefill_scale, d * prefill_scale),
        decode=BilinearTable(tuple(decode["batch_knots"]), tuple(decode["context_knots"]),
                             tuple(tuple(r) for r in decode["values"])),
        decode_context_scale=decode_scale, all_reduce=all_reduce,
        attention_batching_overhead=attention_batching_overhead,
        iteration_overhead_time=iteration_overhead_time,
        label=f"{shape.name} TP{tensor_parallel}")


def fit_errors(shape: ModelShape, tensor_parallel: int, calibration: dict | None = None) -> dict[str, float]:
    """Held-out MAPE (%) per operator group of the fits behind `build_cost(shape, tensor_parallel)`."""
    cal = calibration or load_calibration()
    tp = str(tensor_parallel)
    errors = {"linear": cal["linear"][shape.name][tp]["mape"],
              "elementwise": cal["elementwise"][shape.name][tp]["mape"],
              "attn_prefill": cal["attn_prefill"]["mape"], "attn_decode": cal["attn_decode"]["mape"]}
    if tensor_parallel > 1:
        errors["all_reduce"] = cal["all_reduce"][tp]["mape"]
    return errors
