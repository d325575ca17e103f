"""``kvsched engine-run``: serve a workload with a real vLLM engine, summarise, compare with the simulator.

The engine runs in-process (vLLM V1, ``VLLM_ENABLE_V1_MULTIPROCESSING=0``) with token-id prompts,
fixed output lengths (``ignore_eos``) and a KV cache of ``--num-gpu-blocks`` blocks, so memory is
the limit it would be on a loaded GPU. ``--policy vllm-default`` runs vLLM's own scheduler; any
other spec runs that kvsched policy inside vLLM through `kvsched.integrations.vllm.KVSchedScheduler`.
The same workload then runs in the simulator configured as the engine, and the command prints both
summaries (the fields of ``kvsched simulate``) and the decision-by-decision comparison.

Errors, ``--cost`` parsing, JSON output and ``--output`` writing come from `kvsched.cli.common`;
the options are checked before vLLM is imported, so a bad option fails fast (one line, exit 2).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from . import common as cc
from ..errors import ConfigError


def _range(text: str, option: str) -> tuple[int, int]:
    lo, sep, hi = text.partition(":")
    try:
        low, high = (int(lo), int(hi)) if sep else (int(lo), int(lo))
    except ValueError:
        raise ConfigError(f"{option}: expected LOW:HIGH or N (integers), got {text!r}") from None
    if not 1 <= low <= high:
        raise ConfigError(f"{option}: expected 1 <= LOW <= HIGH, got {text!r}")
    return low, high


def _cost(text: str):
    """``--cost`` through `cc.parse_cost`; a preset's KV capacity does not apply (``--num-gpu-blocks``)."""
    spec = cc.parse_cost(text)
    if spec.preset is not None:
        raise ConfigError(f"--cost: expected 'unit' or 'linear:d0=..,d1=..', got {text!r} (engine-run "
                          "takes its KV cache from --num-gpu-blocks, not from a preset)")
    return spec.cost


def build_workload(num_requests: int, rate: float, prompt_tokens: str | None, output_tokens: str | None,
                   seed: int):
    """Uniform lengths when ranges are given, else the embedded LMSYS-like lengths; Poisson arrivals."""
    from ..workload.synthetic import LMSYS_OUTPUT, LMSYS_PROMPT, AllAtZero, Poisson, Uniform, synthesize
    if num_requests < 1:
        raise ConfigError(f"--num-requests: expected at least 1, got {num_requests}")
    if rate < 0 or not math.isfinite(rate):
        raise ConfigError(f"--rate: expected a finite rate >= 0, got {rate}")
    prompt = Uniform(*_range(prompt_tokens, "--prompt-tokens")) if prompt_tokens else LMSYS_PROMPT
    output = Uniform(*_range(output_tokens, "--output-tokens")) if output_tokens else LMSYS_OUTPUT
    arrivals = AllAtZero() if rate == 0 else Poisson(rate)
    return synthesize(num_requests, arrivals, prompt, output, np.random.default_rng(seed), name="engine-run")


def engine_run(
    model: Annotated[Path | None, typer.Option("--model", help="Model directory (Hugging Face layout). "
                                               "With --tiny-model, a tiny random Llama is built there if "
                                               "it is empty (default: a temporary folder).",
                                               file_okay=False)] = None,
    policy: Annotated[str, typer.Option("--policy", help="'vllm-default' (vLLM's own scheduler) or a "
                                        "kvsched policy spec run inside vLLM, e.g. 'vllm', "
                                        "'sarathi:chunk_size=256', 'pkg.mod:Class'.")] = "vllm-default",
    num_requests: Annotated[int, typer.Option("--num-requests", help="Number of requests.")] = 50,
    rate: Annotated[float, typer.Option("--rate", help="Poisson arrivals per clock unit (0: all at 0).")] = 0.0,
    prompt_tokens: Annotated[str | None, typer.Option(
        "--prompt-tokens", help="Prompt lengths uniform on LOW:HIGH (default: LMSYS-like).")] = None,
    output_tokens: Annotated[str | None, typer.Option(
        "--output-tokens", help="Output lengths uniform on LOW:HIGH (default: LMSYS-like).")] = None,
    predictor: Annotated[str | None, typer.Option(
        "--predictor", help="Output-length predictor spec for the policies that use predictions, e.g. "
                            "'exact', 'point:sigma=0.5', 'interval:alpha=0.5'.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the workload and the predictor.")] = 0,
    num_gpu_blocks: Annotated[int, typer.Option(
        "--num-gpu-blocks", help="KV blocks of the engine (one is vLLM's null block).")] = 64,
    block_size: Annotated[int, typer.Option("--block-size", help="KV block size (CPU build: a multiple of 32).")] = 32,
    max_num_batched_tokens: Annotated[int, typer.Option("--max-num-batched-tokens")] = 256,
    max_num_seqs: Annotated[int, typer.Option("--max-num-seqs")] = 64,
    reserve_full_isl: Annotated[bool, typer.Option(
        "--reserve-full-isl/--no-reserve-full-isl",
        help="vLLM's scheduler_reserve_full_isl (admit only if the whole input fits).")] = True,
    clock: Annotated[str, typer.Option("--clock", help="'virtual' (the simulator's clock; decisions "
                                       "comparable step by step) or 'wall' (real seconds).")] = "virtual",
    cost: Annotated[str, typer.Option("--cost", help="Iteration time on the virtual clock and in the "
                                      "simulator: 'unit' or 'linear:d0=..,d1=..'.")] = "unit",
    tiny_model: Annotated[bool, typer.Option("--tiny-model", help="Build a tiny random-weight Llama in "
                                             "--model if it holds none.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the JSON here.",
                                                dir_okay=False)] = None,
) -> None:
    """Serve a workload with a real vLLM engine and compare it with the simulator."""
    if clock not in ("virtual", "wall"):
        raise ConfigError(f"--clock: expected 'virtual' or 'wall', got {clock!r}")
    cost_model = _cost(cost)
    if output is not None:
        folder = output.parent if str(output.parent) else Path(".")
        if not folder.is_dir():
            raise ConfigError(f"--output: folder {str(folder)!r} does not exist")
    if model is None and not tiny_model:
        raise ConfigError("--model: expected a model directory (or --tiny-model to build a tiny one)")
    workload = build_workload(num_requests, rate, prompt_tokens, output_tokens, seed)
    _check_predictions(policy, predictor)
    if predictor:
        from ..workload.predictors import apply_predictor
        workload = apply_predictor(workload, predictor, seed)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")            # keep stdout for the results
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise ConfigError("engine-run needs the vllm extra: pip install 'kvsched[vllm]' "
                          "(CPU: see .ci/vllm.sh)") from None
    from ..integrations.vllm import driver
    from ..integrations.vllm.tiny_model import build_tiny_llama

    with tempfile.TemporaryDirectory(prefix="kvsched-tiny-") as scratch:
        if tiny_model:
            model = Path(build_tiny_llama(model or scratch))
        report = _run_and_compare(model, workload, policy, predictor_spec=predictor, num_gpu_blocks=num_gpu_blocks,
                                  block_size=block_size, max_num_batched_tokens=max_num_batched_tokens,
                                  max_num_seqs=max_num_seqs, reserve_full_isl=reserve_full_isl, clock=clock,
                                  cost_model=cost_model)
    report["clock"] = clock
    report = cc.json_safe(report)
    cc.emit(report, output, json_out, lambda: _render(report))


def _check_predictions(policy: str, predictor: str | None) -> None:
    """A policy that reads predictions needs --predictor: the simulator twin has no fallback."""
    from ..integrations.vllm.driver import DEFAULT_SCHEDULER
    if policy == DEFAULT_SCHEDULER or predictor:
        return
    from ..policies import parse_policy_spec
    from ..policies.registry import resolve
    name, _ = parse_policy_spec(policy)
    if resolve(name).tags.uses_predictions:
        raise ConfigError(f"--predictor: policy {name!r} uses output-length predictions; give one, "
                          "e.g. --predictor exact or --predictor interval:alpha=0.5")


def _run_and_compare(model: Path, workload, policy: str, *, predictor_spec, num_gpu_blocks, block_size,
                     max_num_batched_tokens, max_num_seqs, reserve_full_isl, clock, cost_model) -> dict:
    from ..integrations.vllm import driver
    from ..integrations.vllm.limits import describe, full_input_rule, policy_for_engine
    if not (model / "config.json").exists():
        raise ConfigError(f"--model: {model} holds no config.json (use --tiny-model to build a tiny one)")
    settings = driver.EngineSettings(model=str(model), num_gpu_blocks=num_gpu_blocks, block_size=block_size,
                                     max_num_batched_tokens=max_num_batched_tokens,
                                     max_num_seqs=max_num_seqs, reserve_full_isl=reserve_full_isl)
    spec = None if policy == driver.DEFAULT_SCHEDULER else policy
    if spec is not None:
        from ..policies import make, parse_policy_spec
        name, params = parse_policy_spec(spec)       # fail fast on a bad spec (exit 2)
        make(name, **params)
    twin, _, _ = policy_for_engine(spec or "vllm", settings.limits)
    run = driver.run_engine(workload, settings, spec, clock=clock, cost=cost_model, strict=False)
    sim = driver.simulate_like(workload, settings, spec, cost=cost_model)
    cmp = driver.compare(run.result, sim)
    gaps = [f"step {rec.step}: {g}" for rec in run.trace for g in rec.gaps]
    return {
        "policy": policy, "num_requests": len(workload), "predictor": predictor_spec,
        "engine_limits": dataclasses.asdict(settings.limits),
        "policy_parameters": describe(twin),
        "full_input_rule": full_input_rule(twin) if spec is not None else settings.reserve_full_isl,
        "kv_capacity_tokens": settings.kv_capacity_tokens, "block_size": block_size,
        "engine_startup_time": run.startup_time, "engine_wall_time": run.wall_time,
        "engine": run.result.summary().as_dict(),
        "simulator": sim.summary().as_dict(),
        "comparison": {"matches": cmp.matches, "engine_iterations": cmp.num_engine_iterations,
                       "simulator_iterations": cmp.num_sim_iterations,
                       "batch_mismatches": cmp.num_batch_mismatches,
                       "preemption_mismatches": cmp.num_preemption_mismatches,
                       "kv_mismatches": cmp.num_kv_mismatches, "first_divergence": cmp.first_divergence,
                       "admission_order_equal": cmp.admission_order_equal,
                       "evictions_equal": cmp.evictions_equal, "rejections_equal": cmp.rejections_equal,
                       "differences": cmp.differences},
        "gaps": gaps[:50], "num_gaps": len(gaps),
    }


def _render(report: dict) -> None:
    from rich.table import Table
    console = cc.console()
    console.print(f"{report['num_requests']} requests, policy {report['policy']}, {report['clock']} clock, "
                  f"KV {report['kv_capacity_tokens']} tokens in blocks of {report['block_size']}; engine "
                  f"start {report['engine_startup_time']:.1f} s, run {report['engine_wall_time']:.1f} s")
    table = Table()
    table.add_column("metric")
    table.add_column("vLLM engine", justify="right")
    table.add_column("simulator", justify="right")
    for key, value in report["engine"].items():
        if key != "policy":
            table.add_row(key, cc.fmt(value, 6), cc.fmt(report["simulator"][key], 6))
    limits = ", ".join(f"{k}={v}" for k, v in report["engine_limits"].items())
    params = ", ".join(f"{k}={v}" for k, v in report["policy_parameters"].items())
    console.print(f"engine limits (vLLM and the simulator): {limits}; the full-input rule "
                  f"(scheduler_reserve_full_isl) {'applies' if report['full_input_rule'] else 'is off'} "
                  f"under this policy", soft_wrap=True)
    console.print(f"policy parameters (both sides): {params or '(none)'}", soft_wrap=True)
    console.print(table)
    c = report["comparison"]
    verdict = "same decisions" if c["matches"] else f"decisions differ from iteration {c['first_divergence']}"
    console.print(f"comparison: {verdict}; iterations {c['engine_iterations']} (engine) vs "
                  f"{c['simulator_iterations']} (simulator); batch mismatches {c['batch_mismatches']}, "
                  f"preemption mismatches {c['preemption_mismatches']}, KV mismatches {c['kv_mismatches']}, "
                  f"admission order {'equal' if c['admission_order_equal'] else 'differs'}, "
                  f"evictions per request {'equal' if c['evictions_equal'] else 'differ'}, "
                  f"rejections {'equal' if c['rejections_equal'] else 'differ'}")
    for line in c["differences"]:
        console.print(f"  {line}", soft_wrap=True)
    if report["num_gaps"]:
        console.print(f"{report['num_gaps']} decisions vLLM could not carry out (gaps), e.g.:")
        for line in report["gaps"][:5]:
            console.print(f"  {line}", soft_wrap=True)


def register(app: typer.Typer, bound_app: typer.Typer | None = None) -> None:
    """Add ``engine-run`` to the main app (``bound_app`` is unused)."""
    app.command("engine-run")(cc.user_errors(engine_run))
