"""`kvsched reproduce <target>`: the papers' experiments.

Targets live in ``TARGETS`` (name → "module:function"); each function is a typer command with its
own options. Add a target by adding an entry (the module is imported only when registered).
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Annotated

import typer

from . import common as cc
from ..errors import ConfigError, UserError

TARGETS: dict[str, str] = {
    "mcsf-synthetic": "kvsched.cli.reproduce:mcsf_synthetic",
    "mcsf-real-trace": "kvsched.cli.sweep:reproduce_mcsf_real_trace",
    "amin-intervals": "kvsched.cli.sweep:reproduce_amin_intervals",
    "past-future": "kvsched.cli.reproduce:past_future",
    "wait-limits": "kvsched.cli.reproduce:wait_limits",
    "fluid-example": "kvsched.cli.reproduce:fluid_example",
}


def mcsf_synthetic(
    trials: Annotated[int, typer.Option("--trials", min=1, max=10 ** 6, help="Instances per arrival model.")] = 200,
    seed: Annotated[int, typer.Option("--seed", min=0, max=cc.MAX_SEED, help="Seed of the instance generator.")] = 0,
    method: Annotated[str, typer.Option("--bound", help="Bound method (kvsched.bounds).")] = "exact",
    time_limit: Annotated[float, typer.Option("--time-limit", help="Solver seconds per instance.")] = 60.0,
    policies: Annotated[str, typer.Option("--policies", help="Comma-separated policy ids.")] =
        "mcsf,hsf,mc-benchmark,amin,vllm,sarathi",
    arrivals: Annotated[str, typer.Option("--arrivals", help="zero, poisson or both.")] = "both",
    small_n_trials: Annotated[int, typer.Option(
        "--small-n-trials", min=0, max=10 ** 4,
        help="Instances per n in the certified table (n = 4..12, at most --trials; 0: no table).")] = 10,
    small_n_time_limit: Annotated[float, typer.Option(
        "--small-n-time-limit", help="Solver seconds per certified instance (unproven ones are counted, not used).")] = 300.0,
    small_n_bound: Annotated[str, typer.Option(
        "--small-n-bound", help="Bound method that certifies the small-n optima (ip-strong: HiGHS's MIP alone).")] = "exact",
    protocol_trials: Annotated[int, typer.Option(
        "--protocol-trials", min=0, max=10 ** 4,
        help="Instances of the paper-protocol row (plain IP from MC-SF, --time-limit each; at most --trials).")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """MC-SF paper, synthetic experiment (R1): policy / optimum, beside the paper's figures, with a
    certified small-n table and the paper-protocol row (arrivals at 0)."""
    from rich.console import Console
    from rich.progress import Progress

    from ..experiments.mcsf_synthetic import ARRIVAL_MODELS, render, reproduce
    err = Console(stderr=True)
    try:
        if trials < 1:
            raise ConfigError(f"--trials: got {trials}, expected at least 1")
        models = ARRIVAL_MODELS if arrivals == "both" else (arrivals,)
        if any(m not in ARRIVAL_MODELS for m in models):
            raise ConfigError(f"--arrivals: got {arrivals!r}, expected zero, poisson or both")
        names = _policy_names(policies)
        _check_bound(method)
        cc.check_time_limit("--time-limit", time_limit)
        cc.check_time_limit("--small-n-time-limit", small_n_time_limit)
        _check_bound(small_n_bound, "--small-n-bound")
        with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
            tasks = {m: bar.add_task(f"{m} instances", total=trials) for m in models}
            report = reproduce(trials=trials, seed=seed, method=method, time_limit=time_limit,
                               policies=names, arrival_models=models,
                               progress=lambda m, k, n: bar.update(tasks[m], completed=k),
                               note=lambda text: err.print(text), small_n_trials=small_n_trials,
                               small_n_time_limit=small_n_time_limit, small_n_method=small_n_bound,
                               protocol_trials=protocol_trials)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _print(report, render, as_json)


def past_future(
    num_requests: Annotated[int, typer.Option("--num-requests", min=1, max=10 ** 6,
                                              help="Requests per distribution (the artifact: 3000).")] = 3000,
    seed: Annotated[int, typer.Option("--seed", min=0, max=cc.MAX_SEED, help="Seed of the lengths.")] = 0,
    cost: Annotated[str, typer.Option("--cost", help="'unit' (the artifact's steps) or e.g. "
                                      "'preset:llama3-8b-a100' (recomputation costs time).")] = "unit",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """LightLLM's Past-Future admission in its artifact's setting, beside the artifact's figures."""
    from rich.console import Console
    from rich.progress import Progress

    from ..experiments.past_future import render, reproduce
    from ..experiments.scenario import parse_cost
    err = Console(stderr=True)
    try:
        parse_cost(cost)
        with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
            task = bar.add_task("runs", total=None)
            report = reproduce(num_requests=num_requests, seed=seed, cost=cost,
                               progress=lambda k, n: bar.update(task, completed=k, total=n))
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _print(report, render, as_json)


def wait_limits(
    models: Annotated[str, typer.Option("--models", help="Comma-separated: llama2-7b (the paper's text), "
                                        "llama3-8b (the authors' scripts).")] = "llama2-7b,llama3-8b",
    policies: Annotated[str, typer.Option("--policies", help="Comma-separated: vllm, sarathi, wait.")] =
        "vllm,sarathi,wait",
    num_requests: Annotated[int, typer.Option("--num-requests", min=100, max=10 ** 6,
                                              help="n of the n vs 2n stability test.")] = 3000,
    num_seeds: Annotated[int, typer.Option("--num-seeds", min=1, max=100, help="Seeds averaged per rate.")] = 3,
    precision: Annotated[float, typer.Option("--precision",     # checked below: nan gets the same message
                                             help="Relative width of the final bracket, 0.001-0.5.")] = 0.02,
    latency_requests: Annotated[int, typer.Option("--latency-requests", min=100, max=10 ** 6,
                                                  help="Requests per run of the paper-protocol latency table "
                                                       "(the paper's 5,000).")] = 5000,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """WAIT paper (R5): stability limits of vllm, sarathi and wait in the authors' Vidur settings."""
    from rich.console import Console
    from rich.progress import Progress

    from ..experiments import wait_limits as wl
    err = Console(stderr=True)
    try:
        if not 0.001 <= precision <= 0.5:          # False for nan too
            raise UserError(f"--precision: got {precision}, expected a relative width in [0.001, 0.5]")
        chosen_models = _choices("--models", models, wl.MODELS)
        chosen_policies = _choices("--policies", policies, wl.POLICIES)
        with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
            task = bar.add_task("limits", total=len(chosen_models) * len(chosen_policies))
            report = wl.reproduce(models=chosen_models, policies=chosen_policies, num_requests=num_requests,
                                  num_seeds=num_seeds, precision=precision, latency_requests=latency_requests,
                                  progress=lambda m, p: bar.advance(task))
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _print(report, wl.render, as_json)


def fluid_example(
    num_requests: Annotated[int, typer.Option("--num-requests", min=100, max=10 ** 6,
                                              help="Requests of the Poisson stream.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", min=0, max=cc.MAX_SEED, help="Seed of the stream.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """WAIT paper (R4): the fluid benchmark's worked example, FCFS's throughput loss beside the paper's."""
    from ..experiments import fluid_example as fe
    _print(fe.reproduce(num_requests=num_requests, seed=seed), fe.render, as_json)


def _choices(option: str, text: str, allowed) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    bad = [n for n in names if n not in allowed]
    if not names or bad:
        raise ConfigError(f"{option}: got {text!r}, expected a comma-separated list of: {', '.join(allowed)}")
    return names


def _print(report: dict, render, as_json: bool) -> None:
    """A reproduction's report: one JSON document, or its tables."""
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        render(report, cc.console())


def _policy_names(text: str) -> list[str]:
    """--policies: registered ids only (this target builds each with its defaults)."""
    from ..policies import registered
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise ConfigError(f"--policies: got {text!r}, expected a comma-separated list of policy ids")
    unknown = [n for n in names if n not in registered()]
    if unknown:
        raise ConfigError(f"--policies: unknown policy {unknown[0]!r}; expected ids from: "
                          f"{', '.join(registered())}")
    return names


def _check_bound(method: str, option: str = "--bound") -> None:
    from ..bounds import BOUND_METHODS
    if method not in BOUND_METHODS:
        raise ConfigError(f"{option}: unknown bound {method!r}; expected one of: {', '.join(BOUND_METHODS)}")


def register(app: typer.Typer, bound_app: typer.Typer | None = None) -> None:
    reproduce_app = typer.Typer(no_args_is_help=True, help="Reproduce the papers' experiments.")
    for name, target in TARGETS.items():
        module_name, _, attr = target.partition(":")
        reproduce_app.command(name)(getattr(importlib.import_module(module_name), attr))
    app.add_typer(reproduce_app, name="reproduce")
