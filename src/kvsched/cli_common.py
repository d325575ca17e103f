"""Shared command-line pieces: option types, spec parsing, error handling, progress, output.

Command modules (``kvsched.cli_<area>``) reuse these so that every command reads a workload, a
cost model, a KV cache and policies the same way::

    from kvsched import cli_common as cc

    @app.command()
    @cc.user_errors
    def mine(workload: cc.WorkloadOpt = "default", trace: cc.TraceOpt = None, rate: cc.RateOpt = None,
             num_requests: cc.NumRequestsOpt = None, kv_capacity: cc.KvCapacityOpt = None,
             block_size: cc.BlockSizeOpt = None, kv_convention: cc.KvConventionOpt = "computed",
             cost: cc.CostOpt = cc.DEFAULT_COST, predictor: cc.PredictorOpt = None, seed: cc.SeedOpt = 0):
        setup = cc.build_setup(workload=workload, trace=trace, rate=rate, num_requests=num_requests,
                               kv_capacity=kv_capacity, block_size=block_size,
                               kv_convention=kv_convention, cost=cost, predictor=predictor, seed=seed)
        ...

Defaults (the scenario that ``kvsched compare`` runs with no options) — our choices, chosen so
that the default comparison is memory-bound (requests queue, vLLM evicts):

- cost ``linear:d0=0.022,d1=8.7e-7`` (`LinearCost`, time = d0 + d1 · KV tokens in the batch): the
  memory-bandwidth roofline of a Llama-2-7B fp16 decode step on one NVIDIA A10G (24 GB, 600 GB/s):
  d0 = 13.5 GB of weights / 600 GB/s ≈ 22 ms per iteration, d1 = 0.5 MiB of KV per token
  (2 · 32 layers · 4096 · 2 bytes) / 600 GB/s ≈ 0.87 µs per KV token. Prefill compute is not
  modelled (calibrated presets do that: ``--cost preset:NAME``).
- KV capacity 12,288 tokens (768 blocks of 16): what is left of 0.9 × 24 GB after 13.5 GB of
  weights and about 1.5 GB of activations, at 0.5 MiB per token (≈ 6.4 GB).
- block size 16 (vLLM's default); KV convention ``computed`` (vLLM's accounting).
- workload: the embedded LMSYS-Chat-1M-like workload (`kvsched.workload.default_workload`), 1,000
  requests, Poisson arrivals at 8 requests/s.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console

from .cost import CostModel, LinearCost, UnitTime
from .engine import RunResult, Simulator
from .errors import ConfigError, UserError
from .memory import KVConvention, peak_kv_tokens
from .workload import DEFAULT_NUM_REQUESTS, DEFAULT_RATE, Workload, default_workload

DEFAULT_COST = "linear:d0=0.022,d1=8.7e-7"
DEFAULT_KV_CAPACITY_TOKENS = 12288
DEFAULT_BLOCK_SIZE = 16
WORKLOADS = ("default",)
#: Seconds a run must last before its progress bar appears.
PROGRESS_DELAY = 1.0

# --------------------------------------------------------------------------- option types

WorkloadOpt = Annotated[str, typer.Option(
    "--workload", help="Built-in workload: 'default' (LMSYS-Chat-1M-like lengths). Ignored with --trace.")]
TraceOpt = Annotated[Path | None, typer.Option(
    "--trace", help="Trace file: .csv/.jsonl/.parquet (num_prompt_tokens, num_output_tokens[, arrival_time] "
                    "or Vidur's columns) or ShareGPT .json.", dir_okay=False)]
RateOpt = Annotated[float | None, typer.Option(
    "--rate", help=f"Poisson arrivals per second (0: all at time 0). Default: {DEFAULT_RATE:g} for the "
                   "default workload; a trace keeps its own arrival times (all at 0 if it has none).")]
NumRequestsOpt = Annotated[int | None, typer.Option(
    "--num-requests", help=f"Number of requests (default workload: {DEFAULT_NUM_REQUESTS}; a trace: "
                           "its first N rows, default all).")]
KvCapacityOpt = Annotated[int | None, typer.Option(
    "--kv-capacity", help=f"KV cache capacity in tokens (default {DEFAULT_KV_CAPACITY_TOKENS}, or the "
                          "preset's).")]
BlockSizeOpt = Annotated[int | None, typer.Option(
    "--block-size", help=f"KV block size in tokens (default {DEFAULT_BLOCK_SIZE}, or the preset's).")]
KvConventionOpt = Annotated[str, typer.Option(
    "--kv-convention", help="KV accounting: 'computed' (vLLM: s+j-1 while emitting token j) or "
                            "'emitted' (the papers: s+j).")]
CostOpt = Annotated[str, typer.Option(
    "--cost", help="Iteration time: 'unit', 'linear:d0=SECONDS,d1=SECONDS_PER_KV_TOKEN' or 'preset:NAME'.")]
PredictorOpt = Annotated[str | None, typer.Option(
    "--predictor", help="Output-length predictor spec, e.g. 'exact' (see kvsched.predictors).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for the workload, predictor and policies.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
OutputOpt = Annotated[Path | None, typer.Option(
    "--output", "-o", help="Also write the JSON results to this file (written whole or not at all).",
    dir_okay=False)]


# --------------------------------------------------------------------------- errors

def user_errors(func: Callable) -> Callable:
    """Decorator for commands: a `UserError` becomes one line ``error: ...`` on stderr, exit 2."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            fail(str(exc))
    return wrapper


def fail(message: str, code: int = 2):
    """Print ``error: message`` on stderr (one line) and exit with `code`."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


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
    """'unit' | 'linear:d0=..,d1=..' | 'preset:NAME' → `CostSpec`."""
    kind, _, rest = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "unit" and not rest:
        return CostSpec(UnitTime())
    if kind == "linear":
        values = _key_values(rest, "--cost linear")
        unknown = sorted(set(values) - {"d0", "d1"})
        if unknown or set(values) != {"d0", "d1"}:
            raise ConfigError(f"--cost: expected linear:d0=SECONDS,d1=SECONDS_PER_KV_TOKEN, got {text!r}")
        try:
            return CostSpec(LinearCost(_float(values["d0"], "--cost", "d0"), _float(values["d1"], "--cost", "d1")))
        except ValueError as exc:
            raise ConfigError(f"--cost: {exc}") from None
    if kind == "preset":
        return _preset_cost(rest.strip())
    raise ConfigError(f"--cost: unknown cost {text!r}; expected 'unit', 'linear:d0=..,d1=..' or 'preset:NAME'")


def _preset_cost(name: str) -> CostSpec:
    if not name:
        raise ConfigError("--cost preset: expected preset:NAME")
    try:
        presets = importlib.import_module(f"{__package__}.presets")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.presets":
            raise
        raise ConfigError(f"--cost preset:{name}: hardware presets are not available in this "
                          "installation (no kvsched.presets)") from None
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


def parse_policies(text: str) -> list[tuple[str, Any]]:
    """'vllm:watermark=0.01,sarathi' → [(label, policy), ...] (label = the spec as given)."""
    from .policies import make
    from .policies.registry import parse_policy_spec, split_policy_list
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

def build_workload(*, workload: str = "default", trace: Path | None = None, rate: float | None = None,
                   num_requests: int | None = None, seed: int = 0, predictor: str | None = None) -> Workload:
    """The request stream every policy of a command sees (predictions included)."""
    if rate is not None and not (math.isfinite(rate) and rate >= 0):
        raise ConfigError(f"--rate: got {rate}, expected a number of requests per second >= 0")
    if num_requests is not None and num_requests < 1:
        raise ConfigError(f"--num-requests: got {num_requests}, expected at least 1")
    if trace is not None:
        from .traces import load_trace
        loaded = load_trace(trace, rate=rate or None, seed=seed, num_requests=num_requests)
        if rate == 0:
            loaded = loaded.with_arrivals(np.zeros(len(loaded)))
    else:
        if workload not in WORKLOADS:
            raise ConfigError(f"--workload: unknown workload {workload!r}; expected one of: "
                              f"{', '.join(WORKLOADS)} (or give --trace FILE)")
        chosen_rate = DEFAULT_RATE if rate is None else (rate or None)
        loaded = default_workload(num_requests or DEFAULT_NUM_REQUESTS, rate=chosen_rate, seed=seed)
    from .predictors import apply_predictor
    return apply_predictor(loaded, predictor, seed)


def build_simulator(cost: CostSpec, *, kv_capacity: int | None = None, block_size: int | None = None,
                    kv_convention: str = "computed") -> Simulator:
    """Options win over the preset's KV capacity / block size, which win over the defaults."""
    capacity = kv_capacity if kv_capacity is not None else (cost.kv_capacity_tokens or DEFAULT_KV_CAPACITY_TOKENS)
    block = block_size if block_size is not None else (cost.block_size or DEFAULT_BLOCK_SIZE)
    if block < 1:
        raise ConfigError(f"--block-size: got {block}, expected at least 1 token")
    if capacity < block:
        raise ConfigError(f"--kv-capacity: got {capacity} tokens, expected at least one block ({block} tokens)")
    return Simulator(cost.cost, capacity, block_size=block, kv_convention=parse_convention(kv_convention))


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
                f"cost {self.cost.cost}{preset}, seed {self.seed}")


def build_setup(*, workload: str = "default", trace: Path | None = None, rate: float | None = None,
                num_requests: int | None = None, kv_capacity: int | None = None,
                block_size: int | None = None, kv_convention: str = "computed",
                cost: str = DEFAULT_COST, predictor: str | None = None, seed: int = 0) -> Setup:
    cost_spec = parse_cost(cost)
    simulator = build_simulator(cost_spec, kv_capacity=kv_capacity, block_size=block_size,
                                kv_convention=kv_convention)
    stream = build_workload(workload=workload, trace=trace, rate=rate, num_requests=num_requests,
                            seed=seed, predictor=predictor)
    too_big = check_fits(stream, simulator)
    return Setup(stream, simulator, seed, cost_spec, too_big)


# --------------------------------------------------------------------------- running

class ProgressReporter:
    """The engine's ``progress(done, total)`` callback, drawing a rich bar once a run has lasted
    `delay` seconds (short runs print nothing). Use as a context manager."""

    def __init__(self, label: str, *, console: Console | None = None, delay: float = PROGRESS_DELAY,
                 enabled: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self.label, self.delay, self.clock = label, delay, clock
        self.started = clock()
        self.progress = None
        self.task = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.progress is None:
            if self.clock() - self.started < self.delay:
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=self.console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=total)
        self.progress.update(self.task, completed=done, total=total)

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()


def run_policy(setup: Setup, policy, label: str, *, console: Console | None = None) -> RunResult:
    """Run one policy on the setup's stream, with a progress bar if it takes more than a second."""
    with ProgressReporter(f"{label}", console=console) as reporter:
        return setup.simulator.run(setup.workload, policy, seed=setup.seed, progress=reporter)


# --------------------------------------------------------------------------- output

def json_safe(value: Any) -> Any:
    """NaN/inf → None, numpy scalars → Python, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any) -> str:
    return json.dumps(json_safe(value), indent=2, allow_nan=False)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, then rename: a reader
    (or a crash) never sees a partial file."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"--output: folder {str(folder)!r} does not exist")
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: floats to `digits` significant digits, None/NaN as '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)
