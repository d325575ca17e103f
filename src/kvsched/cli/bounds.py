"""`kvsched bound <method>`: the hindsight optimum of a workload (kvsched.bounds).

One command per method of `kvsched.bounds.BOUND_METHODS` (``ip``, ``ip-strong``, ``exact``,
``bruteforce``, ``heuristic``), each with the same options:

    kvsched bound ip [--workload default|paper-zero|paper-poisson] [--trace FILE] [--num-requests N]
                     [--rate R] [--kv-capacity M] [--kv-convention emitted|computed] [--seed S]
                     [--time-limit S] [--json]

The bound is for the unit-time round model with block size 1 (bounds are not defined for other
cost models). ``paper-*`` draws one instance of the MC-SF paper's synthetic experiment (M is drawn
too unless --kv-capacity is given). These options mirror ``kvsched.cli.common``'s names; once that
module is merged the lead may switch to its shared options.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import common as cc
from ..errors import ConfigError, UserError

WORKLOADS = ("default", "paper-zero", "paper-poisson")


def _workload(workload: str, trace: Path | None, num_requests: int | None, rate: float | None,
              kv_capacity: int | None, seed: int):
    import numpy as np
    if num_requests is not None and num_requests < 1:
        raise ConfigError(f"--num-requests: got {num_requests}, expected at least 1")
    if rate is not None and not (math.isfinite(rate) and rate >= 0):
        raise ConfigError(f"--rate: got {rate}, expected a finite number >= 0")
    if trace is not None:
        from ..workload.traces import load_trace
        w = load_trace(trace, rate=rate or None, seed=seed, num_requests=num_requests)
        return (w.with_arrivals(np.zeros(len(w))) if rate == 0 else w), kv_capacity
    if workload.startswith("paper-"):
        from ..experiments.mcsf_synthetic import paper_instance
        rng = np.random.default_rng(seed)
        w, M = paper_instance(rng, workload.removeprefix("paper-"), num_requests, kv_capacity)
        return w, M
    if workload != "default":
        raise ConfigError(f"--workload: unknown workload {workload!r}; expected one of: {', '.join(WORKLOADS)}")
    from ..workload.synthetic import default_workload
    return default_workload(num_requests or 50, rate=None if rate == 0 else (rate or 4.0), seed=seed), kv_capacity


def run_bound(method: str, *, workload: str = "paper-zero", trace: Path | None = None,
              num_requests: int | None = None, rate: float | None = None,
              kv_capacity: int | None = None, kv_convention: str = "emitted", seed: int = 0,
              time_limit: float = 60.0):
    from ..bounds import compute_bound
    from ..cost.models import UnitTime
    from ..engine.simulator import Simulator
    from ..engine.rules import KVConvention
    cc.check_time_limit("--time-limit", time_limit)
    w, M = _workload(workload, trace, num_requests, rate, kv_capacity, seed)
    if M is None:
        raise ConfigError("--kv-capacity: required for this workload (KV capacity in tokens)")
    try:
        convention = KVConvention(kv_convention)
    except ValueError:
        raise ConfigError(f"--kv-convention: got {kv_convention!r}, expected 'emitted' or 'computed'") from None
    sim = Simulator(UnitTime(), int(M), kv_convention=convention)
    try:
        return compute_bound(method, w, sim, time_limit), M
    except ValueError as exc:   # a method's own limit (brute force: n <= 6), raised before solving
        raise ConfigError(f"bound {method}: {exc}") from None


def _print(result, M: int, as_json: bool) -> None:
    if as_json:
        data = result.as_dict()
        data["kv_capacity_tokens"] = M
        sys.stdout.write(json.dumps(data) + "\n")
        return
    if result.status == "infeasible":
        typer.echo(f"infeasible: {result.message}", err=True)
        return
    console = cc.console()
    console.print(f"method {result.method}, {result.num_requests} requests, KV {M} tokens")
    console.print(f"objective (total latency) {result.objective:g}")
    console.print(f"lower bound               {result.bound:g}")
    console.print(f"gap                       {100 * result.gap:.2f}%")
    console.print(f"status                    {result.status} ({result.solve_time:.2f} s)")
    if result.message:
        console.print(f"note: {result.message}")


def _make_command(method: str):
    def command(
        workload: Annotated[str, typer.Option("--workload", help="default | paper-zero | paper-poisson (the "
                                              "MC-SF paper's synthetic instances).")] = "paper-zero",
        trace: Annotated[Path | None, typer.Option("--trace", help="Trace file (rounds as time unit).",
                                                   dir_okay=False)] = None,
        num_requests: Annotated[int | None, typer.Option("--num-requests", min=1, max=cc.MAX_NUM_REQUESTS,
                                                         help="Number of requests.")] = None,
        rate: Annotated[float | None, typer.Option("--rate", help="Poisson arrivals per round (0: all at 0); "
                                                   "default workload only.")] = None,
        kv_capacity: Annotated[int | None, typer.Option("--kv-capacity", min=1, max=cc.MAX_TOKENS,
                                                        help="KV capacity M in tokens.")] = None,
        kv_convention: Annotated[str, typer.Option("--kv-convention", help="emitted (s+j) or computed "
                                                   "(s+j-1).")] = "emitted",
        seed: Annotated[int, typer.Option("--seed", min=0, max=cc.MAX_SEED, help="Workload seed.")] = 0,
        time_limit: Annotated[float, typer.Option("--time-limit", help="Solver seconds.")] = 60.0,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        try:
            result, M = run_bound(method, workload=workload, trace=trace, num_requests=num_requests,
                                  rate=rate, kv_capacity=kv_capacity, kv_convention=kv_convention,
                                  seed=seed, time_limit=time_limit)
        except UserError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        _print(result, M, as_json)
        if result.status == "infeasible":
            raise typer.Exit(2)
    command.__doc__ = f"Hindsight optimum by method '{method}': objective, lower bound, gap."
    return command


def register(app: typer.Typer, bound_app: typer.Typer) -> None:
    from ..bounds import BOUND_METHODS
    for method in BOUND_METHODS:
        bound_app.command(method)(_make_command(method))
    _register_stability(bound_app)


# --------------------------------------------------------------------------- bound stability

STABILITY_WORKLOADS = ("default",)


def _stability_lengths(workload: str, trace: Path | None, num_requests: int, seed: int):
    """(prompts, outputs) of the length sample the threshold is computed on."""
    if num_requests < 1:
        raise ConfigError(f"--num-requests: got {num_requests}, expected at least 1")
    if trace is not None:
        from ..workload.traces import load_trace
        w = load_trace(trace, num_requests=num_requests)
    elif workload == "default":
        from ..workload.synthetic import default_workload
        w = default_workload(num_requests, rate=None, seed=seed)
    else:
        raise ConfigError(f"--workload: unknown workload {workload!r}; expected one of: "
                          f"{', '.join(STABILITY_WORKLOADS)} (or --trace FILE)")
    return w.num_prompt_tokens, w.true_output_tokens


def run_stability(*, workload: str = "default", trace: Path | None = None, num_requests: int = 5000,
                  kv_capacity: int | None = None, d0: float = 0.00939, d1: float = 2.68e-6,
                  cost: str | None = None, batch_time: float | None = None,
                  convention: str = "computed", seed: int = 0) -> dict:
    """The Nie–Si–Zhou threshold μ and, for a linear cost, the fluid limit beside it. Defaults
    are `kvsched capacity`'s (Llama-2-7B/A100 linear fit, M = 137,000 tokens)."""
    from ..bounds.fluid import per_request_bound
    from ..bounds.stability import stability_bound
    from ..cost.models import LinearCost
    from ..experiments.scenario import parse_cost
    if cost is not None:
        spec = parse_cost(cost)
        model = spec.cost
        kv_capacity = spec.kv_capacity_tokens if kv_capacity is None else kv_capacity
    else:
        try:
            model = LinearCost(d0, d1)
        except ValueError as exc:
            raise ConfigError(f"--d0/--d1: {exc}") from None
    kv_capacity = 137_000 if kv_capacity is None else kv_capacity
    prompts, outputs = _stability_lengths(workload, trace, num_requests, seed)
    result = stability_bound(prompts, outputs, kv_capacity, cost=model, batch_time=batch_time,
                             convention=convention).as_dict()
    if isinstance(model, LinearCost):
        x1 = per_request_bound(prompts, outputs, 1.0, LinearCost(max(model.d0, 1e-12), 0.0)).kv_token_rate
        compute = float("inf") if model.d1 == 0 else 1 / (model.d1 * x1)
        memory = kv_capacity / ((model.d0 + model.d1 * kv_capacity) * x1)
        result.update(fluid_limit=min(compute, memory), fluid_memory_limit=memory, fluid_compute_limit=compute)
    return result


def _register_stability(bound_app: typer.Typer) -> None:
    from . import common as cc

    @bound_app.command("stability")
    @cc.user_errors
    def stability(
        workload: Annotated[str, typer.Option("--workload", help="default (the embedded LMSYS-like "
                                              "lengths)")] = "default",
        trace: Annotated[Path | None, typer.Option("--trace", help="Trace file: its lengths.",
                                                   dir_okay=False)] = None,
        num_requests: Annotated[int, typer.Option("--num-requests", help="Length sample size "
                                                  "(first N rows of a trace).")] = 5000,
        kv_capacity: Annotated[int | None, typer.Option("--kv-capacity", help="KV capacity M in tokens "
                                                        "(default 137,000, or the preset's).")] = None,
        d0: Annotated[float, typer.Option("--d0", help="LinearCost d0 (s per iteration).")] = 0.00939,
        d1: Annotated[float, typer.Option("--d1", help="LinearCost d1 (s per KV token).")] = 2.68e-6,
        cost: Annotated[str | None, typer.Option("--cost", help="Instead of --d0/--d1: 'linear:d0=..,d1=..' "
                                                 "or 'preset:NAME'.")] = None,
        batch_time: Annotated[float | None, typer.Option("--batch-time", help="b̄ in seconds (default: the "
                                                         "cost of the saturated batch).")] = None,
        convention: Annotated[str, typer.Option("--kv-convention", help="g(s,o): computed "
                                                "(o·s+o(o-1)/2), emitted (o·s+o(o+1)/2) or paper "
                                                "(o·s+o²/2).")] = "computed",
        seed: Annotated[int, typer.Option("--seed", help="Seed of the default workload's sample.")] = 0,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Stability threshold μ = M / (b̄·E[g(s,o)]) (Nie, Si, Zhou, arXiv 2605.04595)."""
        from .fluid import _print_table
        data = run_stability(workload=workload, trace=trace, num_requests=num_requests,
                             kv_capacity=kv_capacity, d0=d0, d1=d1, cost=cost, batch_time=batch_time,
                             convention=convention, seed=seed)
        if as_json:
            typer.echo(cc.dumps(data))
            return
        _print_table("stability threshold (Nie, Si, Zhou)", data)
