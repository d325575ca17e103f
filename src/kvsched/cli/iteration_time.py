"""``kvsched iteration-time``: one iteration's time and its breakdown under a ``--cost`` model.

A user's first question about a cost model: how long does a batch of B decodes holding T context
tokens (and, optionally, one prefill chunk of P tokens after C cached ones) take? The batch is
built as the engine builds `kvsched.cost.BatchStats`; the JSON has ``iteration_time`` in seconds,
``breakdown`` (seconds per part, for models that have one) and, for a roofline, its floors.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from . import common as cc
from ..cost.models import BatchStats
from ..errors import ConfigError


def batch_from_options(decode_seqs: int, context_tokens: int, prefill_tokens: int,
                       prefill_cached_tokens: int) -> BatchStats:
    """The `BatchStats` of the options; `ConfigError` naming the option that is wrong."""
    for option, value in (("--decode-seqs", decode_seqs), ("--context-tokens", context_tokens),
                          ("--prefill-tokens", prefill_tokens), ("--prefill-cached-tokens", prefill_cached_tokens)):
        if value < 0:
            raise ConfigError(f"{option}: got {value}, expected a count >= 0")
    if context_tokens < decode_seqs:   # each decode attends to at least the token it computes
        raise ConfigError(f"--context-tokens: got {context_tokens}, expected at least --decode-seqs "
                          f"({decode_seqs}): each decode attends to its own token")
    if decode_seqs == 0 and context_tokens:
        raise ConfigError("--context-tokens: given without --decode-seqs (it is the decodes' total context)")
    if prefill_cached_tokens and not prefill_tokens:
        raise ConfigError("--prefill-cached-tokens: given without --prefill-tokens")
    if decode_seqs == 0 and prefill_tokens == 0:
        raise ConfigError("--decode-seqs / --prefill-tokens: the batch is empty; give at least one")
    context = prefill_cached_tokens + prefill_tokens
    return BatchStats(num_prefill_tokens=prefill_tokens, num_prefill_seqs=int(prefill_tokens > 0),
                      prefill_context_tokens=context if prefill_tokens else 0,
                      prefill_attention_work=prefill_tokens * context,
                      num_decode_seqs=decode_seqs, decode_context_tokens=context_tokens)


def describe(spec: str, cost: Any, batch: BatchStats) -> dict[str, Any]:
    """The command's JSON: iteration time, breakdown, floors (roofline) and the batch."""
    out: dict[str, Any] = {"cost": spec.strip(), "iteration_time": float(cost.iteration_time(batch))}
    breakdown = getattr(cost, "breakdown", None)
    out["breakdown"] = {k: float(v) for k, v in breakdown(batch).items()} if breakdown else {}
    if hasattr(cost, "memory_floor_time"):
        out["memory_floor_time"] = float(cost.memory_floor_time())
        out["compute_floor_time"] = float(cost.compute_floor_time(batch))
    out["batch"] = {"num_decode_seqs": batch.num_decode_seqs, "decode_context_tokens": batch.decode_context_tokens,
                    "num_prefill_tokens": batch.num_prefill_tokens,
                    "prefill_context_tokens": batch.prefill_context_tokens}
    return out


def iteration_time_command(
    cost: Annotated[str, typer.Option("--cost", help="The cost model (as for simulate: 'preset:NAME', "
                                      "'roofline:model=..,gpu=..,tp=..', 'linear:..').")],
    decode_seqs: Annotated[int, typer.Option("--decode-seqs", help="Decoding sequences in the batch (B).")] = 0,
    context_tokens: Annotated[int, typer.Option("--context-tokens", help="Context tokens the decodes attend "
                                                "to, summed over them, each one's new token included (T).")] = 0,
    prefill_tokens: Annotated[int, typer.Option("--prefill-tokens", help="Tokens of one prefill chunk (P).")] = 0,
    prefill_cached_tokens: Annotated[int, typer.Option("--prefill-cached-tokens",
                                                       help="Tokens cached before that chunk.")] = 0,
    json_out: cc.JsonOpt = False,
) -> None:
    """Print one iteration's time (seconds) and its breakdown under a cost model."""
    batch = batch_from_options(decode_seqs, context_tokens, prefill_tokens, prefill_cached_tokens)
    data = describe(cost, cc.parse_cost(cost).cost, batch)
    if json_out:
        typer.echo(cc.dumps(data))
        return
    console = cc.console()
    console.print(f"{data['cost']}: {batch.num_decode_seqs} decodes holding {batch.decode_context_tokens} "
                  f"context tokens, {batch.num_prefill_tokens} prefill tokens", soft_wrap=True)
    table = Table()
    table.add_column("part")
    table.add_column("ms", justify="right")
    for part, seconds in data["breakdown"].items():
        table.add_row(part, cc.fmt(seconds * 1e3))
    table.add_row("[bold]iteration[/]", f"[bold]{cc.fmt(data['iteration_time'] * 1e3)}[/]")
    for floor in ("memory_floor_time", "compute_floor_time"):
        if floor in data:
            table.add_row(floor.replace("_time", "").replace("_", " "), cc.fmt(data[floor] * 1e3))
    console.print(table)


def register(app: typer.Typer, bound_app: typer.Typer | None = None) -> None:
    """Add ``iteration-time`` to the CLI app (``bound_app`` unused)."""
    app.command("iteration-time")(cc.user_errors(iteration_time_command))
