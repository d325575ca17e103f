#!/usr/bin/env python3
"""Fidelity of kvsched (calibrated 70B preset) against Vidur on the same 1,000 ShareGPT requests.

Reads ``../shared/data/vidur/runs/sharegpt_llama2-70b_tp2_a100_qps0.5_n1000/`` (the exact request
stream and Vidur's per-request results for its ``vllm`` and ``sarathi`` replica schedulers; every
parameter below is taken from the ``config.json`` files there), runs kvsched's ``vllm`` and
``sarathi`` policies with the ``llama2-70b-a100-tp2`` preset and prints mean, p50 and p99 of
end-to-end latency and TTFT, ours against Vidur's.

Matched settings (Vidur config.json): Llama-2-70B, TP 2, A100, block size 16, batch_size_cap 128
(→ ``max_num_seqs``), watermark_blocks_fraction 0.01, vllm ``max_tokens_in_batch`` 4096
(→ ``max_num_batched_tokens``), sarathi ``chunk_size`` 512, no CPU-overhead modelling. The KV
capacity is Vidur's: its memory planner gives 13 request slots × 4096 / 16 = 3,328 blocks
(53,248 tokens); ``--kv-capacity preset`` uses the preset's own 50,848 tokens instead.

Policies: vllm as Vidur's V0 (``enable_chunked_prefill=False`` — a prompt is admitted whole —,
``watermark=0.01``, ``max_num_batched_tokens=4096``, ``max_num_seqs=128``); sarathi with
``chunk_size=512``, ``max_num_seqs=128``, ``watermark=0.01``.

A third run uses `VidurV0Reference`, Vidur's vLLM replica scheduler re-expressed as a bench-only
kvsched policy, to separate the cost model's error from scheduler differences.

Run: ``.venv/bin/python bench/vidur_fidelity.py`` (10–20 s on one core).

Results (Vidur capacity 53,248 tokens; relative error of kvsched against Vidur):

    sarathi        e2e mean +0.1 %, p50 +0.8 %, p99 −0.4 %; TTFT mean −1.4 %, p50 +0.3 %, p99 −0.0 %
    vllm           e2e mean +2.8 %, p50 +4.2 %, p99 +5.8 %; TTFT mean +35 %, p50 +11 %, p99 +53 %
    vidur-vllm-v0  e2e mean −2.1 %, p50 −2.4 %, p99 −2.5 %; TTFT mean −9.3 %, p50 −32 %, p99 −7.8 %

Why kvsched's ``vllm`` differs from Vidur's vLLM (the policy lacks these; the reference has them):

- Vidur's vLLM is prefill-first with separate batches: if any waiting request can be admitted, the
  iteration holds only new prefills; decodes run only in iterations that admit nothing. kvsched's
  ``vllm`` (V1) serves running requests first and admits into the same iteration, so in a memory-
  bound stretch decodes claim the freed blocks before admissions do, and queues (TTFT) grow.
- Vidur's prefill budget is padded: ``num_seqs · max(prompt) <= max_tokens_in_batch``; kvsched
  counts the sum of tokens (the padded rule alone moves the reference's TTFT mean by ~6 points).
- Vidur preempts the latest-arrived running request not yet scheduled in this iteration (and asks
  for one free block even when the decode needs none); kvsched's vllm preempts the most recently
  admitted request (LIFO), which differs after restarts.

What remains in the reference (about −2 % on e2e, −9 % on mean TTFT): kvsched's batches are a
little faster than Vidur's random-forest predictions, which round the token count up to a multiple
of 8 and the decode context up to a multiple of 64 (emulating that rounding, outside the model,
moves the reference to −1.1 % e2e and −6.5 % mean TTFT, and sarathi to +1.1 % / +0.2 %); and the
queueing stretch around t = 1000–1400 s
is chaotic (a few different preemptions change who waits). The median TTFT sits on the steep part
of a bimodal distribution (no wait vs. waiting for memory), so small shifts move it a lot.

KV capacity matters a lot here (the run is memory-bound 77 % of the time): with the preset's own
capacity (50,848 tokens, 4.5 % less) mean TTFT rises by 40 % (sarathi) to 68 % (vllm).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kvsched.engine import Simulator
from kvsched.policies import Policy, PolicyTags, make
from kvsched.presets import get_preset
from kvsched.state import Decision, SchedulerView, Status
from kvsched.workload import Workload

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = REPO_ROOT.parent / "shared" / "data" / "vidur" / "runs" / "sharegpt_llama2-70b_tp2_a100_qps0.5_n1000"
PRESET = "llama2-70b-a100-tp2"
VIDUR_KV_CAPACITY_TOKENS = 13 * 4096   # Vidur MemoryPlanner: 13 slots of max_tokens 4096 (3,328 blocks)
POLICIES = {
    "vllm": dict(enable_chunked_prefill=False, watermark=0.01, max_num_batched_tokens=4096, max_num_seqs=128),
    "sarathi": dict(chunk_size=512, max_num_seqs=128, watermark=0.01),
}
METRICS = ("e2e", "ttft")
STATS = ("mean", "p50", "p99")


@dataclass(frozen=True)
class Comparison:
    scheduler: str
    ours: dict[str, dict[str, float]]      # metric -> stat -> seconds
    vidur: dict[str, dict[str, float]]
    num_evictions: int
    vidur_restarts: int

    def relative_error(self, metric: str, stat: str) -> float:
        return self.ours[metric][stat] / self.vidur[metric][stat] - 1


@dataclass(kw_only=True)
class VidurV0Reference(Policy):
    """Vidur's ``VLLMReplicaScheduler`` (microsoft/vidur 7d47513) re-expressed as a kvsched policy.

    Bench-only (not registered): it separates the cost model's error from scheduler differences.
    Per iteration:

    1. Prefill first: admit from the head of the queue (victims of preemption first, then arrivals)
       while the whole prompt's blocks leave ``watermark`` of the blocks free, ``len(batch) ·
       max(prompt in batch) <= max_tokens_in_batch`` (Vidur pads to the longest prompt), and fewer
       than ``batch_size_cap`` requests hold memory. If any was admitted, the iteration holds only
       these prefills.
    2. Otherwise every resident request decodes, oldest arrival first; while no block is free (Vidur
       asks for at least one free block), the latest-arrived resident request not yet scheduled in this
       iteration is preempted (recompute) and put at the head of the queue; if none is left, the
       request itself is.
    """

    name = "vidur-vllm-v0"
    tags = PolicyTags(preemptive=True)
    description = "Vidur's vLLM (V0) replica scheduler, bench reference"

    max_tokens_in_batch: int = 4096
    batch_size_cap: int = 128
    watermark: float = 0.01

    def reset(self, *, seed: int | None = None) -> None:
        self._front: list = []

    def schedule(self, view: SchedulerView) -> Decision:
        self._front = [r for r in self._front if r.status is Status.WAITING]
        front_ids = {r.request_id for r in self._front}
        queue = self._front + [r for r in view.waiting if r.request_id not in front_ids]
        free, reserve = view.num_free_blocks, int(self.watermark * view.kv_capacity_blocks)
        tokens: dict[int, int] = {}
        for request in queue:
            n = request.num_tokens
            need = view.extra_blocks(request, n)
            if free - need < reserve or (len(tokens) + 1) * max([n, *tokens.values()]) > self.max_tokens_in_batch:
                break
            if len(view.running) + len(tokens) >= self.batch_size_cap:
                break
            tokens[request.request_id] = n
            free -= need
        if tokens:
            self._front = [r for r in self._front if r.request_id not in tokens]
            return Decision(num_tokens=tokens)
        return self._decodes(view, free)

    def _decodes(self, view: SchedulerView, free: int) -> Decision:
        pending = sorted(view.running, key=lambda r: (r.arrival_time, r.request_id))
        tokens, evicted = {}, []
        while pending:
            request = pending.pop(0)
            need = view.extra_blocks(request, 1)
            while free < max(1, need):
                victim = pending.pop() if pending else request
                evicted.append(victim.request_id)
                free += view.blocks(view.kv_tokens(victim))
                self._front.insert(0, victim)
                if victim is request:
                    break
            else:
                tokens[request.request_id] = 1
                free -= need
        return Decision(num_tokens=tokens, evict=tuple(evicted))


def stats(values: np.ndarray) -> dict[str, float]:
    p50, p99 = np.percentile(values, [50, 99])
    return {"mean": float(values.mean()), "p50": float(p50), "p99": float(p99)}


def load_workload(run_dir: Path = RUN_DIR) -> Workload:
    with open(run_dir / "workload.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return Workload.build([float(r["arrived_at"]) for r in rows],
                          np.array([int(r["num_prefill_tokens"]) for r in rows]),
                          np.array([int(r["num_decode_tokens"]) for r in rows]), name="vidur-sharegpt-1k")


def vidur_config(run_dir: Path, scheduler: str) -> dict:
    return json.loads((run_dir / scheduler / "config.json").read_text())


def vidur_results(run_dir: Path, scheduler: str) -> tuple[dict[str, dict[str, float]], int]:
    with open(run_dir / scheduler / "request_metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    e2e = np.array([float(r["request_e2e_time"]) for r in rows])
    ttft = np.array([float(r["prefill_e2e_time"]) for r in rows])
    restarts = sum(int(float(r["request_num_restarts"])) for r in rows)
    return {"e2e": stats(e2e), "ttft": stats(ttft)}, restarts


def check_config(run_dir: Path) -> None:
    """Fail loudly if the Vidur runs were made with other settings than the ones matched here."""
    for scheduler in POLICIES:
        cfg = vidur_config(run_dir, scheduler)
        replica = cfg["cluster_config"]["replica_config"]
        sched = cfg["cluster_config"]["replica_scheduler_config"]
        assert replica["model_name"] == "meta-llama/Llama-2-70b-hf" and replica["tensor_parallel_size"] == 2
        assert sched["block_size"] == 16 and sched["batch_size_cap"] == 128
        assert sched["watermark_blocks_fraction"] == 0.01
        assert cfg["execution_time_predictor_config"]["skip_cpu_overhead_modeling"] is True
        if scheduler == "vllm":
            assert sched["max_tokens_in_batch"] == 4096
        else:
            assert sched["chunk_size"] == 512


def run_ours(workload: Workload, scheduler: str, kv_capacity_tokens: int, policy=None):
    preset = get_preset(PRESET)
    sim = Simulator(preset.cost, kv_capacity_tokens, block_size=preset.block_size)
    policy = policy if policy is not None else make(scheduler, **POLICIES[scheduler])
    result = sim.run(workload, policy)
    done = ~result.rejected
    arrival = workload.arrival_time[done]
    e2e = result.finish_time[done] - arrival
    ttft = result.first_token_time[done] - arrival
    return {"e2e": stats(e2e), "ttft": stats(ttft)}, int(result.num_evictions.sum()), int((~done).sum())


def compare(scheduler: str, run_dir: Path = RUN_DIR, kv_capacity_tokens: int = VIDUR_KV_CAPACITY_TOKENS,
            workload: Workload | None = None, policy=None) -> Comparison:
    workload = workload if workload is not None else load_workload(run_dir)
    ours, evictions, rejected = run_ours(workload, scheduler, kv_capacity_tokens, policy)
    if rejected:
        raise RuntimeError(f"{rejected} requests rejected at capacity {kv_capacity_tokens}")
    vidur, restarts = vidur_results(run_dir, scheduler)
    return Comparison(scheduler, ours, vidur, evictions, restarts)


def print_table(comparisons: list[Comparison]) -> None:
    print(f"{'scheduler':<9} {'metric':<5} {'stat':<5} {'kvsched':>9} {'vidur':>9} {'error':>8}")
    for c in comparisons:
        for metric in METRICS:
            for stat in STATS:
                print(f"{c.scheduler:<9} {metric:<5} {stat:<5} {c.ours[metric][stat]:9.3f} "
                      f"{c.vidur[metric][stat]:9.3f} {c.relative_error(metric, stat):+8.1%}")
        print(f"{c.scheduler:<9} evictions: kvsched {c.num_evictions}, vidur restarts {c.vidur_restarts}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="kvsched vs Vidur on 1k ShareGPT requests (Llama-2-70B TP2 A100)")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR)
    parser.add_argument("--kv-capacity", default="vidur", help="'vidur' (53,248), 'preset', or a token count")
    parser.add_argument("--scheduler", choices=sorted(POLICIES), action="append")
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        print(f"error: {args.run_dir} not found", file=sys.stderr)
        return 2
    check_config(args.run_dir)
    capacity = {"vidur": VIDUR_KV_CAPACITY_TOKENS,
                "preset": get_preset(PRESET).kv_capacity_tokens}.get(args.kv_capacity)
    capacity = capacity if capacity is not None else int(args.kv_capacity)
    print(f"preset {PRESET}, KV capacity {capacity} tokens")
    workload = load_workload(args.run_dir)
    print_table([compare(s, args.run_dir, capacity, workload) for s in args.scheduler or sorted(POLICIES)])
    print("\nreference: Vidur's own vLLM scheduler re-expressed in kvsched (bench-only), same preset")
    print_table([compare("vllm", args.run_dir, capacity, workload, VidurV0Reference())])
    return 0


if __name__ == "__main__":
    sys.exit(main())
