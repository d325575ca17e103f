"""CLI commands of the fluid area: ``kvsched bound fluid`` and ``kvsched capacity``.

`register(app, bound_app)` adds them to the main typer app and its ``bound`` sub-app. Errors (one
line ``error: ...``, exit 2), JSON and table cells come from `kvsched.cli.common`. The workload
options are these commands' own (the fluid model needs typed workloads): ``--types`` (a type mix
such as ``p512d20@0.7+p512d50@0.3``; with ``--rate`` the weights are proportions of it) or, without
it, the embedded LMSYS-like workload (binned into ``--bins`` types for the fluid bound); the cost
is ``--cost linear:d0=..,d1=..`` as in every command (or the older ``--d0``/``--d1``; `LinearCost`).
The default cost is our rough Llama-2-7B/A100 fit (bench/capacity_limits.py), C = 137,000 tokens.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import typer

from . import common as cc
from ..errors import ConfigError

DEFAULT_D0 = 0.00939         # seconds per iteration (bench/capacity_limits.py)
DEFAULT_D1 = 2.68e-6         # seconds per KV token in the batch
DEFAULT_KV_CAPACITY = 137_000
COST_HELP = ("Iteration time 'linear:d0=SECONDS,d1=SECONDS_PER_KV_TOKEN' (default: "
             f"linear:d0={DEFAULT_D0},d1={DEFAULT_D1}); --d0/--d1 are the older spelling")


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
        cost: Optional[str] = typer.Option(None, "--cost", help=COST_HELP),
        d0: Optional[float] = typer.Option(None, "--d0", help=f"LinearCost d0 (s per iteration; "
                                           f"default {DEFAULT_D0}); same as --cost linear:d0=..,d1=.."),
        d1: Optional[float] = typer.Option(None, "--d1", help=f"LinearCost d1 (s per KV token; default "
                                           f"{DEFAULT_D1})"),
        kv_capacity: Optional[int] = typer.Option(None, "--kv-capacity", min=1, max=cc.MAX_TOKENS,
                                                  help="also report the limit under C"),
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
    ) -> None:
        """The fluid benchmark: X, stability, M*, τ*, n_j*, throughput* (Ao et al. 2025)."""
        from ..bounds.fluid import fluid_bound, max_stable_rate
        from ..workload.typed import bin_lengths, parse_mix
        cost = linear_cost(cost, d0, d1)
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"--rate: got {rate}, expected a total rate > 0 requests per second")
        if bins is not None and bins < 1:
            raise ConfigError(f"--bins: got {bins}, expected at least 1 type")
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
        cost: Optional[str] = typer.Option(None, "--cost", help=COST_HELP),
        d0: Optional[float] = typer.Option(None, "--d0", help=f"LinearCost d0 (default {DEFAULT_D0})"),
        d1: Optional[float] = typer.Option(None, "--d1", help=f"LinearCost d1 (default {DEFAULT_D1})"),
        kv_capacity: int = typer.Option(DEFAULT_KV_CAPACITY, "--kv-capacity", min=1, max=cc.MAX_TOKENS),
        block_size: int = typer.Option(1, "--block-size", min=1, max=cc.MAX_TOKENS),
        separate_batching: bool = typer.Option(False, "--separate-batching"),
        num_requests: int = typer.Option(400, "--num-requests", min=1, max=cc.MAX_NUM_REQUESTS // 2,
                                         help="n: compared with 2n"),
        lo: Optional[float] = typer.Option(None, "--lo", help="stable rate to start from"),
        hi: Optional[float] = typer.Option(None, "--hi", help="unstable rate to start from"),
        precision: float = typer.Option(0.02, "--precision", help="relative width of the final bracket"),
        tolerance: float = typer.Option(0.1, "--tolerance", help="max |L(2n)/L(n) − 1| when stable"),
        seed: int = typer.Option(0, "--seed", min=0, max=cc.MAX_SEED),
        num_seeds: int = typer.Option(1, "--num-seeds", min=1, help="average latencies over this many seeds"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """The largest arrival rate at which mean latency stops growing with the horizon."""
        from ..analysis.capacity import find_capacity
        from ..engine.simulator import Simulator
        cc.import_policy_modules(policy, "--policy")
        cost = linear_cost(cost, d0, d1)
        _check_search(lo, hi, precision, tolerance)
        if block_size > kv_capacity:
            raise ConfigError(f"--block-size: got {block_size}, expected at most --kv-capacity ({kv_capacity})")
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


def linear_cost(text: str | None, d0: float | None, d1: float | None):
    """The `LinearCost` of ``--cost`` (as every command spells it) or of the older ``--d0/--d1``.

    The fluid model needs time = d0 + d1 · KV tokens with d1 > 0 for a finite limit, so ``--cost``
    takes ``linear:d0=..,d1=..`` only; ``unit`` (d1 = 0: no memory-bandwidth limit) and a preset
    (not linear) are refused. Giving ``--cost`` and
    ``--d0``/``--d1`` together is refused rather than guessing which one wins.
    """
    from ..cost.models import LinearCost
    if text is None:
        return _cost(DEFAULT_D0 if d0 is None else d0, DEFAULT_D1 if d1 is None else d1)
    if d0 is not None or d1 is not None:
        raise ConfigError("--cost: give either --cost or --d0/--d1, not both")
    model = cc.parse_cost(text)
    if model.preset is not None or not isinstance(model.cost, LinearCost):
        raise ConfigError(f"--cost: the fluid model needs 'linear:d0=..,d1=..', got {text!r}")
    return model.cost


def _check_search(lo: float | None, hi: float | None, precision: float, tolerance: float) -> None:
    """The bisection's options: finite and positive, and a bracket with lo < hi."""
    for option, value in (("--lo", lo), ("--hi", hi), ("--precision", precision), ("--tolerance", tolerance)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{option}: got {value}, expected a finite number > 0")
    if lo is not None and hi is not None and not lo < hi:
        raise ConfigError(f"--lo/--hi: got lo={lo}, hi={hi}, expected lo < hi")


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
    from rich.table import Table
    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key, value in data.items():
        text = (", ".join(cc.fmt(v) for v in value) if isinstance(value, (tuple, list)) else
                cc.fmt(value, 6))
        table.add_row(key, text)
    cc.console().print(table)
