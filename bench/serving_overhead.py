"""Serving overhead of `KVSchedScheduler`: scheduling time per step at 2,000 queued requests
against vLLM's own scheduler, and memory over thousands of served requests.

    python bench/serving_overhead.py                 # the full set (a few minutes on 2 cores)
    python bench/serving_overhead.py --quick         # fewer steps
    python bench/serving_overhead.py --seed 1        # another request stream

Scheduler level, without a model, as vLLM's own scheduler tests build one
(`kvsched.integrations.vllm.harness`): the same `VllmConfig` (block size 16, 8,192-token budget,
256 seats, 16,384 KV blocks, chunked prefill, prefix caching off) and the same requests for every
scheduler; the model's part is played by `harness.fake_model_output` (one token per finished
prefill, ``ignore_eos`` outputs). Each step's ``schedule()`` is timed alone (perf_counter), and
``update_from_output`` apart; the waiting queue is topped up to ``--queued`` requests before every
step, so every step schedules against that many queued requests. The schedulers run in lockstep
(one step of each in turn), so load from other processes falls on all of them alike. Each step is
also split into vLLM's base ``Scheduler.schedule`` (for `KVSchedScheduler` the base loop restricted
to the policy's plan: the engine's own work on the policy's batch) and the rest, kvsched's part
(sync, view, policy, plan, record): the first moves with the batches a policy chooses, the second
is what the adapter adds. Prompts are uniform on 64..1024 tokens, outputs on 16..512, drawn
with ``--seed`` (0 by default).

Memory: tracemalloc's traced bytes after equal rounds of served requests (each round adds
``--round`` requests and steps until all are finished), once the trace ring is full. Flat means no
growth from round to round (the test `test_serving_memory_stays_flat_over_2000_requests` asserts
< 64 KiB over 2,000 requests).

Figures (2 CPU cores, shared; `python bench/serving_overhead.py`, 200 steps, the schedulers in
lockstep; each ratio from one invocation, 2026-12-05): median schedule() per step vLLM's own
2.34-3.82 ms; with the adapter's default (trace off) kvsched ``vllm`` 1.23-1.32x, ``sarathi``
0.43-0.50x (smaller batches: chunk 512), ``mcsf`` 1.39, 1.35 (``--seed 1``), 1.39, and 1.41x with
heavy load on the machine (vLLM's own step 3.8 ms); 2026-12-07, with the seat-aware `Batch`:
``mcsf`` 1.42 and 1.44x (``--seed 1``), ``vllm`` 1.26-1.27x, ``sarathi`` 0.50-0.52x (earlier
that day, without it: ``mcsf`` 1.42 and 1.28x, vLLM's own step 3.0 and 4.7 ms); with a trace
ring of 256 steps
(``--trace-keep 256``) ``mcsf`` 1.35-1.53x. The day's cuts: the views read a served request's
progress from vLLM's request (no copy per step), the view's running requests are looked up only
when the policy reads them and its waiting requests are a window, not a copy, so the sync reads
vLLM's requests only (a paired run, old and new tree in one process: about 4.5% less per mcsf
step); the trace is off by default, so no record is built (about 3.5% more). Before them mcsf
was 1.43-1.55x with the 256-step ring. The split: vLLM's part of an mcsf step is 0.94-1.01x of
its own whole step (MC-SF admits about 3.7 requests per step, FCFS about 1: more prefills for
vLLM to set up), kvsched's part 0.37-0.42x (``vllm``: 0.35-0.41x): the sync with the engine (a
pass over the running requests, the first to touch them in a step: most of its cost is vLLM's
requests' memory, which vLLM's own part then finds warm), the policy (about a third: its
future-memory checks are numpy calls, and the first numpy call of a step costs about 40 us
against 2 us warm), the plan, the queue take, the view. The ratios move with the machine's load
because kvsched's part is mostly memory traffic, not instructions. Memory over 8 rounds of 250
served requests, trace off: +0.4-0.8 KiB (``vllm``), +9.7-11.2 KiB (``amin``: dict high waters
and a cache inside numpy's cumsum, which grows ever slower: bounded); with a ring of 256:
+15.3-15.7 and +20.0-21.0 KiB, the ring's records (request ids above 256, which Python
allocates; bounded by the ring's size).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import tempfile
import time
import tracemalloc

import numpy as np

from kvsched.integrations.vllm import harness
from kvsched.integrations.vllm.tiny_model import build_tiny_llama

SCHEDULERS = ("vllm-own", "kvsched:vllm", "kvsched:sarathi", "kvsched:mcsf")


def _config(model: str, policy: str | None, trace_keep: str | None = None) -> harness.HarnessConfig:
    extra = {"kvsched_policy": policy} if policy else None
    if extra and trace_keep is not None:
        extra["kvsched_trace_keep"] = trace_keep
    return harness.HarnessConfig(model, num_blocks=16_384, block_size=16, max_num_seqs=256,
                                 max_num_batched_tokens=8192, max_model_len=2048, additional_config=extra)


def _build(model: str, name: str, trace_keep: str | None = None):
    from kvsched.integrations.vllm.scheduler import KVSchedScheduler
    if name == "vllm-own":
        return harness.build_scheduler(_config(model, None))
    return harness.build_scheduler(_config(model, name.split(":", 1)[1], trace_keep), KVSchedScheduler)


def _lengths(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    return list(zip(rng.integers(64, 1025, n).tolist(), rng.integers(16, 513, n).tolist()))


@contextlib.contextmanager
def _base_schedule_timer(spent: list[float]):
    """Time vLLM's own ``Scheduler.schedule`` inside each step: for vLLM's scheduler that is the
    whole step; `KVSchedScheduler` calls it (restricted to the policy's plan) from its own
    schedule(), so the rest of its step is kvsched's part. The sum of a step's calls is appended
    to `spent` by the caller."""
    from vllm.v1.core.sched.scheduler import Scheduler
    own = Scheduler.schedule

    def timed(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return own(self, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0

    Scheduler.schedule = timed
    try:
        yield
    finally:
        Scheduler.schedule = own


def time_steps(model: str, names, queued: int, steps: int, seed: int = 0, trace_keep: str | None = None) -> list[dict]:
    """Per-step schedule() and update times with `queued` requests waiting before every step,
    and each step's split into vLLM's base schedule() and the rest (kvsched's part).

    The schedulers run in lockstep (step k of each, in turn, then step k + 1), each on its own
    copy of the same request stream, so a noisy machine slows them alike and the ratios hold."""
    runs = []
    for name in names:
        rng = np.random.default_rng(seed)
        runs.append({"name": name, "scheduler": _build(model, name, trace_keep),
                     "pending": iter(_lengths(rng, queued + 300 * steps)),
                     "schedule_ms": [], "base_ms": [], "update_ms": [], "batch": []})
    spent = [0.0]
    with _base_schedule_timer(spent):
        for _ in range(steps + 5):
            for run in runs:
                scheduler, pending = run["scheduler"], run["pending"]
                while len(scheduler.waiting) < queued:
                    prompt, output = next(pending)
                    scheduler.add_request(harness.make_request(prompt, output))
                spent[0] = 0.0
                t0 = time.perf_counter()
                out = scheduler.schedule()
                t1 = time.perf_counter()
                scheduler.update_from_output(out, harness.fake_model_output(scheduler, out))
                t2 = time.perf_counter()
                run["schedule_ms"].append(1e3 * (t1 - t0))
                run["base_ms"].append(1e3 * spent[0])
                run["update_ms"].append(1e3 * (t2 - t1))
                run["batch"].append(len(out.num_scheduled_tokens))
    rows = []
    for run in runs:
        schedule_ms, update_ms, batch = run["schedule_ms"][5:], run["update_ms"][5:], run["batch"][5:]
        base_ms = run["base_ms"][5:]
        rows.append({"scheduler": run["name"], "median_schedule_ms": statistics.median(schedule_ms),
                     "mean_schedule_ms": statistics.fmean(schedule_ms),
                     "p90_schedule_ms": float(np.percentile(schedule_ms, 90)),
                     "median_base_ms": statistics.median(base_ms),
                     "median_own_ms": statistics.median(t - b for t, b in zip(schedule_ms, base_ms)),
                     "median_update_ms": statistics.median(update_ms), "mean_batch": statistics.fmean(batch),
                     "running_at_end": len(run["scheduler"].running)})     # warm-up steps dropped
    return rows


def memory_rounds(model: str, policy: str, rounds: int, per_round: int, ring: int = 0) -> list[int]:
    """Traced bytes after each round of `per_round` served requests (after the warm-up rounds,
    and once a trace ring of `ring` steps is full; 0: the trace off, the default)."""
    from kvsched.integrations.vllm.scheduler import KVSchedScheduler
    scheduler = harness.build_scheduler(harness.HarnessConfig(
        model, num_blocks=512, block_size=16, max_num_seqs=32, max_num_batched_tokens=512,
        additional_config={"kvsched_policy": policy, "kvsched_trace_keep": ring}), KVSchedScheduler)
    rng = np.random.default_rng(1)

    def serve() -> int:
        for prompt, output in zip(rng.integers(16, 65, per_round).tolist(), rng.integers(2, 9, per_round).tolist()):
            scheduler.add_request(harness.make_request(prompt, output))
        while scheduler.has_requests():
            harness.step(scheduler)
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    try:
        serve()
        while len(scheduler.kvsched_trace) < ring:
            serve()
        return [serve() for _ in range(rounds)]
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    parser.add_argument("--queued", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--round", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0, help="seed of the request stream")
    parser.add_argument("--trace-keep", default=None,
                        help="kvsched_trace_keep for the kvsched schedulers (default: the adapter's, off)")
    args = parser.parse_args()
    steps = 50 if args.quick else args.steps
    with tempfile.TemporaryDirectory() as folder:
        model = str(build_tiny_llama(folder))
        rows = time_steps(model, SCHEDULERS, args.queued, steps, args.seed, args.trace_keep)
        base = rows[0]["median_schedule_ms"]
        trace = "off" if args.trace_keep is None else args.trace_keep
        print(f"schedule() per step with {args.queued} queued requests, {steps} steps, seed {args.seed} "
              f"(block 16, budget 8192, 256 seats, 16384 blocks; kvsched trace {trace}):")
        print(f"{'scheduler':18s} {'median ms':>10s} {'mean ms':>9s} {'p90 ms':>8s} {'x vLLM':>7s} "
              f"{'vLLM part':>10s} {'kvsched part':>13s} {'x vLLM':>7s} {'update ms':>10s} {'batch':>7s}")
        for r in rows:
            print(f"{r['scheduler']:18s} {r['median_schedule_ms']:10.3f} {r['mean_schedule_ms']:9.3f} "
                  f"{r['p90_schedule_ms']:8.3f} {r['median_schedule_ms'] / base:7.2f} "
                  f"{r['median_base_ms']:10.3f} {r['median_own_ms']:13.3f} {r['median_own_ms'] / base:7.2f} "
                  f"{r['median_update_ms']:10.3f} {r['mean_batch']:7.1f}")
        print("vLLM part: vLLM's base schedule() within the step (for kvsched, restricted to the "
              "policy's plan); kvsched part: the rest (view, policy, plan, sync, record), its "
              "'x vLLM' against vLLM's own whole step")
        rounds = 4 if args.quick else 8
        for policy, ring in (("vllm", 0), ("amin", 0), ("vllm", 256), ("amin", 256)):
            memory = memory_rounds(model, policy, rounds, args.round, ring)
            print(f"memory, kvsched:{policy}, trace {'ring ' + str(ring) if ring else 'off'}, traced KiB after "
                  f"each of {rounds} rounds of {args.round} served requests: {[round(m / 1024, 1) for m in memory]} "
                  f"(growth {(max(memory) - memory[0]) / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
