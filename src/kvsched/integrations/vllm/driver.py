"""Drive an in-process vLLM V1 engine with a kvsched `Workload`, and compare it with the simulator.

`run_engine` adds each request when its arrival time is reached on the driver's clock and steps
the engine until every request has finished. Two clocks:

- ``"virtual"``: the simulator's clock. Each step that computes tokens lasts
  ``cost.iteration_time(batch)`` (`UnitTime`: 1); when the engine schedules nothing the clock
  jumps to the next arrival or to the policy's ``wake_time``, whichever comes first. Decisions can then be compared with the simulator step by step.
- ``"wall"``: real seconds since the start; arrivals wait for their time (the driver sleeps when
  the engine is idle). Latencies are the engine's real ones.

Per-request figures (first scheduled, first token, finish, evictions, recomputed tokens) are
replayed from the scheduler's trace with vLLM's token rule, and the engine's own outputs are
checked against them (each request returns exactly its ``max_tokens`` tokens). Requests that
vLLM cannot serve in the KV capacity are rejected before they reach the engine: prompt + output
s + o must not exceed ``max_model_len``, which vLLM requires to fit in the KV cache. This is one
token stricter than the simulator, which rejects only when the peak KV s + o - 1 exceeds the
capacity: a request with s + o - 1 == capacity runs in the simulator and not in vLLM (the
comparison reports it).

`simulate_like` runs the simulator with the engine's block size, capacity and token budget, and
`compare` lines the two traces up: batch composition and tokens per step, preemptions per step,
KV blocks used per step, admission order and per-request eviction counts.
"""

from __future__ import annotations

import gc
import heapq
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ...cost.models import BatchStats, CostModel, UnitTime
from ...engine.simulator import IterationRecord, RunResult, Simulator
from ...errors import ConfigError, StalledError
from ...engine import rules
from ...engine.rules import KVConvention
from ...engine.validation import Tally
from ...workload.synthetic import Workload
from .limits import EngineLimits, policy_for_engine
from .tiny_model import TINY_VOCAB_SIZE, kv_bytes_per_block

DEFAULT_SCHEDULER = "vllm-default"
MAX_RECORDED_DIFFERENCES = 10


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How the vLLM engine is built. ``num_gpu_blocks`` includes vLLM's null block, so the KV
    capacity is ``(num_gpu_blocks - 1) * block_size`` tokens. vLLM's CPU attention backend needs
    a block size that is a multiple of 32 (hence the default; a GPU build also takes 16).
    ``reserve_full_isl`` is vLLM's ``scheduler_reserve_full_isl`` (True by default in vLLM
    0.32): a waiting request is admitted only if its whole input (prompt + generated tokens) fits,
    not just its first chunk — kvsched's ``vllm`` policy calls this ``full_prompt_must_fit``.
    ``prefix_caching``: vLLM's automatic prefix caching (``enable_prefix_caching``), and the
    simulator's (``Simulator(prefix_caching=True)``) in `simulate_like`."""

    model: str
    num_gpu_blocks: int
    block_size: int = 32
    max_num_batched_tokens: int = 256
    max_num_seqs: int = 64
    max_model_len: int | None = None
    reserve_full_isl: bool = True
    prefix_caching: bool = False
    dtype: str = "bfloat16"
    seed: int = 0
    vocab_size: int = TINY_VOCAB_SIZE

    def __post_init__(self) -> None:
        if self.num_gpu_blocks < 2:
            raise ConfigError("num_gpu_blocks must be at least 2 (vLLM keeps one null block)")
        if self.block_size < 1 or self.max_num_batched_tokens < 1 or self.max_num_seqs < 1:
            raise ConfigError("block_size, max_num_batched_tokens and max_num_seqs must be >= 1")

    @property
    def kv_capacity_tokens(self) -> int:
        return (self.num_gpu_blocks - 1) * self.block_size

    @property
    def limits(self) -> EngineLimits:
        """The limits the engine is built with (chunked prefill is always on), which
        `KVSchedScheduler` reads back from vLLM's config and `simulate_like` gives the policy."""
        return EngineLimits(self.max_num_seqs, self.max_num_batched_tokens, self.block_size,
                            self.reserve_full_isl, True)


@dataclass
class EngineRun:
    """What `run_engine` returns: the scheduler's trace and the per-request results."""

    scheduler: str
    trace: list            # StepRecord per engine step
    result: RunResult
    startup_time: float
    wall_time: float


# --------------------------------------------------------------------------- token replay

class _Replay:
    """vLLM's token rule over a trace: per-request progress, batch stats and timings."""

    def __init__(self, workload: Workload) -> None:
        n = len(workload)
        self.prompt = workload.num_prompt_tokens.astype(np.int64)
        self.true_output = workload.true_output_tokens.astype(np.int64)
        self.computed = np.zeros(n, np.int64)
        self.generated = np.zeros(n, np.int64)
        self.high_water = np.zeros(n, np.int64)
        self.total = np.zeros(n, np.int64)
        self.recomputed = np.zeros(n, np.int64)
        self.evictions = np.zeros(n, np.int64)
        self.cached = np.zeros(n, np.int64)
        self.lookup = np.zeros(n, np.int64)
        self.first_scheduled = np.full(n, np.nan)
        self.first_token = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.num_done = 0

    def preempt(self, ids) -> None:
        for r in ids:
            self.computed[r] = 0
            self.evictions[r] += 1

    def admit(self, hits: dict[int, int]) -> None:
        """Requests admitted with a prefix-cache hit start from it (`StepRecord.num_cached_tokens`)."""
        for r, hit in hits.items():
            self.computed[r] = hit
            self.cached[r] += hit
            self.lookup[r] += self.prompt[r] + self.generated[r]

    def batch(self, num_tokens: dict[int, int]) -> BatchStats:
        tally = Tally(0)
        for r, n in num_tokens.items():
            prompt, outputs, computed = int(self.prompt[r]), int(self.generated[r]), int(self.computed[r])
            tally.add(n, computed + n, rules.is_decode_step(prompt, outputs, computed, n))
        return tally.batch()

    def advance(self, num_tokens: dict[int, int], start: float, end: float) -> list[int]:
        """Advance the requests of one step; returns those that finished in it."""
        finished = []
        for r, n in num_tokens.items():
            step = rules.advance(int(self.prompt[r]), int(self.generated[r]), int(self.computed[r]),
                                 int(self.high_water[r]), n)
            self.computed[r], self.high_water[r], self.generated[r] = step.computed, step.high_water, step.outputs
            self.recomputed[r] += step.num_recomputed_tokens
            self.total[r] += n
            if np.isnan(self.first_scheduled[r]):
                self.first_scheduled[r] = start
            if step.emitted:
                if np.isnan(self.first_token[r]):
                    self.first_token[r] = end
                if self.generated[r] == self.true_output[r]:
                    self.finish[r] = end
                    self.num_done += 1
                    finished.append(r)
        return finished


# --------------------------------------------------------------------------- the engine

def _make_engine(settings: EngineSettings, scheduler_cls: str, policy: str | None, strict: bool,
                 max_model_len: int):
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"     # in-process: the driver reads the trace
    from vllm import EngineArgs, LLMEngine
    additional = {"kvsched_trace_keep": "all"}       # the driver replays every step
    if policy is not None:
        additional.update(kvsched_policy=policy, kvsched_strict=strict)
    args = EngineArgs(
        model=settings.model, skip_tokenizer_init=True, enforce_eager=True, dtype=settings.dtype,
        seed=settings.seed, block_size=settings.block_size,
        num_gpu_blocks_override=settings.num_gpu_blocks,
        kv_cache_memory_bytes=settings.num_gpu_blocks * kv_bytes_per_block(settings.block_size),
        gpu_memory_utilization=0.05, max_model_len=max_model_len,
        max_num_batched_tokens=settings.max_num_batched_tokens, max_num_seqs=settings.max_num_seqs,
        enable_prefix_caching=settings.prefix_caching, async_scheduling=False, enable_chunked_prefill=True,
        scheduler_cls=scheduler_cls,
        scheduler_reserve_full_isl=settings.reserve_full_isl,
        additional_config=additional)
    return LLMEngine.from_engine_args(args)


def _scheduler_of(engine):
    return engine.engine_core.engine_core.scheduler


SEGMENT_SEED = 1_000_033      # token ids of segment x: default_rng([SEGMENT_SEED, x]), a prefix per length


def _prompt_ids(workload: Workload, i: int, vocab_size: int, outputs: dict[int, list[int]]) -> list[int]:
    """Request i's prompt as token ids. Without `Workload.segments`, random ids of its own; with
    them, each piece (x, L) is segment x's first L ids (the same in every prompt that names it), or,
    for x = -(j + 1), the first L tokens the engine generated for request j (a follow-up turn's
    previous answer; j has finished by then)."""
    if workload.segments is None:
        rng = np.random.default_rng(1_000_003 + i)
        return rng.integers(3, vocab_size, size=int(workload.num_prompt_tokens[i])).tolist()
    ids: list[int] = []
    for segment, length in workload.segments.of(i):
        if segment >= 0:
            ids += np.random.default_rng([SEGMENT_SEED, segment]).integers(3, vocab_size, size=length).tolist()
            continue
        j = -segment - 1
        if j not in outputs:
            raise ConfigError(f"request {i}'s prompt holds request {j}'s output, which the engine has not "
                              "generated yet (only a follow-up turn, Workload.parent, may name an output)")
        ids += outputs[j][:length]
    return ids


class _Arrivals:
    """The requests still to come, as the simulator releases them: open-loop requests at their
    arrival times; follow-up turns (`Workload.parent`) a think time after their previous turn
    finishes; a rejected request's follow-ups are rejected with it and never arrive."""

    def __init__(self, workload: Workload, rejected: np.ndarray) -> None:
        self.arrival = workload.arrival_time.astype(np.float64).copy()      # realised for follow-ups
        self.think = workload.think_time
        parent = workload.parent if workload.is_closed_loop else None
        self.closed_loop = parent is not None
        self.followups: dict[int, list[int]] = {}
        if parent is not None:
            for child in np.flatnonzero(parent >= 0).tolist():
                self.followups.setdefault(int(parent[child]), []).append(child)
                if rejected[parent[child]]:          # rows are sorted: a parent comes first
                    rejected[child] = True
                    self.arrival[child] = np.nan
        self.open = [i for i in range(len(workload)) if parent is None or parent[i] < 0]
        self.next = 0
        self.released: list[tuple[float, int]] = []

    def next_time(self) -> float | None:
        times = [self.arrival[self.open[self.next]]] if self.next < len(self.open) else []
        if self.released:
            times.append(self.released[0][0])
        return min(times) if times else None

    def has_future(self) -> bool:
        """As `Simulation.has_future_arrivals`: follow-ups not released yet do not count."""
        return self.next < len(self.open) or bool(self.released)

    def due(self, now: float) -> list[int]:
        """The requests arrived by `now`, in (arrival, id) order (the simulator's queue order)."""
        due = []
        while self.next < len(self.open) and self.arrival[self.open[self.next]] <= now:
            due.append(self.open[self.next])
            self.next += 1
        while self.released and self.released[0][0] <= now:
            due.append(heapq.heappop(self.released)[1])
        return sorted(due, key=lambda i: (self.arrival[i], i))

    def finished(self, request: int, end: float) -> None:
        for child in self.followups.pop(request, ()):
            self.arrival[child] = end + float(self.think[child])
            heapq.heappush(self.released, (self.arrival[child], child))


def _extra_args(workload: Workload, i: int, arrival_time: float) -> dict:
    meta = {"request_id": i, "arrival_time": arrival_time}
    for key, column in (("predicted_output_tokens", workload.predicted_output_tokens),
                        ("predicted_lo", workload.predicted_lo), ("predicted_hi", workload.predicted_hi),
                        ("type_id", workload.type_id)):
        if column is not None:
            meta[key] = float(column[i]) if key == "predicted_output_tokens" else int(column[i])
    return {"kvsched": meta}


def run_engine(workload: Workload, settings: EngineSettings, policy: str | None = None, *,
               clock: str = "virtual", cost: CostModel | None = None, strict: bool = True,
               progress: Callable[[int, int], None] | None = None) -> EngineRun:
    """Serve `workload` with vLLM: its default scheduler (``policy=None``) or a kvsched policy spec
    through `KVSchedScheduler`. Returns the trace and per-request results (times on `clock`)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    if clock not in ("virtual", "wall"):
        raise ConfigError(f"--clock: expected 'virtual' or 'wall', got {clock!r}")
    cost = cost or UnitTime()
    n = len(workload)
    capacity_blocks = settings.num_gpu_blocks - 1
    too_large = [rules.rejection_reason(int(workload.num_prompt_tokens[i]), int(workload.true_output_tokens[i]),
                                        KVConvention.COMPUTED, capacity_blocks, settings.block_size) is not None
                 for i in range(n)]
    # vLLM serves a request only if prompt + max_tokens <= max_model_len <= the KV capacity (it
    # checks at start that one max_model_len request fits): one token stricter than the
    # simulator's peak rule (s + o - 1 <= capacity), see _rejections.
    lengths = [int(workload.num_prompt_tokens[i] + workload.true_output_tokens[i]) for i in range(n)]
    rejected = np.array([big or length > settings.kv_capacity_tokens
                         for big, length in zip(too_large, lengths)], dtype=bool)
    max_model_len = settings.max_model_len or max(
        [length for length, r in zip(lengths, rejected) if not r] + [settings.block_size])
    scheduler_cls = ("kvsched.integrations.vllm.RecordingScheduler" if policy is None
                     else "kvsched.integrations.vllm.KVSchedScheduler")

    started = time.perf_counter()
    engine = _make_engine(settings, scheduler_cls, policy, strict, max_model_len)
    startup_time = time.perf_counter() - started
    scheduler = _scheduler_of(engine)
    state = {"now": 0.0, "next": 0}
    t0 = time.perf_counter()
    if clock == "wall":
        scheduler.kvsched_clock = lambda: time.perf_counter() - t0
    else:
        scheduler.kvsched_clock = lambda: state["now"]
    arrivals = _Arrivals(workload, rejected)
    scheduler.kvsched_has_future_arrivals = arrivals.has_future
    replay = _Replay(workload)
    replay.num_done = int(rejected.sum())
    output_ids: dict[int, list[int]] = {}
    iterations: list[IterationRecord] = []
    returned: dict[str, int] = {}
    busy = kv_token_seconds = 0.0
    kv_peak = 0
    pending_preempted: list[int] = []

    def now() -> float:
        return time.perf_counter() - t0 if clock == "wall" else state["now"]

    try:
        while replay.num_done < n:
            for i in arrivals.due(now()):
                if rejected[i]:
                    continue
                params = SamplingParams(max_tokens=int(workload.true_output_tokens[i]), ignore_eos=True,
                                        detokenize=False,
                                        extra_args=_extra_args(workload, i, float(arrivals.arrival[i])))
                prompt_ids = _prompt_ids(workload, i, settings.vocab_size, output_ids)
                engine.add_request(str(i), TokensPrompt(prompt_token_ids=prompt_ids), params)
            if not engine.has_unfinished_requests():
                upcoming = arrivals.next_time()
                if upcoming is None:
                    break
                _wait_until(state, upcoming, clock, t0)
                continue
            start = now()
            num_records = len(scheduler.kvsched_trace)
            outputs = engine.step()
            for out in outputs:
                if out.finished:
                    returned[out.request_id] = len(out.outputs[0].token_ids)
                    output_ids[int(out.request_id)] = list(out.outputs[0].token_ids)
            for record in scheduler.kvsched_trace[num_records:]:
                replay.preempt(record.preempted)
                pending_preempted.extend(record.preempted)
                replay.admit(record.num_cached_tokens)
                if not record.num_tokens:
                    continue
                batch = replay.batch(record.num_tokens)
                if clock == "virtual":
                    duration = float(cost.iteration_time(batch))
                else:
                    duration = now() - start
                used = record.kv_used_blocks * settings.block_size
                iterations.append(IterationRecord(start, duration, dict(record.num_tokens),
                                                  tuple(pending_preempted), used))
                pending_preempted = []
                for r in replay.advance(record.num_tokens, start, start + duration):
                    arrivals.finished(r, start + duration)
                busy += duration
                kv_peak = max(kv_peak, used)
                kv_token_seconds += used * duration
                if clock == "virtual":
                    state["now"] = start + duration
            if not scheduler.kvsched_trace[num_records:] or not scheduler.kvsched_trace[-1].num_tokens:
                _idle(state, scheduler, arrivals, clock, t0, n - replay.num_done)
            if progress is not None:
                progress(replay.num_done, n)
        trace = list(scheduler.kvsched_trace)
    finally:
        _shutdown(engine)
    wall_time = time.perf_counter() - t0
    _check_outputs(workload, rejected, returned)
    result = RunResult(
        policy=policy or DEFAULT_SCHEDULER, workload=workload, kv_capacity_tokens=settings.kv_capacity_tokens,
        first_scheduled_time=replay.first_scheduled, first_token_time=replay.first_token,
        finish_time=replay.finish, num_evictions=replay.evictions,
        num_recomputed_tokens=replay.recomputed, total_computed_tokens=replay.total, rejected=rejected,
        reject_reasons={int(i): _reject_reason(workload, int(i), settings) for i in np.flatnonzero(rejected)},
        num_iterations=len(iterations), busy_time=busy, kv_peak_tokens=kv_peak,
        kv_token_seconds=kv_token_seconds, wall_time=wall_time, iterations=iterations,
        num_cached_tokens=replay.cached if settings.prefix_caching else None,
        num_lookup_tokens=replay.lookup if settings.prefix_caching else None,
        realized_arrival_time=arrivals.arrival if arrivals.closed_loop else None)
    return EngineRun(policy or DEFAULT_SCHEDULER, trace, result, startup_time, wall_time)


def _reject_reason(workload: Workload, i: int, settings: EngineSettings) -> str:
    prompt, output = int(workload.num_prompt_tokens[i]), int(workload.true_output_tokens[i])
    peak = rules.peak_kv_tokens(prompt, output, KVConvention.COMPUTED)
    return (f"prompt + output = {prompt + output} tokens (KV peak {peak}); vLLM needs it <= "
            f"max_model_len <= the KV capacity, {settings.kv_capacity_tokens} tokens")


def _idle(state: dict, scheduler, arrivals: _Arrivals, clock: str, t0: float, num_left: int) -> None:
    """Nothing scheduled: wait for the next arrival or the policy's wake_time (as the simulator)."""
    now = time.perf_counter() - t0 if clock == "wall" else state["now"]
    upcoming = arrivals.next_time()
    candidates = [float(upcoming)] if upcoming is not None else []
    wake = getattr(scheduler, "kvsched_wake_time", None)
    if wake is not None and wake > now:
        candidates.append(float(wake))
    if not candidates:
        raise StalledError(f"the engine scheduled nothing at t={now:g} with {num_left} requests "
                           "unfinished and none to arrive")
    _wait_until(state, min(candidates), clock, t0)


def _wait_until(state: dict, when: float, clock: str, t0: float) -> None:
    if clock == "virtual":
        state["now"] = max(state["now"], when)
    else:
        delay = when - (time.perf_counter() - t0)
        if delay > 0:
            time.sleep(delay)


def _check_outputs(workload: Workload, rejected: np.ndarray, returned: dict[str, int]) -> None:
    for i in np.flatnonzero(~rejected):
        got, want = returned.get(str(i)), int(workload.true_output_tokens[i])
        if got != want:
            raise RuntimeError(f"request {i}: the engine returned {got} tokens, expected {want}")


def _shutdown(engine) -> None:
    try:
        engine.engine_core.shutdown()
    except Exception:      # noqa: BLE001 (best effort: the engine may be half-built)
        pass
    del engine
    gc.collect()


# --------------------------------------------------------------------------- the simulator side

def simulate_like(workload: Workload, settings: EngineSettings, policy: str | None, *,
                  cost: CostModel | None = None) -> RunResult:
    """The simulator configured as the engine: block size, capacity, token budget, COMPUTED KV.

    ``policy=None`` stands for vLLM's default scheduler: kvsched's ``vllm`` policy. Either way
    the policy takes the engine's limits as `KVSchedScheduler` does (`policy_for_engine`):
    ``max_num_batched_tokens``, ``max_num_seqs``, ``full_prompt_must_fit`` = ``reserve_full_isl``,
    ``enable_chunked_prefill``, where the policy has them and the spec does not name them.
    """
    pol, _, _ = policy_for_engine(policy or "vllm", settings.limits)
    sim = Simulator(cost or UnitTime(), settings.kv_capacity_tokens, block_size=settings.block_size,
                    kv_convention=KVConvention.COMPUTED,
                    max_num_batched_tokens=settings.max_num_batched_tokens, record_iterations=True,
                    prefix_caching=settings.prefix_caching)
    return sim.run(workload, pol)


# --------------------------------------------------------------------------- comparison

@dataclass
class Comparison:
    """Engine vs simulator, iteration by iteration (iterations that compute tokens)."""

    num_engine_iterations: int
    num_sim_iterations: int
    num_batch_mismatches: int = 0        # different requests or token counts
    num_preemption_mismatches: int = 0
    num_kv_mismatches: int = 0
    first_divergence: int | None = None
    admission_order_equal: bool = True
    evictions_equal: bool = True
    rejections_equal: bool = True
    cached_tokens_equal: bool = True     # per request, with prefix caching
    arrivals_equal: bool = True          # realised arrivals of follow-up turns (closed loop)
    differences: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return (self.num_engine_iterations == self.num_sim_iterations and self.num_batch_mismatches == 0
                and self.num_preemption_mismatches == 0 and self.num_kv_mismatches == 0
                and self.admission_order_equal and self.evictions_equal and self.rejections_equal
                and self.cached_tokens_equal and self.arrivals_equal)

    def note(self, text: str) -> None:
        if len(self.differences) < MAX_RECORDED_DIFFERENCES:
            self.differences.append(text)


def admission_order(iterations: list[IterationRecord], workload: Workload) -> list[int]:
    """Request ids in the order they were admitted (re-admissions after eviction included)."""
    replay = _Replay(workload)
    resident: set[int] = set()
    order = []
    for it in iterations:
        resident -= set(it.evicted)
        replay.preempt(it.evicted)
        for r in it.num_tokens:
            if r not in resident:
                order.append(r)
                resident.add(r)
        replay.advance(it.num_tokens, 0.0, 0.0)
        resident = {r for r in resident if np.isnan(replay.finish[r])}
    return order


def compare(engine: RunResult, sim: RunResult) -> Comparison:
    """Line up two recorded runs of the same workload (engine first)."""
    e_its, s_its = engine.iterations or [], sim.iterations or []
    cmp = Comparison(len(e_its), len(s_its))
    if len(e_its) != len(s_its):
        cmp.note(f"{len(e_its)} engine iterations, {len(s_its)} simulated")
    for k, (e, s) in enumerate(zip(e_its, s_its)):
        diverged = False
        if dict(e.num_tokens) != dict(s.num_tokens):
            cmp.num_batch_mismatches += 1
            diverged = True
            cmp.note(f"iteration {k}: engine batch {dict(e.num_tokens)}, simulator {dict(s.num_tokens)}")
        if sorted(e.evicted) != sorted(s.evicted):
            cmp.num_preemption_mismatches += 1
            diverged = True
            cmp.note(f"iteration {k}: engine preempted {sorted(e.evicted)}, simulator {sorted(s.evicted)}")
        if e.kv_used_tokens != s.kv_used_tokens:
            cmp.num_kv_mismatches += 1
            diverged = True
            cmp.note(f"iteration {k}: engine KV {e.kv_used_tokens} tokens, simulator {s.kv_used_tokens}")
        if diverged and cmp.first_divergence is None:
            cmp.first_divergence = k
    e_order, s_order = admission_order(e_its, engine.workload), admission_order(s_its, sim.workload)
    cmp.admission_order_equal = e_order == s_order
    if not cmp.admission_order_equal:
        cmp.note(f"admission order: engine {e_order[:20]}…, simulator {s_order[:20]}…")
    cmp.evictions_equal = bool(np.array_equal(engine.num_evictions, sim.num_evictions))
    if not cmp.evictions_equal:
        cmp.note(f"evictions per request: engine {engine.num_evictions.tolist()}, "
                 f"simulator {sim.num_evictions.tolist()}")
    cmp.rejections_equal = bool(np.array_equal(engine.rejected, sim.rejected))
    if not cmp.rejections_equal:
        cmp.note(f"rejected: engine {np.flatnonzero(engine.rejected).tolist()}, "
                 f"simulator {np.flatnonzero(sim.rejected).tolist()}")
    for name, flag in (("num_cached_tokens", "cached_tokens_equal"), ("num_lookup_tokens", "cached_tokens_equal"),
                       ("realized_arrival_time", "arrivals_equal")):
        e, s_ = getattr(engine, name), getattr(sim, name)
        if (e is None) != (s_ is None) or (e is not None and not np.array_equal(e, s_, equal_nan=True)):
            setattr(cmp, flag, False)
            cmp.note(f"{name}: engine {None if e is None else e.tolist()[:20]}, "
                     f"simulator {None if s_ is None else s_.tolist()[:20]}")
    return cmp
