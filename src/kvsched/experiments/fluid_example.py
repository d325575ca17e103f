"""Reproduction R4: the WAIT paper's fluid identities on its worked example (ALGORITHMS.md §4–5).

Ao, Luo, Simchi-Levi, Wang (arXiv 2504.11320): one type with prompt l = 1 and output l' = 1,
arrival rate λ = 4, unit batches (d0 = 1, d1 = 0) and KV capacity C = 12. The fluid benchmark gives
X = λ(l' + 1)(l + l'/2) = 12, τ* = d0 / (1 − d1·X) = 1, M* = d0·X / (1 − d1·X) = 12 and τ*·λ = 4 prompts
per stage; the paper's claim is that FCFS (admit greedily, evict the last admitted on overflow and
restart it) loses 12–25 % of the throughput there while WAIT (threshold 4) loses none.

`PaperFCFS` is that FCFS in the paper's model (not a registered policy). Our figures: the fluid
numbers from `kvsched.bounds.fluid.fluid_bound`, and FCFS's and WAIT's completed requests per second
on a Poisson stream (``num_requests``, ``seed``) beside the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..cost.models import LinearCost
from ..policies.base import Policy, PolicyTags
from ..state import Decision

WORKLOAD = "p1d1@4"
CAPACITY = 12
#: The paper's numbers for the worked example (fluid values exact; FCFS's loss a range).
PAPER = {"X": 12, "tau": 1, "M": 12, "per_stage": 4, "fcfs_loss": (0.12, 0.25), "wait_evictions": 0}


@dataclass(kw_only=True)
class PaperFCFS(Policy):
    """FCFS with last-in eviction in the paper's model (a comparator, not registered).

    Every resident prompt advances one stage; on overflow the last admitted is evicted and restarts
    from stage 0 (its prompt alone, then one token per stage); then waiting prompts are admitted
    FCFS while their prompt's KV fits.
    """

    name: ClassVar[str] = "paper-fcfs"
    tags: ClassVar[PolicyTags] = PolicyTags(preemptive=True)

    def schedule(self, view):
        running = sorted(view.running, key=lambda r: r.admitted_seq)
        need = {r.request_id: view.extra_blocks(r, 1) for r in running}
        free, total, evict = view.num_free_blocks, sum(need.values()), []
        for r in reversed(running):
            if total <= free:
                break
            evict.append(r.request_id)
            free += view.blocks(view.kv_tokens(r))
            total -= need.pop(r.request_id)
        tokens, free = {rid: 1 for rid in need}, free - total
        for r in view.waiting:
            extra = view.extra_blocks(r, r.num_prompt_tokens)
            if extra > free:
                break
            tokens[r.request_id] = r.num_prompt_tokens
            free -= extra
        return Decision(num_tokens=tokens, evict=tuple(evict))


def reproduce(*, num_requests: int = 2000, seed: int = 1) -> dict:
    """{"rows": [{quantity, ours, paper}], "num_requests", "seed"}."""
    from ..bounds.fluid import fluid_bound
    from ..engine.simulator import Simulator
    from ..policies import make
    from ..workload.typed import parse_mix, synthesize_typed
    mix = parse_mix(WORKLOAD)
    cost = LinearCost(1.0, 0.0)
    bound = fluid_bound(mix, cost)
    workload = synthesize_typed(mix, num_requests, np.random.default_rng(seed))
    sim = Simulator(cost, kv_capacity_tokens=CAPACITY)
    threshold = round(bound.num_prompts_per_stage[0])
    wait = sim.run(workload, make("wait", thresholds=str(threshold))).summary()
    fcfs = sim.run(workload, PaperFCFS()).summary()
    loss = 1 - fcfs.throughput_requests_per_s / wait.throughput_requests_per_s
    lo, hi = PAPER["fcfs_loss"]
    rows = [
        {"quantity": "X (KV token-stages per unit time)", "ours": bound.kv_token_rate, "paper": PAPER["X"]},
        {"quantity": "τ* (iteration time)", "ours": bound.iteration_time, "paper": PAPER["tau"]},
        {"quantity": "M* (fluid memory, tokens)", "ours": bound.memory_tokens, "paper": PAPER["M"]},
        {"quantity": "prompts per stage τ*·λ", "ours": bound.num_prompts_per_stage[0], "paper": PAPER["per_stage"]},
        {"quantity": f"WAIT (threshold {threshold}) requests/s", "ours": wait.throughput_requests_per_s,
         "paper": mix.total_rate},
        {"quantity": "WAIT evictions", "ours": float(wait.num_evictions), "paper": PAPER["wait_evictions"]},
        {"quantity": "FCFS requests/s", "ours": fcfs.throughput_requests_per_s, "paper": None},
        {"quantity": "FCFS throughput loss vs WAIT", "ours": loss, "paper": f"{lo:.0%}–{hi:.0%}"},
    ]
    return {"rows": rows, "num_requests": num_requests, "seed": seed, "fcfs_evictions": fcfs.num_evictions}


def render(report: dict, console) -> None:
    from rich.table import Table
    table = Table(title=f"R4: the fluid benchmark's worked example (l = l' = 1, λ = 4, d0 = 1, d1 = 0, C = {CAPACITY}; "
                        f"{report['num_requests']:,} requests, seed {report['seed']})")
    for col in ("quantity", "ours", "paper"):
        table.add_column(col, justify="left" if col == "quantity" else "right")
    for row in report["rows"]:
        paper = "–" if row["paper"] is None else (row["paper"] if isinstance(row["paper"], str) else f"{row['paper']:g}")
        ours = f"{row['ours']:.1%}" if "loss" in row["quantity"] else f"{row['ours']:.4g}"
        table.add_row(row["quantity"], ours, paper)
    console.print(table)
    console.print("paper: X = 12, τ* = 1, M* = 12, 4 prompts per stage; FCFS loses 12–25% of the throughput, "
                  "WAIT none (it never evicts)")


__all__ = ["CAPACITY", "PAPER", "PaperFCFS", "WORKLOAD", "render", "reproduce"]
