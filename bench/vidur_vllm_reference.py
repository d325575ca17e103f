#!/usr/bin/env python3
"""Vidur's vLLM replica scheduler, re-expressed rule by rule on kvsched's cost model, against
kvsched's ``vllm`` policy in its V0 / Vidur mode — to find any scheduler rule where they differ.

Why: on a 10k ShareGPT run kvsched's ``vllm`` (V0 options) was 11 % (mean e2e) and 26 % (mean
TTFT) below Vidur while ``sarathi`` was within 1 %. Running Vidur itself needs its predictor
training (≈ 40 min on 2 cores); this reference runs Vidur's *scheduling* rules with kvsched's batch
times, so any difference it shows is a rule, not the cost model.

Sources (microsoft/vidur at 7d47513, the commit of ../shared/data/vidur):

- ``vidur/scheduler/replica_scheduler/vllm_replica_scheduler.py``: ``_get_next_batch`` (waiting
  queue first, padded budget ``len × max ≤ max_tokens_in_batch``, cap on requests holding memory;
  else the preempted/running list sorted by arrival, each needing one free block, victims from the
  tail restarted to the queue front), ``_can_allocate_request`` (watermark on new requests, one free
  block for running ones), ``_allocate_request`` (prompt blocks on admission, one block when the
  processed tokens outgrow the reservation), ``on_batch_end`` (free finished requests).
- ``vidur/scheduler/replica_scheduler/base_replica_scheduler.py``: ``num_blocks`` = max_tokens /
  block_size × the memory planner's request slots; ``allocate`` / ``free``.
- ``vidur/entities/request.py``: ``on_batch_end`` (a completed prefill emits one token; TTFT is the
  first prefill's end), ``restart`` (the processed tokens become the new prompt).
- ``vidur/request_generator/{synthetic_request_generator,poisson_request_interval_generator,
  trace_request_length_generator}.py``: the request stream (reproduced exactly: the first 1,000
  rows equal ../shared/data/vidur/runs/.../workload.csv).

Finding (issue "Fidelity", item 5): no rule differs. kvsched's ``vllm`` with the V0 options equals
this re-expression iteration for iteration on the 1k run (21,692 iterations, 27 evictions) and on
Vidur's 10k stream (192,161 iterations, 467 evictions), so the 10k gap to Vidur (mean e2e −11 %,
TTFT −26 %, Sarathi within 1 %) is not a scheduling rule but batch times: Vidur's random-forest
predictions round the token count up to a multiple of 8 and the decode context to 64, so its
batches are a little slower, and in vLLM V0's memory-bound stretches (waiting for blocks,
head-of-line restarts) a little speed changes who waits a lot (bench/vidur_fidelity.py: emulating
the rounding on the 1k run brings vLLM to −1.1 % e2e, −6.5 % mean TTFT). Vidur's own 10k output is
not in ../shared/data, so that gap was not re-measured here.

Run: ``python bench/vidur_vllm_reference.py [--num-requests 10000]``. It prints the first iteration
where the two differ (if any) and both runs' means.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kvsched.cost.models import BatchStats
from kvsched.cost.presets import get_preset
from kvsched.engine.simulator import Simulator
from kvsched.policies import make
from kvsched.workload.synthetic import Workload

REPO_ROOT = Path(__file__).resolve().parents[1]
SHAREGPT = REPO_ROOT.parent / "shared" / "data" / "vidur" / "data" / "processed_traces" / \
    "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
PRESET = "llama2-70b-a100-tp2"


def vidur_sharegpt_workload(n: int, *, seed: int = 42, qps: float = 0.5, max_tokens: int = 4096,
                            trace: Path = SHAREGPT) -> Workload:
    """Vidur's synthetic stream (trace lengths, Poisson arrivals), as its generators draw it: lengths
    capped at ``max_tokens`` by shrinking both parts in proportion, rows shuffled with numpy's
    RandomState(seed) (pandas ``sample(frac=1)``), gaps ``-ln(1 - U)/qps`` capped at 3/qps from
    Python's ``random`` seeded with ``seed``."""
    with open(trace, newline="") as f:
        rows = list(csv.DictReader(f))
    prompt = np.array([int(float(r["num_prefill_tokens"])) for r in rows])
    output = np.array([int(float(r["num_decode_tokens"])) for r in rows])
    total = prompt + output
    excess = np.clip(total - max_tokens, 0, None)
    prompt = np.clip(prompt - np.ceil(excess * (prompt / total)).astype(int), 1, None)
    output = np.clip(output - np.ceil(excess * (output / total)).astype(int), 1, None)
    order = np.random.RandomState(seed).permutation(len(rows))[:n]
    rng = random.Random(seed)
    gaps = [min(-math.log(1.0 - rng.random()) / qps, 3.0 / qps) for _ in range(n)]
    return Workload.build(list(np.cumsum(gaps)), prompt[order], output[order], name=f"vidur-sharegpt-{n}")


@dataclass
class _Request:
    """Vidur's Request: ``prefill`` grows on a restart (the processed tokens become the prompt)."""
    rid: int
    arrived: float
    prefill: int
    total: int
    processed: int = 0
    prefill_done: bool = False
    first_token: float = math.nan
    finished: float = math.nan
    restarts: int = 0

    def next_tokens(self) -> int:
        return 1 if self.prefill_done else self.prefill

    def restart(self) -> None:
        self.prefill, self.processed, self.prefill_done = self.processed, 0, False
        self.restarts += 1


@dataclass
class VidurVLLM:
    """The replica scheduler's state and rules (one pipeline stage: one batch in flight)."""
    num_blocks: int
    block_size: int
    max_tokens_in_batch: int
    batch_size_cap: int
    watermark_fraction: float
    queue: list = field(default_factory=list)          # waiting, restarted victims at the front
    preempted: list = field(default_factory=list)      # running between batches
    held: dict = field(default_factory=dict)           # request id -> blocks
    allocated: int = 0

    @property
    def watermark(self) -> int:
        return int(self.watermark_fraction * self.num_blocks)

    def can_allocate(self, r: _Request) -> bool:
        if r.rid not in self.held:                     # new (or restarted): its prompt, above the watermark
            return self.num_blocks - self.allocated - math.ceil(r.prefill / self.block_size) >= self.watermark
        return self.num_blocks - self.allocated >= 1   # running: one free block, whatever it needs

    def allocate(self, r: _Request) -> None:
        if r.rid not in self.held:
            blocks = math.ceil(r.prefill / self.block_size)
        else:
            short = max(0, r.processed - self.held[r.rid] * self.block_size)
            assert short in (0, 1)
            blocks = short
        self.held[r.rid] = self.held.get(r.rid, 0) + blocks
        self.allocated += blocks
        assert self.allocated <= self.num_blocks

    def free(self, r: _Request) -> None:
        self.allocated -= self.held.pop(r.rid)

    def next_batch(self) -> list[tuple[_Request, int]]:
        batch: list[tuple[_Request, int]] = []
        while self.queue:
            r = self.queue[0]
            if not self.can_allocate(r):
                break
            sizes = [n for _, n in batch] + [r.next_tokens()]
            if len(sizes) * max(sizes) > self.max_tokens_in_batch or len(self.held) == self.batch_size_cap:
                break
            self.queue.pop(0)
            self.allocate(r)
            batch.append((r, r.next_tokens()))
        if batch:
            return batch
        self.preempted.sort(key=lambda q: q.arrived)
        while self.preempted and len(batch) < self.batch_size_cap:
            r = self.preempted.pop(0)
            while not self.can_allocate(r):
                victim = self.preempted.pop() if self.preempted else r
                victim.restart()
                self.free(victim)
                self.queue.insert(0, victim)
                if victim is r:
                    break
            else:
                self.allocate(r)
                batch.append((r, r.next_tokens()))
        return batch

    def end_batch(self, batch: list[tuple[_Request, int]], now: float) -> None:
        for r, n in batch:
            r.processed += n
            if r.processed == r.prefill:
                r.prefill_done = True
                r.processed += 1                       # a finished prefill emits a token
                if math.isnan(r.first_token):
                    r.first_token = now
            if r.processed == r.total:
                r.finished = now
                self.free(r)
            else:
                self.preempted.append(r)


def batch_stats(batch: list[tuple[_Request, int]]) -> BatchStats:
    prefills = [n for r, n in batch if not r.prefill_done]
    decode_context = sum(r.processed for r, _ in batch if r.prefill_done)
    return BatchStats(num_prefill_tokens=sum(prefills), num_prefill_seqs=len(prefills),
                      num_decode_seqs=len(batch) - len(prefills), prefill_context_tokens=sum(prefills),
                      prefill_attention_work=sum(n * n for n in prefills), decode_context_tokens=decode_context)


def run_reference(workload: Workload, cost, scheduler: VidurVLLM):
    """Vidur's event order: arrivals join the queue; an idle replica schedules at once; a batch's
    end frees, requeues and schedules the next. Returns (requests, [(start, {id: tokens})])."""
    requests = [_Request(i, float(workload.arrival_time[i]), int(workload.num_prompt_tokens[i]),
                         int(workload.num_prompt_tokens[i] + workload.true_output_tokens[i]))
                for i in range(workload.num_requests)]
    now, nxt, log = 0.0, 0, []
    while nxt < len(requests) or scheduler.queue or scheduler.preempted:
        while nxt < len(requests) and requests[nxt].arrived <= now:
            scheduler.queue.append(requests[nxt])
            nxt += 1
        batch = scheduler.next_batch()
        if not batch:
            now = max(now, requests[nxt].arrived)
            continue
        log.append((now, {r.rid: n for r, n in batch}))
        now += cost.iteration_time(batch_stats(batch))
        scheduler.end_batch(batch, now)
    return requests, log


def run_kvsched(workload: Workload, cost, capacity_tokens: int, block_size: int, **vllm):
    sim = Simulator(cost, capacity_tokens, block_size=block_size, record_iterations=True)
    return sim.run(workload, make("vllm", **vllm))


def first_difference(log, iterations) -> int | None:
    for k, ((start, tokens), it) in enumerate(zip(log, iterations)):
        if tokens != dict(it.num_tokens) or not math.isclose(start, it.start_time, rel_tol=1e-9, abs_tol=1e-9):
            return k
    return None if len(log) == len(iterations) else min(len(log), len(iterations))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-requests", type=int, default=1000)
    args = parser.parse_args(argv)
    preset = get_preset(PRESET)
    block, slots = 16, 13                              # Vidur config.json; 13 slots × 4096 / 16 blocks
    num_blocks = slots * 4096 // block
    workload = vidur_sharegpt_workload(args.num_requests)
    ref = VidurVLLM(num_blocks=num_blocks, block_size=block, max_tokens_in_batch=4096,
                    batch_size_cap=128, watermark_fraction=0.01)
    requests, log = run_reference(workload, preset.cost, ref)
    ours = run_kvsched(workload, preset.cost, num_blocks * block, block, enable_chunked_prefill=False,
                       watermark=0.01, max_num_batched_tokens=4096, max_num_seqs=128, prefill_first=True,
                       padded_prefill_budget=True, preempt_victim="last_arrived", decode_needs_free_block=True)
    k = first_difference(log, ours.iterations)
    print(f"{args.num_requests} requests: reference {len(log)} iterations, kvsched {len(ours.iterations)}; "
          f"first difference: {'none' if k is None else f'iteration {k}'}")
    if k is not None:
        print(f"  reference: t={log[k][0]:.6f} {sorted(log[k][1].items())[:12]}")
        it = ours.iterations[k]
        print(f"  kvsched:   t={it.start_time:.6f} {sorted(it.num_tokens.items())[:12]} evicted {it.evicted}")
    arrival = workload.arrival_time
    for label, first, finish, evictions in (
            ("reference", np.array([r.first_token for r in requests]), np.array([r.finished for r in requests]),
             sum(r.restarts for r in requests)),
            ("kvsched", ours.first_token_time, ours.finish_time, int(ours.num_evictions.sum()))):
        print(f"  {label:<9} mean e2e {np.mean(finish - arrival):8.3f} s, mean TTFT {np.mean(first - arrival):7.3f} s, "
              f"evictions {evictions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
