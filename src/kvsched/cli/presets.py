"""`kvsched presets`: list the hardware/model presets with KV capacity and fit error.

Calibrated presets show their fits' held-out error per operator group; roofline presets the
roofline's held-out error on the A100 profiles (its GEMMs under "lin")."""

from __future__ import annotations

import json

import typer

from . import common as cc

GROUPS = ("linear", "elementwise", "attn_prefill", "attn_decode", "all_reduce")
ROOFLINE_GROUPS = ("gemm", "elementwise", "attn_prefill", "attn_decode", "all_reduce")
HEADERS = ("lin", "elem", "pre", "dec", "ar")


def presets_command(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the presets (usable as `--cost preset:NAME`): KV capacity and held-out fit error (MAPE %)."""
    from ..cost.presets import get_preset, list_presets

    presets = [get_preset(name) for name in list_presets()]
    if as_json:
        rows = [{"name": p.name, "model": p.model.name, "gpu": p.gpu, "tensor_parallel": p.tensor_parallel,
                 "kv_capacity_tokens": p.kv_capacity_tokens, "block_size": p.block_size,
                 "bytes_per_kv_token": p.bytes_per_kv_token, "weight_bytes_per_gpu": p.weight_bytes_per_gpu,
                 "gpu_memory_utilization": p.gpu_memory_utilization, "fit_error": dict(p.fit_error),
                 "attention_derived": p.attention_derived, "cost_model": p.cost_model,
                 "activation_bytes_per_gpu": p.activation_bytes_per_gpu} for p in presets]
        typer.echo(json.dumps(rows, indent=1))
        return
    from rich import box
    from rich.table import Table

    table = Table(title="presets — fit error: held-out MAPE % per operator group", box=box.SIMPLE_HEAD,
                  pad_edge=False, padding=(0, 1), collapse_padding=True)
    table.add_column("preset", no_wrap=True)
    table.add_column("cost", no_wrap=True)
    for column in ("TP", "KV tokens", "B/tok", *HEADERS):
        table.add_column(column, justify="right", no_wrap=True)
    for p in presets:
        groups = ROOFLINE_GROUPS if p.cost_model == "roofline" else GROUPS
        errors = [f"{p.fit_error[g]:.1f}" if g in p.fit_error else "–" for g in groups]
        if p.attention_derived:
            errors[2:4] = [e + "*" for e in errors[2:4]]
        table.add_row(p.name, p.cost_model, str(p.tensor_parallel), f"{p.kv_capacity_tokens:,}",
                      f"{p.bytes_per_kv_token:,}", *errors)
    console = cc.console()
    console.print(table)
    console.print("lin: GEMMs; elem: norms, RoPE, act, add; pre/dec: attention; ar: all-reduce.\n"
                  "* attention derived from the Llama-2-70B TP2 profile by shape (its error shown).\n"
                  "roofline: error on the A100 profiles (kvsched.cost.roofline); other GPUs unmeasured.\n"
                  "KV tokens: 0.9 × GPU memory − weights (roofline: − activations), blocks of 16; "
                  "B/tok: KV bytes/token/GPU.")


def register(app: typer.Typer, bound_app: typer.Typer | None = None) -> None:
    """Add `presets` to the CLI app (``bound_app`` is accepted for the CLI's signature and unused)."""
    app.command("presets")(presets_command)
