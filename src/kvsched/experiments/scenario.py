"""Scenarios from options: the cost model, the workload and the simulator a run uses.

The library side of the command line (`kvsched.cli.common` re-exports it for the commands) and of
sweeps (`kvsched.experiments`): text specs such as ``linear:d0=..,d1=..`` or ``preset:NAME`` become
objects, with one-line `ConfigError`s for bad values. The defaults describe one deliberately
memory-bound scenario; `kvsched.cli.common`'s docstring explains each number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..cost.models import CostModel, LinearCost, UnitTime
from ..engine.simulator import Simulator
from ..errors import ConfigError
from ..engine.rules import Eviction, KVConvention, peak_kv_tokens
from ..workload.synthetic import DEFAULT_NUM_REQUESTS, DEFAULT_RATE, Workload, default_workload

DEFAULT_COST = "linear:d0=0.022,d1=8.7e-7"
DEFAULT_KV_CAPACITY_TOKENS = 12288
DEFAULT_BLOCK_SIZE = 16
WORKLOADS = ("default", "multiturn")


# --------------------------------------------------------------------------- specs

def _key_values(text: str, option: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"{option}: expected name=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _float(text: str, option: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{option}: {name}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{option}: {name}={text!r} must be finite")
    return value


@dataclass(frozen=True)
class CostSpec:
    """A parsed ``--cost``: the model, and the preset's KV capacity/block size when it is a preset."""

    cost: CostModel
    kv_capacity_tokens: int | None = None
    block_size: int | None = None
    preset: str | None = None


def parse_cost(text: str) -> CostSpec:
    """'unit' | 'linear:d0=..,d1=..' | 'preset:NAME' | 'roofline:model=..,gpu=..[,tp=..,dtype=..]' → `CostSpec`."""
    kind, _, rest = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "unit" and not rest:
        return CostSpec(UnitTime())
    if kind == "linear":
        values = _key_values(rest, "--cost linear")
        if set(values) != {"d0", "d1"}:
            raise ConfigError(f"--cost: expected linear:d0=SECONDS,d1=SECONDS_PER_KV_TOKEN, got {text!r}")
        try:
            return CostSpec(LinearCost(_float(values["d0"], "--cost", "d0"), _float(values["d1"], "--cost", "d1")))
        except ValueError as exc:
            raise ConfigError(f"--cost: {exc}") from None
    if kind == "preset":
        return _preset_cost(rest.strip())
    if kind == "roofline":
        return _roofline_cost(rest)
    raise ConfigError(f"--cost: unknown cost {text!r}; expected 'unit', 'linear:d0=..,d1=..', 'preset:NAME' "
                      "or 'roofline:model=NAME|PATH,gpu=NAME[,tp=N,dtype=bf16]'")


#: roofline spec keys -> what each expects (the error messages name them).
ROOFLINE_KEYS = {"model": "a shipped config name or a config.json path", "gpu": "a GPU name (kvsched.cost.gpus)",
                 "tp": "a tensor-parallel degree >= 1", "dtype": "bf16, fp16 or fp8",
                 "overhead": "seconds per iteration >= 0", "seq_overhead": "seconds per sequence >= 0"}


def _roofline_cost(rest: str) -> CostSpec:
    """``roofline:model=..,gpu=..[,tp=..,dtype=..,overhead=..,seq_overhead=..]``: a `RooflineCost` and
    the KV capacity vLLM would allocate for it (`kvsched.cost.roofline.vllm_kv_capacity`)."""
    from ..cost.roofline import build_roofline, vllm_kv_capacity
    values = _key_values(rest, "--cost roofline")
    unknown = sorted(set(values) - set(ROOFLINE_KEYS))
    if unknown:
        raise ConfigError(f"--cost roofline: unknown key {unknown[0]!r}; expected {', '.join(ROOFLINE_KEYS)}")
    missing = [k for k in ("model", "gpu") if not values.get(k)]
    if missing:
        raise ConfigError(f"--cost roofline: {missing[0]}= is required ({ROOFLINE_KEYS[missing[0]]})")
    tp_text = values.get("tp", "1")
    if not tp_text.isdigit() or int(tp_text) < 1:
        raise ConfigError(f"--cost roofline: tp={tp_text!r}, expected {ROOFLINE_KEYS['tp']}")
    overheads = {name: _float(values[key], "--cost roofline", key)
                 for key, name in (("overhead", "iteration_overhead_time"), ("seq_overhead", "seq_overhead_time"))
                 if key in values}
    try:
        cost = build_roofline(values["model"], values["gpu"], int(tp_text), values.get("dtype", "bf16").lower(),
                              **overheads)
        kv = vllm_kv_capacity(cost.model, cost.gpu, cost.tensor_parallel, dtype=cost.dtype)
    except ConfigError as exc:
        raise ConfigError(f"--cost roofline: {exc}") from None
    return CostSpec(cost, kv.kv_capacity_tokens, 16)


def _preset_cost(name: str) -> CostSpec:
    if not name:
        raise ConfigError("--cost preset: expected preset:NAME")
    from ..cost import presets
    try:
        preset = presets.get_preset(name)
    except (KeyError, ValueError) as exc:   # a ConfigError from get_preset passes through
        raise ConfigError(f"--cost preset:{name}: {exc}") from None
    return CostSpec(preset.cost, int(preset.kv_capacity_tokens), int(preset.block_size), name)


def parse_convention(text: str) -> KVConvention:
    try:
        return KVConvention(text.strip().lower())
    except ValueError:
        raise ConfigError(f"--kv-convention: got {text!r}, expected 'computed' or 'emitted'") from None


def parse_eviction(text: str) -> Eviction:
    try:
        return Eviction(text.strip().lower())
    except ValueError:
        raise ConfigError(f"--eviction: got {text!r}, expected 'recompute' or 'restart'") from None


def parse_policies(text: str) -> list[tuple[str, Any]]:
    """'vllm:watermark=0.01,sarathi' → [(label, policy), ...] (label = the spec as given)."""
    from ..policies import make
    from ..policies.registry import parse_policy_spec, split_policy_list
    out = []
    for spec in split_policy_list(text):
        name, params = parse_policy_spec(spec)
        out.append((spec.replace(";", ","), make(name, **params)))
    labels = [label for label, _ in out]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ConfigError(f"--policies: {duplicates[0]!r} is listed twice")
    return out


# --------------------------------------------------------------------------- workload and simulator

def check_workload_options(*, workload: str = "default", trace: Path | None = None,
                           shared_prefix_tokens: int | None = None,
                           shared_prefix_fraction: float | None = None,
                           think_time: float | None = None) -> None:
    """The workload options that need no drawing, checked before any work (`ConfigError`)."""
    if trace is None and workload not in WORKLOADS:
        raise ConfigError(f"--workload: unknown workload {workload!r}; expected one of: "
                          f"{', '.join(WORKLOADS)} (or give --trace FILE)")
    if shared_prefix_tokens is not None and (isinstance(shared_prefix_tokens, bool)
                                             or not isinstance(shared_prefix_tokens, int)
                                             or shared_prefix_tokens < 1):
        raise ConfigError(f"--shared-prefix-tokens: got {shared_prefix_tokens!r}, expected an integer >= 1")
    if shared_prefix_fraction is not None:
        if shared_prefix_tokens is None:
            raise ConfigError("--shared-prefix-fraction: needs --shared-prefix-tokens N (the system prompt's "
                              "length)")
        if not (math.isfinite(shared_prefix_fraction) and 0 <= shared_prefix_fraction <= 1):
            raise ConfigError(f"--shared-prefix-fraction: got {shared_prefix_fraction}, expected a fraction "
                              "in [0, 1]")
    if think_time is not None:
        if trace is not None or workload != "multiturn":
            raise ConfigError("--think-time: only for --workload multiturn (the mean think time between "
                              "a turn's finish and the next turn)")
        if not (math.isfinite(think_time) and think_time >= 0):
            raise ConfigError(f"--think-time: got {think_time}, expected a mean number of seconds >= 0")


def build_workload(*, workload: str = "default", trace: Path | None = None, rate: float | None = None,
                   num_requests: int | None = None, seed: int = 0, predictor: str | None = None,
                   shared_prefix_tokens: int | None = None, shared_prefix_fraction: float | None = None,
                   think_time: float | None = None) -> Workload:
    """The request stream every policy of a command sees (predictions included).

    ``shared_prefix_tokens``/``shared_prefix_fraction`` (default 1.0): that fraction of the
    requests (of the conversations, for multiturn) get one system prompt of that many tokens
    (`kvsched.workload.multiturn.with_shared_prefix`, seeded by ``seed``). ``think_time``: the
    mean think time of ``workload="multiturn"`` (seconds; default
    `kvsched.workload.multiturn.THINK_TIME_MEAN`).
    """
    if rate is not None and not (math.isfinite(rate) and rate >= 0):
        raise ConfigError(f"--rate: got {rate}, expected a number of requests per second >= 0")
    if num_requests is not None and num_requests < 1:
        raise ConfigError(f"--num-requests: got {num_requests}, expected at least 1")
    check_workload_options(workload=workload, trace=trace, shared_prefix_tokens=shared_prefix_tokens,
                           shared_prefix_fraction=shared_prefix_fraction, think_time=think_time)
    if trace is not None:
        from ..workload.traces import load_trace
        loaded = load_trace(trace, rate=rate or None, seed=seed, num_requests=num_requests)
        if rate == 0:
            loaded = loaded.with_arrivals(np.zeros(len(loaded)))
    else:
        chosen_rate = DEFAULT_RATE if rate is None else (rate or None)
        loaded = _built_in(workload, num_requests or DEFAULT_NUM_REQUESTS, chosen_rate, seed, think_time)
    if shared_prefix_tokens is not None:
        from ..workload.multiturn import with_shared_prefix
        fraction = 1.0 if shared_prefix_fraction is None else shared_prefix_fraction
        # its own stream (seed, 1): the lengths and arrivals stay those drawn without the option
        loaded = with_shared_prefix(loaded, shared_prefix_tokens, fraction, np.random.default_rng([seed, 1]))
    from ..workload.predictors import apply_predictor
    return apply_predictor(loaded, predictor, seed)


def _built_in(workload: str, num_requests: int, rate: float | None, seed: int,
              think_time: float | None) -> Workload:
    if workload == "multiturn":
        from ..workload.multiturn import THINK_TIME_MEAN, multiturn_workload
        return multiturn_workload(num_requests, rate=rate, seed=seed,
                                  think_time_mean=THINK_TIME_MEAN if think_time is None else think_time)
    return default_workload(num_requests, rate=rate, seed=seed)


def build_simulator(cost: CostSpec, *, kv_capacity: int | None = None, block_size: int | None = None,
                    kv_convention: str = "computed", eviction: str = "recompute",
                    prefix_caching: bool = False) -> Simulator:
    """Options win over the preset's KV capacity / block size, which win over the defaults.
    ``prefix_caching``: vLLM V1's automatic prefix caching (needs the computed convention)."""
    capacity = kv_capacity if kv_capacity is not None else (cost.kv_capacity_tokens or DEFAULT_KV_CAPACITY_TOKENS)
    block = block_size if block_size is not None else (cost.block_size or DEFAULT_BLOCK_SIZE)
    if block < 1:
        raise ConfigError(f"--block-size: got {block}, expected at least 1 token")
    if capacity < block:
        raise ConfigError(f"--kv-capacity: got {capacity} tokens, expected at least one block ({block} tokens)")
    convention = parse_convention(kv_convention)
    if prefix_caching and convention is not KVConvention.COMPUTED:
        raise ConfigError(f"--prefix-caching: needs --kv-convention computed (vLLM's accounting), got "
                          f"{convention.value!r}")
    return Simulator(cost.cost, capacity, block_size=block, kv_convention=convention,
                     eviction=parse_eviction(eviction), prefix_caching=prefix_caching)


def check_fits(workload: Workload, simulator: Simulator) -> int:
    """Number of requests too large for the KV cache; a `ConfigError` if that is all of them."""
    block = simulator.block_size
    usable = simulator.kv_capacity_tokens // block * block
    peaks = np.array([peak_kv_tokens(int(s), int(o), simulator.kv_convention) for s, o in
                      zip(workload.num_prompt_tokens, workload.true_output_tokens)], dtype=np.int64)
    needed = -(-peaks // block) * block
    too_big = int((needed > usable).sum())
    if len(workload) and too_big == len(workload):
        raise ConfigError(f"--kv-capacity: {simulator.kv_capacity_tokens} tokens is smaller than every "
                          f"request (the smallest needs {int(needed.min())} KV tokens); every request "
                          "would be rejected")
    return too_big


@dataclass(frozen=True)
class Setup:
    """What a command needs to run policies: the request stream, the simulator and the seed."""

    workload: Workload
    simulator: Simulator
    seed: int
    cost: CostSpec
    num_too_large: int

    def describe(self) -> str:
        sim = self.simulator
        preset = f" (preset {self.cost.preset})" if self.cost.preset else ""
        return (f"{len(self.workload)} requests ({self.workload.name}), KV {sim.kv_capacity_tokens} tokens "
                f"in blocks of {sim.block_size}, {sim.kv_convention.value} convention, "
                f"{'restart on eviction, ' if sim.eviction is Eviction.RESTART else ''}"
                f"{'prefix caching, ' if sim.prefix_caching else ''}"
                f"cost {self.cost.cost}{preset}, seed {self.seed}")


def build_setup(*, workload: str = "default", trace: Path | None = None, rate: float | None = None,
                num_requests: int | None = None, kv_capacity: int | None = None,
                block_size: int | None = None, kv_convention: str = "computed",
                cost: str = DEFAULT_COST, predictor: str | None = None, seed: int = 0,
                eviction: str = "recompute", prefix_caching: bool = False,
                shared_prefix_tokens: int | None = None, shared_prefix_fraction: float | None = None,
                think_time: float | None = None) -> Setup:
    workload_options = {"shared_prefix_tokens": shared_prefix_tokens,
                        "shared_prefix_fraction": shared_prefix_fraction, "think_time": think_time}
    check_workload_options(workload=workload, trace=trace, **workload_options)
    cost_spec = parse_cost(cost)
    simulator = build_simulator(cost_spec, kv_capacity=kv_capacity, block_size=block_size,
                                kv_convention=kv_convention, eviction=eviction, prefix_caching=prefix_caching)
    stream = build_workload(workload=workload, trace=trace, rate=rate, num_requests=num_requests,
                            seed=seed, predictor=predictor, **workload_options)
    too_big = check_fits(stream, simulator)
    return Setup(stream, simulator, seed, cost_spec, too_big)
