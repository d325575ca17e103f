"""CLI commands of the fluid area: ``kvsched bound fluid`` and ``kvsched capacity``.

`register(app, bound_app)` adds them to the main typer app and its ``bound`` sub-app. Errors (one
line ``error: ...``, exit 2), JSON and table cells come from `kvsched.cli.common`. The workload
options are these commands' own (the fluid model needs typed workloads): ``--types`` (a type mix
such as ``p512d20@0.7+p512d50@0.3``; with ``--rate`` the weights are proportions of it) or, without
it, the embedded LMSYS-like workload (binned into ``--bins`` types for the fluid bound); the cost
is ``--d0``/``--d1`` (`LinearCost`).
The default cost is our rough Llama-2-7B/A100 fit (bench/capacity_limits.py), C = 137,000 tokens.
"""

from __future__ import annotations

import math
import sys
from typing import Optional

import numpy as np
import typer

from . import common as cc
from ..errors import ConfigError

DEFAULT_D0 = 0.00939         # seconds per iteration (bench/capacity_limits.py)
DEFAULT_D1 = 2.68e-6         # seconds per KV token in the batch
DEFAULT_KV_CAPACITY = 137_000


def _lengths_sample(num: int = 5000):
    from ..workload.synthetic import default_workload
    w = default_workload(num, rate=None, seed=0)
    return w.num_prompt_tokens, w.true_output_tokens


def register(app: typer.Typer, bound_app: typer.Typer) -> None:
    """Add ``bound fluid`` to `bound_app` and ``capacity`` to `app`."""

    @bound_app.command("fluid")
    @cc.user_errors
    def bound_fluid(
        types: Optional[str] = typer.Option(None, "--types", help="type mix, e.g. p512d20@0.7+p512d50@0.3"),
        rate: Optional[float] = typer.Option(None, "--rate", help="total rate (req/s); weights become shares"),
        bins: Optional[int] = typer.Option(None, "--bins", help="bin the embedded LMSYS-like lengths into types"),
        d0: float = typer.Option(DEFAULT_D0, "--d0", help="LinearCost d0 (s per iteration)"),
        d1: float = typer.Option(DEFAULT_D1, "--d1", help="LinearCost d1 (s per KV token)"),
        kv_capacity: Optional[int] = typer.Option(None, "--kv-capacity", help="also report the limit under C"),
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
    ) -> None:
        """The fluid benchmark: X, stability, M*, τ*, n_j*, throughput* (Ao et al. 2025)."""
        from ..bounds.fluid import fluid_bound, max_stable_rate
        from ..workload.typed import bin_lengths, parse_mix
        cost = _cost(d0, d1)
        if types is not None:
            mix = parse_mix(types, rate)
        elif bins is not None and rate is not None:
            prompts, outputs = _lengths_sample()
            mix = bin_lengths(prompts, outputs, num_bins=bins, total_rate=rate).mix
        else:
            raise ConfigError("bound fluid: give --types, or --bins with --rate")
        data = fluid_bound(mix, cost).as_dict()
        data["types"] = [{"num_prompt_tokens": t.num_prompt_tokens, "num_decode_stages": t.num_decode_stages,
                          "rate": t.rate} for t in mix.types]
        if kv_capacity is not None:
            data["max_total_rate_with_capacity"] = max_stable_rate(mix, cost, kv_capacity)
        if as_json:
            typer.echo(cc.dumps(data))
            return
        _print_table("fluid benchmark", {k: v for k, v in data.items() if k != "types"})

    @app.command("capacity")
    @cc.user_errors
    def capacity(
        policy: str = typer.Option(..., "--policy", help="policy spec, e.g. wait:tl=100"),
        types: Optional[str] = typer.Option(None, "--types", help="type mix; default: LMSYS-like lengths"),
        d0: float = typer.Option(DEFAULT_D0, "--d0"),
        d1: float = typer.Option(DEFAULT_D1, "--d1"),
        kv_capacity: int = typer.Option(DEFAULT_KV_CAPACITY, "--kv-capacity"),
        block_size: int = typer.Option(1, "--block-size"),
        separate_batching: bool = typer.Option(False, "--separate-batching"),
        num_requests: int = typer.Option(400, "--num-requests", help="n: compared with 2n"),
        lo: Optional[float] = typer.Option(None, "--lo", help="stable rate to start from"),
        hi: Optional[float] = typer.Option(None, "--hi", help="unstable rate to start from"),
        precision: float = typer.Option(0.02, "--precision", help="relative width of the final bracket"),
        tolerance: float = typer.Option(0.1, "--tolerance", help="max |L(2n)/L(n) − 1| when stable"),
        seed: int = typer.Option(0, "--seed"),
        num_seeds: int = typer.Option(1, "--num-seeds", help="average latencies over this many seeds"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """The largest arrival rate at which mean latency stops growing with the horizon."""
        from ..analysis.capacity import find_capacity
        from ..engine.simulator import Simulator
        cost = _cost(d0, d1)
        make_workload, limit, mix_text = _workload_factory(types, cost, kv_capacity)
        factory = _policy_factory(policy, mix_text, cost, kv_capacity)
        sim = Simulator(cost, kv_capacity, block_size=block_size, separate_batching=separate_batching)
        progress = None if as_json else (lambda p: typer.echo(
            f"  λ={p.rate:8.3f}  L(n)={p.mean_latency:9.3f}s  L(2n)={p.mean_latency_doubled:9.3f}s  "
            f"{'stable' if p.stable else 'unstable'}", err=True))
        result = find_capacity(sim, factory, make_workload, lo=lo or 0.3 * limit, hi=hi or 1.1 * limit,
                               num_requests=num_requests, seed=seed, num_seeds=num_seeds,
                               tolerance=tolerance, rel_precision=precision, progress=progress)
        data = {"policy": policy, "rate": result.rate, "unstable_rate": result.unstable_rate,
                "fluid_limit": limit, "num_requests": num_requests, "num_probes": len(result.probes)}
        if as_json:
            typer.echo(cc.dumps(data))
            return
        _print_table("stability limit", data)


def _cost(d0: float, d1: float):
    from ..cost.models import LinearCost
    if not (math.isfinite(d0) and math.isfinite(d1)):
        raise ConfigError(f"--d0/--d1: expected finite numbers, got d0={d0}, d1={d1}")
    try:
        return LinearCost(d0, d1)
    except ValueError as exc:
        raise ConfigError(f"--d0/--d1: {exc}") from None


def _workload_factory(types, cost, kv_capacity):
    """(rate, n, seed) → Workload, the fluid limit under C, and the mix text (None if untyped)."""
    from ..bounds.fluid import max_stable_rate, per_request_bound
    from ..workload.typed import parse_mix, synthesize_typed
    from ..workload.synthetic import default_workload
    if types is not None:
        mix = parse_mix(types)
        limit = max_stable_rate(mix, cost, kv_capacity)
        return (lambda r, n, s: synthesize_typed(mix.with_total_rate(r), n, np.random.default_rng(s)),
                limit, mix.describe())
    prompts, outputs = _lengths_sample()
    x1 = per_request_bound(prompts, outputs, 1.0, _zero_load(cost)).kv_token_rate
    limit = min(math.inf if cost.d1 == 0 else 1 / (cost.d1 * x1),
                kv_capacity / ((cost.d0 + cost.d1 * kv_capacity) * x1))
    return (lambda r, n, s: default_workload(n, rate=r, seed=s)), limit, None


def _zero_load(cost):
    from ..cost.models import LinearCost
    return LinearCost(max(cost.d0, 1e-12), 0.0)       # X does not depend on the cost


def _policy_factory(spec: str, mix_text: str | None, cost, kv_capacity: int):
    """A rate → Policy factory. Fills WAIT's ``types`` from --types and, when neither ``tl`` nor
    ``thresholds`` is given, its thresholds from the fluid model at each rate (`fluid_thresholds`:
    n_j = ⌈τ*·λ_j⌉ with M^π ≤ C); separate-threshold's ``threshold`` likewise."""
    from ..bounds.fluid import fluid_bound, max_stable_rate
    from ..policies.registry import make, parse_policy_spec
    from ..policies.separate import separate_threshold
    from ..policies.wait import fluid_thresholds
    from ..workload.typed import parse_mix
    name, params = parse_policy_spec(spec)
    if name in ("wait", "nested-wait") and mix_text is not None:
        if "thresholds" not in params and "survival" not in params:
            params.setdefault("types", mix_text)
    if name == "wait" and "types" not in params and "thresholds" not in params:
        raise ConfigError("policy 'wait' needs --types (a typed workload) or thresholds=…")
    if name == "wait" and "tl" not in params and "thresholds" not in params:
        mix = parse_mix(params["types"])      # thresholds from the fluid model at each rate

        def build_wait(rate: float):
            n = fluid_thresholds(mix.with_total_rate(rate), cost, kv_capacity)
            return make(name, **{**params, "thresholds": "/".join(map(str, n))})
        return build_wait
    if name == "separate-threshold" and "threshold" not in params and mix_text is not None:
        mix = parse_mix(mix_text)
        top = max_stable_rate(mix, cost)

        def build(rate: float):
            r = min(rate, 0.99 * top)
            return make(name, threshold=separate_threshold(fluid_bound(mix.with_total_rate(r), cost)),
                        **params)
        return build
    policy = make(name, **params)
    return lambda rate: policy


def _print_table(title: str, data: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key, value in data.items():
        text = (", ".join(cc.fmt(v) for v in value) if isinstance(value, (tuple, list)) else
                cc.fmt(value, 6))
        table.add_row(key, text)
    Console(file=sys.stdout).print(table)
