"""Shared command-line pieces: option types, spec parsing, error handling, progress, output.

Command modules (`kvsched.cli.*`) reuse these so that every command reads a workload, a
cost model, a KV cache and policies the same way::

    from kvsched.cli import common as cc

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
- workload: the embedded LMSYS-Chat-1M-like workload (`kvsched.workload.synthetic.default_workload`), 1,000
  requests, Poisson arrivals at 8 requests/s.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from typer.core import TyperGroup

try:                                       # typer >= 0.24 vendors click as typer._click
    from typer._click import exceptions as click_exc
except ImportError:                        # pragma: no cover - older typer on click
    from click import exceptions as click_exc
from rich.console import Console

from ..engine.simulator import RunResult
from ..errors import ConfigError, UserError
from ..experiments import scenario
from ..experiments.scenario import (  # noqa: F401  (the library side, re-exported for the command modules)
    DEFAULT_BLOCK_SIZE, DEFAULT_COST, DEFAULT_KV_CAPACITY_TOKENS, WORKLOADS, CostSpec, Setup,
    build_setup, build_simulator, build_workload, check_fits, parse_convention, parse_cost,
)
from ..workload.synthetic import DEFAULT_NUM_REQUESTS, DEFAULT_RATE

#: Seconds a run must last before its progress bar appears.
PROGRESS_DELAY = 1.0
#: Upper limits of the integer options, checked by click before any work. Seeds feed numpy and
#: the compiled kernels as int64; token amounts stay exact in float64 (2^53), so the engine's
#: arithmetic never overflows; ten million requests is a few GB of engine arrays.
MAX_SEED = 2 ** 63 - 1
MAX_TOKENS = 2 ** 53
MAX_NUM_REQUESTS = 10 ** 7

# --------------------------------------------------------------------------- option types

WorkloadOpt = Annotated[str, typer.Option(
    "--workload", help="Built-in workload: 'default' (LMSYS-Chat-1M-like lengths, independent requests) or "
                       "'multiturn' (LMSYS-Chat-1M-like conversations: 2.0 turns on average, each turn's "
                       "prompt the previous prompt + answer + a new message, sent a think time after the "
                       "previous turn finishes). Ignored with --trace.")]
TraceOpt = Annotated[Path | None, typer.Option(
    "--trace", help="Trace file: .csv/.jsonl/.parquet (num_prompt_tokens, num_output_tokens[, arrival_time] "
                    "or Vidur's columns), Mooncake .jsonl (timestamp in ms, input_length, output_length, "
                    "hash_ids) or ShareGPT .json.", dir_okay=False)]
RateOpt = Annotated[float | None, typer.Option(
    "--rate", help=f"Poisson arrivals per second (0: all at time 0). Default: {DEFAULT_RATE:g} for the "
                   "built-in workloads (multiturn: requests/s, conversations start at rate / 2.0 per "
                   "second); a trace keeps its own arrival times (all at 0 if it has none).")]
PrefixCachingOpt = Annotated[bool, typer.Option(
    "--prefix-caching", help="vLLM V1's automatic prefix caching: prompts sharing leading blocks (a "
                             "trace's hash_ids, multi-turn history, a shared system prompt) reuse cached KV. "
                             "Default off, so the theory papers' models are reproduced as they state them. "
                             "Needs --kv-convention computed. Runs in the Python engine (the numba kernels "
                             "have no prefix cache), as do multi-turn workloads.")]
SharedPrefixTokensOpt = Annotated[int | None, typer.Option(
    "--shared-prefix-tokens", min=1, max=MAX_TOKENS,
    help="Put one system prompt of this many tokens in front of a fraction of the prompts (they grow by "
         "it; multiturn: all turns of a chosen conversation). Default: none.")]
SharedPrefixFractionOpt = Annotated[float | None, typer.Option(
    "--shared-prefix-fraction", help="Share of requests (of conversations, for multiturn) that get the "
                                     "--shared-prefix-tokens system prompt, each drawn independently "
                                     "(default 1: all).")]
ThinkTimeOpt = Annotated[float | None, typer.Option(
    "--think-time", help="--workload multiturn: mean seconds between a turn's finish and the next turn "
                         "(exponential; default 10, our assumption).")]
NumRequestsOpt = Annotated[int | None, typer.Option(
    "--num-requests", min=1, max=MAX_NUM_REQUESTS,
    help=f"Number of requests (default workload: {DEFAULT_NUM_REQUESTS}; a trace: its first N rows, "
         "default all).")]
KvCapacityOpt = Annotated[int | None, typer.Option(
    "--kv-capacity", min=1, max=MAX_TOKENS,
    help=f"KV cache capacity in tokens (default {DEFAULT_KV_CAPACITY_TOKENS}, or the preset's).")]
BlockSizeOpt = Annotated[int | None, typer.Option(
    "--block-size", min=1, max=MAX_TOKENS,
    help=f"KV block size in tokens (default {DEFAULT_BLOCK_SIZE}, or the preset's).")]
KvConventionOpt = Annotated[str, typer.Option(
    "--kv-convention", help="KV accounting: 'computed' (vLLM: s+j-1 while emitting token j) or "
                            "'emitted' (the papers: s+j).")]
EvictionOpt = Annotated[str, typer.Option(
    "--eviction", help="What an evicted request keeps: 'recompute' (vLLM: its generated tokens, "
                       "recomputed with the prompt) or 'restart' (the theory papers: nothing; it "
                       "generates its output again). Restart runs use the Python engine.")]
CostOpt = Annotated[str, typer.Option(
    "--cost", help="Iteration time: 'unit', 'linear:d0=SECONDS,d1=SECONDS_PER_KV_TOKEN', 'preset:NAME' "
                   "(kvsched presets) or 'roofline:model=NAME|PATH,gpu=h100-sxm,tp=4[,dtype=bf16]' "
                   "(shipped configs: llama-3.1-8b/70b, qwen2.5-7b/72b, mistral-7b, llama-2-7b/70b).")]
PredictorOpt = Annotated[str | None, typer.Option(
    "--predictor", help="Output-length predictor spec, e.g. 'exact' (see kvsched.predictors).")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED,
                                      help="Seed for the workload, predictor and policies.")]
SloOpt = Annotated[str | None, typer.Option(
    "--slo", help="Service-level targets, e.g. 'ttft=2,tpot=0.1,e2e=30' (seconds; any subset): adds "
                  "slo_attainment (share of requests meeting all) and goodput_requests_per_s.")]
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


class OneLineErrors(TyperGroup):
    """The top-level command group: a usage error (unknown option, bad int, missing argument)
    is one line ``error: ...`` on stderr with exit 2, not click's usage box; a `UserError` that
    escapes a command is the same one line."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
        except click_exc.NoArgsIsHelpError as exc:   # 'kvsched' or 'kvsched bound' alone
            typer.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            code = 0
        except click_exc.ClickException as exc:
            _one_line(exc.format_message())
            code = 2
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            code = 130
        except UserError as exc:
            _one_line(str(exc))
            code = 2
        if not standalone_mode:
            return code
        sys.exit(code or 0)


def _one_line(message: str) -> None:
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)


def fail(message: str, code: int = 2):
    """Print ``error: message`` on stderr (one line) and exit with `code`."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)




def check_output(output: Path | None, *inputs: Path | None, option: str = "--output") -> None:
    """Before any work: the output file's folder exists and is writable, the path is not a
    folder and not one of the inputs (a run never overwrites its own trace)."""
    if output is None:
        return
    path = Path(output)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConfigError(f"{option}: {str(path)!r} is a folder; expected a file path")
    if not folder.is_dir():
        raise ConfigError(f"{option}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{option}: folder {str(folder)!r} is not writable")
    for given in inputs:
        if given is not None and Path(given).exists() and path.exists() and path.samefile(given):
            raise ConfigError(f"{option}: {str(path)!r} is an input file; choose another output path")


def import_policy_modules(text: str, option: str = "--policies") -> None:
    """Import the user modules a policy list names ('pkg.mod:Class'), so that a module that is
    missing, empty or fails at import is one line naming it: its code is the user's input, and
    whatever it raises (not only ImportError) is their mistake, not ours."""
    import importlib
    registered = _registered_ids()
    for piece in (p.strip() for p in text.split(",")):
        module, colon, _ = piece.partition(":")
        module = module.strip()
        if colon and not module:
            raise ConfigError(f"{option}: {piece!r} names no policy; expected an id such as 'vllm' "
                              "or 'package.module:Class'")
        if not colon or module in registered:      # an id, or an id with parameters
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:   # noqa: BLE001 - any failure of the user's module
            raise ConfigError(f"{option}: cannot import policy {piece!r}: module {module!r} raised "
                              f"{type(exc).__name__}: {exc}") from None


def _registered_ids() -> tuple[str, ...]:
    from ..policies import registered
    return tuple(registered())


def parse_policies(text: str, option: str = "--policies") -> list:
    """`kvsched.experiments.scenario.parse_policies`, after `import_policy_modules`."""
    if not text.strip():
        raise ConfigError(f"{option}: expected at least one policy id, got an empty string")
    import_policy_modules(text, option)
    return scenario.parse_policies(text)


def check_predictor(spec: str | None) -> None:
    """--predictor before the workload is drawn (a million requests take seconds to draw)."""
    if spec is not None:
        from ..workload.predictors import parse_predictor
        parse_predictor(spec)


def check_time_limit(option: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{option}: got {value}, expected a positive number of seconds")


def parse_slo(text: str | None):
    """--slo's value → `kvsched.metrics.Slo` (None when not given); ConfigError naming the part."""
    if text is None:
        return None
    from ..metrics import Slo
    try:
        return Slo.parse(text)
    except ValueError as exc:
        raise ConfigError(f"--slo: {exc}") from None


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
    """Run one policy on the setup's stream, with a progress bar if it takes more than a second.
    Token gaps are recorded, so the summary has the per-gap inter-token latencies."""
    import dataclasses
    simulator = dataclasses.replace(setup.simulator, record_token_gaps=True)
    with ProgressReporter(f"{label}", console=console) as reporter:
        return simulator.run(setup.workload, policy, seed=setup.seed, progress=reporter)


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
    try:
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise ConfigError(f"--output: cannot write in {str(folder)!r}: {exc.strerror}") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise ConfigError(f"--output: cannot write {str(path)!r}: {exc.strerror or exc}") from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


#: Columns of a console that is not a terminal: wide enough that rich never folds or cuts a
#: cell ("0.070…"); a table then prints at its own width, which is what a pipe or a file wants.
PIPE_WIDTH = 10_000


def console() -> Console:
    """A rich console for results: the terminal's width, or `PIPE_WIDTH` when stdout is piped."""
    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=PIPE_WIDTH)


def emit(rows: Any, output: Path | None, as_json: bool, render: Callable[[], None]) -> None:
    """Write the JSON file first (atomically), then print JSON or the table."""
    if output is not None:
        write_atomic(output, dumps(rows) + "\n")
    if as_json:
        typer.echo(dumps(rows))
    else:
        render()


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: floats to `digits` significant digits, None/NaN as '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)
