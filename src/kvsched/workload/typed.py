"""Typed workloads (WAIT's model) and the binning of an empirical length distribution into types.

The fluid-guided paper (Ao, Luo, Simchi-Levi, Wang, arXiv 2504.11320) has m request types; type j
arrives as a Poisson stream of rate λ_j, has prompt length l_j and output length l'_j. A prompt of
type j passes through stages s = 0 (prefill) .. l'_j (decode) and holds l_j + s KV tokens at stage s;
a batch lasts d0 + d1·(Σ prefill l + Σ decode (l + s)).

Mapping to the kvsched engine (checked in tests/bounds/test_fluid.py). Under ``KVConvention.COMPUTED``
the iteration that computes a prompt of s tokens emits output token 1 and holds s KV tokens; the
decode emitting token j holds s + j − 1. So WAIT's stage s is the engine iteration that emits
output token s + 1, holding l + s, and a WAIT type with output l'_j is a kvsched request with

    num_prompt_tokens = l_j,    true_output_tokens = l'_j + 1,

and ``LinearCost(d0, d1)`` charges exactly d0 + d1·(l + s summed over the batch), because
`BatchStats.kv_tokens` is the sum of the scheduled requests' context after the iteration. In this
module ``num_decode_stages`` is the paper's l'_j (the "d" of "p512d20").

Text form of a type mix (`parse_mix`): ``p512d20@0.7+p512d50@0.3`` — prompt 512, 20 decode
stages, weight 0.7; weights are rates in requests/s, or proportions when a total rate is given.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, WorkloadError
from .synthetic import DEFAULT_RATE, Poisson, Workload

_TYPE_RE = re.compile(r"^p(\d+)d(\d+)(?:@([0-9.eE+-]+))?$")


@dataclass(frozen=True, slots=True)
class RequestType:
    """One WAIT type: prompt l_j tokens, l'_j decode stages, Poisson rate λ_j (requests/s)."""

    num_prompt_tokens: int
    num_decode_stages: int
    rate: float

    def __post_init__(self) -> None:
        if self.num_prompt_tokens < 1 or self.num_decode_stages < 0 or not self.rate >= 0:
            raise ConfigError(f"request type needs prompt >= 1, decode stages >= 0 and rate >= 0, got "
                              f"p{self.num_prompt_tokens}d{self.num_decode_stages}@{self.rate}")

    @property
    def true_output_tokens(self) -> int:
        """Output tokens of the matching kvsched request: l'_j + 1 (the prefill emits one)."""
        return self.num_decode_stages + 1

    @property
    def kv_token_stages(self) -> int:
        """Σ_{s=0}^{l'} (l + s) = (l' + 1)(l + l'/2): KV tokens summed over the type's stages."""
        l, d = self.num_prompt_tokens, self.num_decode_stages
        return (d + 1) * l + d * (d + 1) // 2

    @property
    def label(self) -> str:
        return f"p{self.num_prompt_tokens}d{self.num_decode_stages}"


@dataclass(frozen=True, slots=True)
class TypeMix:
    """m request types; type ids are positions in ``types``."""

    types: tuple[RequestType, ...]

    def __post_init__(self) -> None:
        if not self.types:
            raise ConfigError("a type mix needs at least one type")
        if self.total_rate <= 0:
            raise ConfigError("a type mix needs a positive total rate")

    def __len__(self) -> int:
        return len(self.types)

    @property
    def total_rate(self) -> float:
        return float(sum(t.rate for t in self.types))

    @property
    def rates(self) -> np.ndarray:
        return np.array([t.rate for t in self.types], dtype=np.float64)

    def with_total_rate(self, total_rate: float) -> TypeMix:
        """The same proportions at a new total rate Λ."""
        scale = total_rate / self.total_rate
        return TypeMix(tuple(RequestType(t.num_prompt_tokens, t.num_decode_stages, t.rate * scale)
                             for t in self.types))

    def describe(self) -> str:
        return "+".join(f"{t.label}@{t.rate:g}" for t in self.types)


def parse_mix(text: str, total_rate: float | None = None, *, option: str = "--types") -> TypeMix:
    """``"p512d20@0.7+p512d50@0.3"`` → a `TypeMix`. A missing weight is 1.

    With ``total_rate`` the weights are proportions of it; otherwise they are the rates. Errors
    (`ConfigError`) name ``option``, the option or parameter the text came from.
    """
    types = []
    for piece in filter(None, (p.strip() for p in str(text).split("+"))):
        match = _TYPE_RE.match(piece)
        if match is None:
            raise ConfigError(f"{option}: type {piece!r}: expected p<prompt>d<decode stages>[@<weight>], "
                              "e.g. p512d20@0.7")
        try:
            weight = float(match.group(3)) if match.group(3) else 1.0
        except ValueError:
            raise ConfigError(f"{option}: type {piece!r}: weight {match.group(3)!r} is not a number; "
                              "expected p<prompt>d<decode stages>[@<weight>], e.g. p512d20@0.7") from None
        types.append(RequestType(int(match.group(1)), int(match.group(2)), weight))
    if not types:
        raise ConfigError(f"{option}: type mix {text!r}: expected at least one type such as p512d20@1")
    mix = TypeMix(tuple(types))
    return mix if total_rate is None else mix.with_total_rate(total_rate)


def synthesize_typed(mix: TypeMix, num_requests: int, rng: np.random.Generator, *,
                     name: str | None = None) -> Workload:
    """Poisson arrivals per type (superposed: rate Λ, each arrival of type j w.p. λ_j/Λ).

    The first arrival is at 0. ``type_id`` is set; lengths are the types' exact l_j, l'_j + 1.
    """
    if num_requests < 1:
        raise WorkloadError(f"got {num_requests}, expected at least 1 request", field="num_requests")
    arrival = Poisson(mix.total_rate).sample(num_requests, rng)
    type_id = rng.choice(len(mix), size=num_requests, p=mix.rates / mix.total_rate)
    prompt = np.array([t.num_prompt_tokens for t in mix.types], dtype=np.int64)[type_id]
    output = np.array([t.true_output_tokens for t in mix.types], dtype=np.int64)[type_id]
    return Workload.build(arrival, prompt, output, type_id=type_id, name=name or mix.describe(),
                          meta={"type_mix": mix.describe()})


def mix_from_tables(types, total_rate: float, *, option: str = "workload.types") -> TypeMix:
    """A sweep's ``[{share = 0.7, prompt = 512, output = 20}, ...]`` → a `TypeMix` at ``total_rate``.

    ``share``: relative weight (> 0; normalised over the list); ``prompt``: prompt tokens (integer
    >= 1); ``output``: output tokens of a request (integer >= 1; the prefill emits the first, so it is
    the WAIT type p<prompt>d<output − 1>). Anything else raises `ConfigError` naming ``option``, the
    table (1-based) and the key.
    """
    if not isinstance(types, (list, tuple)) or not types:
        raise ConfigError(f"{option}: expected a non-empty list of {{share, prompt, output}} tables, "
                          f"got {types!r}")
    rows = []
    for i, table in enumerate(types, start=1):
        where = f"{option}[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table {{share, prompt, output}}, got {table!r}")
        unknown = sorted(set(table) - {"share", "prompt", "output"})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; expected share, prompt, output")
        for key in ("share", "prompt", "output"):
            value = table.get(key)
            if value is None:
                raise ConfigError(f"{where}: missing key {key!r}; expected {{share, prompt, output}}")
            integral = key != "share"
            ok = (isinstance(value, int) if integral else isinstance(value, (int, float))) \
                and not isinstance(value, bool) and value > 0 and (integral or math.isfinite(value))
            if not ok:
                raise ConfigError(f"{where}.{key}: got {value!r}, expected "
                                  f"{'an integer >= 1' if integral else 'a finite number > 0'}")
        rows.append((table["prompt"], table["output"] - 1, float(table["share"])))
    total_share = sum(share for *_, share in rows)
    return TypeMix(tuple(RequestType(p, d, total_rate * share / total_share) for p, d, share in rows))


def typed_workload(types, *, rate: float | None, num_requests: int, seed: int) -> Workload:
    """The request stream of a ``kind = "typed"`` sweep point (`kvsched.experiments.runner`).

    ``types``: the TOML list of tables (`mix_from_tables`); ``rate``: the total rate Λ in
    requests/s, 0 for every arrival at time 0, None for ``DEFAULT_RATE``. Arrivals and types are
    drawn as in `synthesize_typed` from ``numpy.random.default_rng(seed)``; ``type_id`` is the
    table's position.
    """
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                             or not math.isfinite(rate) or rate < 0):
        raise ConfigError(f"workload.rates: got {rate!r}, expected a number of requests/s >= 0")
    mix = mix_from_tables(types, DEFAULT_RATE if rate is None else (rate or 1.0))
    workload = synthesize_typed(mix, num_requests, np.random.default_rng(seed))
    if rate == 0:
        workload = workload.with_arrivals(np.zeros(num_requests))
    return workload


@dataclass(frozen=True, slots=True)
class Binning:
    """An empirical length distribution turned into types: the mix and each request's type."""

    mix: TypeMix
    type_id: np.ndarray          # per request
    edges: tuple[int, ...]       # decode-stage bin edges: bin k holds stages in (edges[k], edges[k+1]]


def bin_lengths(num_prompt_tokens, true_output_tokens, *, num_bins: int, total_rate: float,
                representative: str = "mean") -> Binning:
    """Bin requests by output length (quantiles of the decode stages o − 1) into ≤ num_bins types.

    Each bin becomes a type with rate Λ·(share of requests in it) and lengths given by
    ``representative``: "mean" (rounded means: the fluid quantities of the binned model are close
    to the per-request ones) or "max" (the bin's largest prompt and output: conservative for
    memory). Empty or duplicate quantile bins are merged.
    """
    prompts = np.asarray(num_prompt_tokens, dtype=np.int64)
    stages = np.asarray(true_output_tokens, dtype=np.int64) - 1
    if prompts.size == 0 or prompts.shape != stages.shape:
        raise WorkloadError("binning needs equally long, non-empty prompt and output columns")
    if num_bins < 1 or representative not in ("mean", "max"):
        raise ConfigError("binning needs num_bins >= 1 and representative 'mean' or 'max'")
    qs = np.quantile(stages, np.linspace(0, 1, num_bins + 1)[1:-1], method="higher")
    inner = sorted(set(int(q) for q in qs) - {int(stages.max())})
    edges = (-1, *inner, int(stages.max()))
    type_id = np.searchsorted(np.asarray(edges[1:]), stages, side="left")
    types = []
    pick = np.mean if representative == "mean" else np.max
    for k in range(len(edges) - 1):
        members = type_id == k
        share = members.mean()
        types.append(RequestType(max(1, int(round(pick(prompts[members])))),
                                 int(round(pick(stages[members]))), total_rate * share))
    return Binning(TypeMix(tuple(types)), type_id.astype(np.int64), edges)


def binned_workload(workload: Workload, *, num_bins: int, total_rate: float,
                    representative: str = "mean") -> tuple[Workload, TypeMix]:
    """The workload with ``type_id`` set by `bin_lengths`, and the binned mix."""
    binning = bin_lengths(workload.num_prompt_tokens, workload.true_output_tokens, num_bins=num_bins,
                          total_rate=total_rate, representative=representative)
    return workload.with_columns(type_id=binning.type_id), binning.mix
