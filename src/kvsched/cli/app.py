"""The ``kvsched`` command line (also ``python -m kvsched``): thin — parse, build specs, call the library.

Commands here: ``simulate``, ``compare``, ``policies``, ``check-policy`` and the ``bound`` group.
The other command groups live in their own modules of `kvsched.cli` (bounds, fluid, presets,
engine, sweep, reproduce), each exposing ``register(app, bound_app)``, called at the end of this
module; shared options live in `kvsched.cli.common`.

A user's mistake (`kvsched.errors.UserError`) prints one line ``error: ...`` on stderr and exits
with code 2, with no traceback and no partial output file.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from . import bounds, engine, fluid, iteration_time, presets, reproduce, sweep
from . import common as cc
from ..errors import ConfigError, UserError

app = typer.Typer(name="kvsched", no_args_is_help=True, cls=cc.OneLineErrors, add_completion=False,
                  help="Simulate, compare and bound KV-cache-aware LLM inference schedulers.")
bound_app = typer.Typer(no_args_is_help=True, help="Bounds on the optimal schedule (hindsight programs, fluid).")
app.add_typer(bound_app, name="bound")

#: Columns of the comparison table: (RunSummary field, header).
TABLE_COLUMNS = (("mean_latency", "mean lat (s)"), ("p50_latency", "p50 lat"), ("p99_latency", "p99 lat"),
                 ("p99_ttft", "p99 TTFT"), ("p99_tpot", "p99 TPOT"), ("p99_token_gap", "p99 gap"),
                 ("total_latency", "total lat"),
                 ("throughput_tokens_per_s", "tok/s"), ("num_evictions", "evictions"),
                 ("num_rejected", "rejected"), ("peak_kv_utilization", "peak KV"))


def _allow_local_imports() -> None:
    """Let 'module:Class' specs name modules in the current folder (as `python -m` would)."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def _warn_rejections(setup: cc.Setup) -> None:
    if setup.num_too_large:
        typer.echo(f"warning: {setup.num_too_large} of {len(setup.workload)} requests need more KV than "
                   f"--kv-capacity ({setup.simulator.kv_capacity_tokens} tokens) and are rejected", err=True)


def _row(label: str, result, slo=None) -> dict[str, Any]:
    from ..metrics import summarize
    row = summarize(result, slo).as_dict()
    row["policy"] = label
    return row


def _run_all(setup: cc.Setup, policies: list[tuple[str, Any]], slo=None) -> list[dict[str, Any]]:
    rows = []
    for label, policy in policies:
        rows.append(_row(label, cc.run_policy(setup, policy, label), slo))
    return rows


# --------------------------------------------------------------------------- simulate

@app.command()
@cc.user_errors
def simulate(
    policy: Annotated[str, typer.Option("--policy", help="Policy id with optional parameters, e.g. "
                                        "'vllm:watermark=0.01' or 'package.module:Class'.")] = "vllm",
    workload: cc.WorkloadOpt = "default", trace: cc.TraceOpt = None, rate: cc.RateOpt = None,
    num_requests: cc.NumRequestsOpt = None, kv_capacity: cc.KvCapacityOpt = None,
    block_size: cc.BlockSizeOpt = None, kv_convention: cc.KvConventionOpt = "computed",
    eviction: cc.EvictionOpt = "recompute", prefix_caching: cc.PrefixCachingOpt = False,
    shared_prefix_tokens: cc.SharedPrefixTokensOpt = None,
    shared_prefix_fraction: cc.SharedPrefixFractionOpt = None, think_time: cc.ThinkTimeOpt = None,
    cost: cc.CostOpt = cc.DEFAULT_COST, predictor: cc.PredictorOpt = None, seed: cc.SeedOpt = 0,
    slo: cc.SloOpt = None, json_out: cc.JsonOpt = False, output: cc.OutputOpt = None,
) -> None:
    """Run one policy on a workload and print its summary."""
    _allow_local_imports()
    targets = cc.parse_slo(slo)
    cc.check_output(output, trace)
    cc.check_predictor(predictor)
    policies = cc.parse_policies(policy, "--policy")
    if len(policies) != 1:
        raise ConfigError(f"--policy: expected one policy, got {len(policies)} (use 'kvsched compare')")
    setup = cc.build_setup(workload=workload, trace=trace, rate=rate, num_requests=num_requests,
                           kv_capacity=kv_capacity, block_size=block_size, kv_convention=kv_convention,
                           cost=cost, predictor=predictor, seed=seed, eviction=eviction,
                           prefix_caching=prefix_caching, shared_prefix_tokens=shared_prefix_tokens,
                           shared_prefix_fraction=shared_prefix_fraction, think_time=think_time)
    _warn_rejections(setup)
    row = _run_all(setup, policies, targets)[0]

    def render() -> None:
        table = Table()
        table.add_column("metric")
        table.add_column(row["policy"], justify="right")
        for key, value in row.items():
            if key != "policy":
                table.add_row(key, cc.fmt(value, 6))
        console = cc.console()
        console.print(setup.describe(), soft_wrap=True)
        console.print(table)

    cc.emit(row, output, json_out, render)


# --------------------------------------------------------------------------- compare

def _bound_columns(rows: list[dict[str, Any]], name: str, setup: cc.Setup, time_limit: float) -> None:
    from ..bounds import compute_bound
    try:
        result = compute_bound(name, setup.workload, setup.simulator, time_limit)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"--bound {name}: {exc}") from None
    value = float("nan") if result.bound is None else float(result.bound)
    for row in rows:
        row.update(bound=name, bound_value=value, bound_status=str(result.status),
                   bound_gap=result.gap,
                   bound_ratio=row["total_latency"] / value if value > 0 else float("nan"))


def _check_bound_name(name: str | None) -> None:
    """--bound before any policy runs (the bound comes last, after minutes of simulation)."""
    from ..bounds import BOUND_METHODS
    if name is not None and name not in BOUND_METHODS:
        raise ConfigError(f"--bound: unknown bound {name!r}; expected one of: {', '.join(BOUND_METHODS)}")


@app.command()
@cc.user_errors
def compare(
    policies: Annotated[str, typer.Option("--policies", help="Comma-separated policies with optional "
                                          "parameters: 'vllm:watermark=0.01,sarathi:chunk_size=256'.")]
    = "vllm,sarathi",
    workload: cc.WorkloadOpt = "default", trace: cc.TraceOpt = None, rate: cc.RateOpt = None,
    num_requests: cc.NumRequestsOpt = None, kv_capacity: cc.KvCapacityOpt = None,
    block_size: cc.BlockSizeOpt = None, kv_convention: cc.KvConventionOpt = "computed",
    eviction: cc.EvictionOpt = "recompute", prefix_caching: cc.PrefixCachingOpt = False,
    shared_prefix_tokens: cc.SharedPrefixTokensOpt = None,
    shared_prefix_fraction: cc.SharedPrefixFractionOpt = None, think_time: cc.ThinkTimeOpt = None,
    cost: cc.CostOpt = cc.DEFAULT_COST, predictor: cc.PredictorOpt = None, seed: cc.SeedOpt = 0,
    bound: Annotated[str | None, typer.Option("--bound", help="Add each policy's total latency / this "
                                              "lower bound on the optimum (kvsched.bounds).")] = None,
    bound_time_limit: Annotated[float, typer.Option("--bound-time-limit",
                                                    help="Seconds for the bound's solver.")] = 60.0,
    slo: cc.SloOpt = None, json_out: cc.JsonOpt = False, output: cc.OutputOpt = None,
) -> None:
    """Run several policies on the identical request stream (and identical predictions)."""
    _allow_local_imports()
    targets = cc.parse_slo(slo)
    cc.check_output(output, trace)
    cc.check_time_limit("--bound-time-limit", bound_time_limit)
    _check_bound_name(bound)
    cc.check_predictor(predictor)
    chosen = cc.parse_policies(policies)
    setup = cc.build_setup(workload=workload, trace=trace, rate=rate, num_requests=num_requests,
                           kv_capacity=kv_capacity, block_size=block_size, kv_convention=kv_convention,
                           cost=cost, predictor=predictor, seed=seed, eviction=eviction,
                           prefix_caching=prefix_caching, shared_prefix_tokens=shared_prefix_tokens,
                           shared_prefix_fraction=shared_prefix_fraction, think_time=think_time)
    _warn_rejections(setup)
    rows = _run_all(setup, chosen, targets)
    if bound is not None:
        _bound_columns(rows, bound, setup, bound_time_limit)

    caching = setup.simulator.prefix_caching     # the hit rate is a column only when caching is on

    def render() -> None:
        table = Table(title=setup.describe(), title_justify="left")
        table.add_column("policy")
        for _, header in TABLE_COLUMNS:
            table.add_column(header, justify="right")
        if bound is not None:
            table.add_column(f"total / {bound}", justify="right")
        if targets is not None:
            table.add_column("SLO met", justify="right")
            table.add_column("goodput req/s", justify="right")
        if caching:
            table.add_column("hit rate", justify="right")
        for row in rows:
            cells = [row["policy"]] + [cc.fmt(row[key]) for key, _ in TABLE_COLUMNS]
            if bound is not None:
                cells.append(cc.fmt(row["bound_ratio"]))
            if targets is not None:
                cells += [cc.fmt(row["slo_attainment"]), cc.fmt(row["goodput_requests_per_s"])]
            if caching:
                cells.append(cc.fmt(row["prefix_hit_rate"]))
            table.add_row(*cells)
        cc.console().print(table)

    cc.emit(rows, output, json_out, render)


# --------------------------------------------------------------------------- policies

def _describe_policies() -> list[dict[str, Any]]:
    import dataclasses

    from ..policies import parameters, registered
    out = []
    for name, cls in registered().items():
        params = {}
        for f in parameters(cls):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            params[f.name] = default
        out.append({"id": name, "parameters": params, "description": cls.description,
                    "tags": {k: v for k, v in dataclasses.asdict(cls.tags).items() if v}})
    return out


@app.command("policies")
@cc.user_errors
def policies_command(json_out: cc.JsonOpt = False) -> None:
    """List the registered policies, their parameters (with defaults) and what they do."""
    described = _describe_policies()
    if json_out:
        typer.echo(cc.dumps(described))
        return
    table = Table(show_lines=True)
    table.add_column("id", style="bold")
    table.add_column("parameters (defaults)")
    table.add_column("description")
    for entry in described:
        params = "\n".join(f"{k}={v!r}" for k, v in entry["parameters"].items()) or "-"
        table.add_row(entry["id"], params, entry["description"])
    cc.console().print(table)


# --------------------------------------------------------------------------- check-policy

@app.command("check-policy")
def check_policy_command(
    spec: Annotated[str, typer.Argument(help="A policy: 'package.module:Class[:param=value,...]' or a "
                                        "registered id.")],
    json_out: cc.JsonOpt = False,
) -> None:
    """Run the conformance suite on a policy (exit 1 if a check fails, 2 if it cannot be built)."""
    from ..policies import make
    from ..policies.registry import parse_policy_spec
    _allow_local_imports()
    try:
        cc.import_policy_modules(spec, "check-policy")
        name, params = parse_policy_spec(spec)
        policy = make(name, **params)
        from ..testing import check_policy
    except UserError as exc:
        cc.fail(str(exc))
    results = list(check_policy(policy))
    failed = [r for r in results if not r.passed]
    if json_out:
        typer.echo(cc.dumps([{"name": r.name, "passed": bool(r.passed), "detail": r.detail} for r in results]))
    else:
        table = Table(title=f"check_policy({spec}): {len(results) - len(failed)}/{len(results)} passed",
                      title_justify="left")
        table.add_column("check")
        table.add_column("result")
        table.add_column("detail")
        for r in results:
            table.add_row(r.name, "[green]pass[/]" if r.passed else "[red]FAIL[/]", r.detail or "")
        cc.console().print(table)
    if failed:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- command groups

for _module in (bounds, fluid, presets, engine, sweep, reproduce, iteration_time):
    _module.register(app, bound_app)


def main() -> None:
    """Entry point of the ``kvsched`` script."""
    try:
        app()
    except UserError as exc:   # commands catch these themselves; this is a safety net
        typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
        raise SystemExit(2) from None
