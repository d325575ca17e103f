"""The exact, per-iteration simulator (the reference loop; DESIGN.md §1 and §4).

Conventions, fixed here once:

- Time advances in iterations. At each boundary the engine admits the requests that have arrived
  (arrival_time <= now), asks the policy for a `Decision`, validates it and runs the iteration,
  which lasts ``cost.iteration_time(batch)``. Requests arriving during an iteration are seen at the
  next boundary. When nothing is scheduled the clock jumps to the next arrival (or the policy's
  ``wake_time``); a decision that only evicts takes no time and the policy is asked again.
- Tokens: vLLM V1's rule (see `kvsched.state`): scheduling n tokens computes n of the request's
  known-but-uncomputed tokens; an iteration that computes the last known token emits a new output
  token at its end. A request with o output tokens and no eviction is computed in s + o - 1 tokens
  (the last output token is sampled, never fed back) over at least o iterations.
- TTFT is the end of the iteration that emits the first output token; a request finishes at the end
  of the iteration that emits its o-th token, and its KV is freed then.
- KV: the engine's `kv_convention` (`KVConvention.COMPUTED`, vLLM, by default; `EMITTED` for the
  papers' s + j). The memory check uses the KV each resident request holds *after* this iteration's
  tokens (finishing requests included), in whole blocks; ``used <= capacity`` always holds.
- Evictions (recompute): the request's KV is dropped and ``num_computed_tokens`` returns to 0; the
  tokens it had generated are kept and must be recomputed with its prompt. Tokens computed below the
  request's earlier high-water mark count as recomputed.
- Requests whose peak KV (s + o - 1, or s + o under EMITTED, in blocks) exceeds the capacity are
  rejected on arrival, with the reason in the results.
- Ties: the waiting queue is ordered by (arrival time, request id); the running set by admission.
  The engine itself draws no random numbers, so a run is a deterministic function of its inputs.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .cost import BatchStats, CostModel
from .errors import InfeasibleDecisionError, StalledError
from .memory import KVCache, KVConvention, kv_tokens_held, peak_kv_tokens
from .state import Decision, Oracle, RequestState, SchedulerView, Status
from .workload import Workload

ProgressCallback = Callable[[int, int], None]


def _queue_key(state: RequestState) -> tuple[float, int]:
    return (state.arrival_time, state.request_id)


@dataclass(frozen=True, slots=True)
class IterationRecord:
    """One iteration, recorded when `Simulator(record_iterations=True)`."""

    start_time: float
    duration: float
    num_tokens: dict[int, int]
    evicted: tuple[int, ...]
    kv_used_tokens: int


@dataclass(frozen=True)
class RunResult:
    """Per-request records (columnar, indexed by request id) and run-level figures."""

    policy: str
    workload: Workload
    kv_capacity_tokens: int
    first_scheduled_time: np.ndarray
    first_token_time: np.ndarray
    finish_time: np.ndarray
    num_evictions: np.ndarray
    num_recomputed_tokens: np.ndarray
    num_computed_tokens: np.ndarray
    rejected: np.ndarray
    reject_reasons: dict[int, str]
    num_iterations: int
    busy_time: float
    kv_peak_tokens: int
    kv_token_seconds: float
    wall_time: float
    iterations: list[IterationRecord] | None = field(default=None, repr=False)

    def summary(self):
        from .metrics import summarize
        return summarize(self)


@dataclass(frozen=True)
class Simulator:
    """Runs a policy over a workload under a cost model and a KV capacity.

    ``max_num_batched_tokens``: engine-wide token budget per iteration (None: unlimited).
    ``separate_batching``: every iteration holds only prefill work or only decodes.
    """

    cost: CostModel
    kv_capacity_tokens: int
    block_size: int = 1
    kv_convention: KVConvention = KVConvention.COMPUTED
    max_num_batched_tokens: int | None = None
    separate_batching: bool = False
    record_iterations: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "kv_convention", KVConvention(self.kv_convention))
        if self.kv_capacity_tokens < self.block_size:
            raise ValueError("kv_capacity_tokens must hold at least one block")

    def run(self, workload: Workload, policy, *, seed: int | None = None,
            progress: ProgressCallback | None = None) -> RunResult:
        policy.reset(seed=seed)
        return _Run(self, workload, policy, progress).execute()


class _Run:
    """The mutable state of one simulation run."""

    def __init__(self, sim: Simulator, workload: Workload, policy, progress) -> None:
        self.sim, self.workload, self.policy, self.progress = sim, workload, policy, progress
        self.cache = KVCache(sim.kv_capacity_tokens, sim.block_size)
        self.states = [_make_state(workload, i) for i in range(len(workload))]
        self.oracle = Oracle(self.states) if policy.tags.clairvoyant else None
        self.waiting: list[RequestState] = []
        self.waiting_views: list = []
        self.running: dict[int, RequestState] = {}
        self.next_arrival = 0
        self.num_done = 0
        self.now = 0.0
        self.iteration = 0
        self.admit_counter = 0
        self.busy_time = 0.0
        self.kv_peak = 0
        self.kv_token_seconds = 0.0
        self.iterations: list[IterationRecord] | None = [] if sim.record_iterations else None

    # ------------------------------------------------------------------ main loop
    def execute(self) -> RunResult:
        started = time.perf_counter()
        n = len(self.states)
        while self.num_done < n:
            self._admit_arrivals()
            if not self.waiting and not self.running:
                if self.next_arrival < n:      # else the last arrivals were all rejected
                    self.now = max(self.now, self.states[self.next_arrival].arrival_time)
                continue
            decision = self.policy.schedule(self._view())
            evicted = self._evict(decision.evict)
            if decision.num_tokens:
                self._run_iteration(decision, evicted)
            elif not evicted:                  # evictions alone change the state: ask again now
                self._idle(decision.wake_time)
            if self.progress is not None and self.iteration % 512 == 0:
                self.progress(self.num_done, n)
        if self.progress is not None:
            self.progress(self.num_done, n)
        return self._result(time.perf_counter() - started)

    def _admit_arrivals(self) -> None:
        states, n = self.states, len(self.states)
        while self.next_arrival < n and states[self.next_arrival].arrival_time <= self.now:
            state = states[self.next_arrival]
            self.next_arrival += 1
            peak = peak_kv_tokens(state.num_prompt_tokens, state.true_output_tokens, self.sim.kv_convention)
            if self.cache.blocks(peak) > self.cache.capacity_blocks:
                state.status = Status.REJECTED
                state.reject_reason = (f"needs {peak} KV tokens at its last token; the KV capacity is "
                                       f"{self.cache.capacity_blocks * self.cache.block_size} tokens")
                self.num_done += 1
                continue
            state.status = Status.WAITING
            self._enqueue(state)

    def _enqueue(self, state: RequestState) -> None:
        index = bisect.bisect_right(self.waiting, _queue_key(state), key=_queue_key)
        self.waiting.insert(index, state)
        self.waiting_views.insert(index, state.view)

    def _dequeue(self, state: RequestState) -> None:
        index = bisect.bisect_left(self.waiting, _queue_key(state), key=_queue_key)
        del self.waiting[index]
        del self.waiting_views[index]

    def _view(self) -> SchedulerView:
        sim = self.sim
        return SchedulerView(
            now=self.now, iteration=self.iteration, waiting=tuple(self.waiting_views),
            running=tuple(s.view for s in self.running.values()),
            kv_capacity_tokens=self.cache.capacity_blocks * self.cache.block_size,
            kv_used_tokens=self.cache.used_tokens, block_size=sim.block_size,
            kv_convention=sim.kv_convention, max_num_batched_tokens=sim.max_num_batched_tokens,
            separate_batching=sim.separate_batching,
            has_future_arrivals=self.next_arrival < len(self.states), oracle=self.oracle)

    def _idle(self, wake_time: float | None) -> None:
        """Nothing scheduled: jump to the next arrival or the policy's wake-up time."""
        candidates = []
        if self.next_arrival < len(self.states):
            candidates.append(self.states[self.next_arrival].arrival_time)
        if wake_time is not None:
            if not wake_time > self.now:
                raise InfeasibleDecisionError(f"wake_time {wake_time} is not after now ({self.now})")
            candidates.append(wake_time)
        if not candidates:
            raise StalledError(
                f"policy {self.policy.name!r} scheduled nothing at t={self.now:g} with "
                f"{len(self.waiting)} waiting and {len(self.running)} resident requests and no "
                "arrivals to come")
        self.now = max(self.now, min(candidates))

    # ------------------------------------------------------------------ decisions
    def _evict(self, evict: tuple[int, ...]) -> frozenset[int]:
        """Drop the KV of the listed resident requests; they go back to waiting."""
        if not evict:
            return frozenset()
        if len(set(evict)) != len(evict):
            raise InfeasibleDecisionError(f"evict lists a request twice: {evict}")
        for rid in evict:
            state = self.running.get(rid)
            if state is None:
                raise InfeasibleDecisionError(f"cannot evict request {rid}: it is not resident")
            del self.running[rid]
            self.cache.free(rid)
            state.num_computed_tokens = 0
            state.num_evictions += 1
            state.status = Status.WAITING
            state.admitted_seq = None
            self._enqueue(state)
        return frozenset(evict)

    def _validate(self, decision: Decision, evicted: frozenset[int]) -> tuple[list[tuple[RequestState, int]], BatchStats, int]:
        """Check a decision; return the plan, the batch and KV blocks used after the iteration."""
        plan, budget = [], self.sim.max_num_batched_tokens
        total = prefill_tokens = prefill_seqs = decode_seqs = 0
        prefill_context = prefill_work = decode_context = 0
        used_blocks = self.cache.used_blocks
        convention, cache = self.sim.kv_convention, self.cache
        for rid, n in decision.num_tokens.items():
            state = self._schedulable(rid, evicted)
            uncomputed = state.num_prompt_tokens + state.num_output_tokens - state.num_computed_tokens
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= uncomputed:
                raise InfeasibleDecisionError(
                    f"request {rid}: {n!r} tokens scheduled, expected an integer in [1, {uncomputed}]")
            n = int(n)
            after = state.num_computed_tokens + n
            emits = n == uncomputed
            kv_after = kv_tokens_held(after, state.num_prompt_tokens, state.num_output_tokens + emits,
                                      convention)
            used_blocks += cache.blocks(kv_after) - cache.held_blocks(rid)
            if emits and n == 1 and state.num_output_tokens >= 1:
                decode_seqs += 1
                decode_context += after
            else:
                prefill_seqs += 1
                prefill_tokens += n
                prefill_context += after
                prefill_work += n * after
            total += n
            plan.append((state, n))
        if budget is not None and total > budget:
            raise InfeasibleDecisionError(f"{total} tokens scheduled, over the budget of {budget}")
        if used_blocks > cache.capacity_blocks:
            raise InfeasibleDecisionError(
                f"KV overflow at t={self.now:g}: {used_blocks} blocks needed after the iteration, "
                f"capacity {cache.capacity_blocks} blocks of {cache.block_size} tokens")
        if self.sim.separate_batching and prefill_seqs and decode_seqs:
            raise InfeasibleDecisionError("separate batching: an iteration mixes prefill and decode work")
        batch = BatchStats(prefill_tokens, prefill_seqs, decode_seqs, prefill_context, prefill_work,
                           decode_context)
        return plan, batch, used_blocks

    def _schedulable(self, rid, evicted) -> RequestState:
        if not isinstance(rid, (int, np.integer)) or not 0 <= rid < len(self.states):
            raise InfeasibleDecisionError(f"unknown request id {rid!r}")
        state = self.states[rid]
        if state.status not in (Status.WAITING, Status.RUNNING):
            raise InfeasibleDecisionError(f"request {rid} is {state.status.value}, not schedulable")
        if rid in evicted:
            raise InfeasibleDecisionError(f"request {rid} is evicted and scheduled in the same decision")
        return state

    def _run_iteration(self, decision: Decision, evicted: frozenset[int]) -> None:
        plan, batch, used_blocks = self._validate(decision, evicted)
        duration = float(self.sim.cost.iteration_time(batch))
        start, end = self.now, self.now + duration
        used_tokens = used_blocks * self.cache.block_size
        self.kv_peak = max(self.kv_peak, used_tokens)
        self.kv_token_seconds += used_tokens * duration
        self.busy_time += duration
        if self.iterations is not None:
            self.iterations.append(IterationRecord(start, duration, {s.request_id: n for s, n in plan},
                                                   tuple(decision.evict), used_tokens))
        for state, n in plan:
            self._advance(state, n, start, end)
        self.now = end
        self.iteration += 1

    def _advance(self, state: RequestState, n: int, start: float, end: float) -> None:
        rid = state.request_id
        if state.status is Status.WAITING:
            self._dequeue(state)
            state.status = Status.RUNNING
            state.admitted_seq = self.admit_counter
            self.admit_counter += 1
            self.running[rid] = state
            if state.first_scheduled_time is None:
                state.first_scheduled_time = start
        before = state.num_computed_tokens
        state.num_computed_tokens = before + n
        state.total_computed_tokens += n
        if before < state.max_computed_tokens:
            state.num_recomputed_tokens += min(n, state.max_computed_tokens - before)
        state.max_computed_tokens = max(state.max_computed_tokens, state.num_computed_tokens)
        if state.num_computed_tokens == state.num_prompt_tokens + state.num_output_tokens:
            state.num_output_tokens += 1
            if state.first_token_time is None:
                state.first_token_time = end
            if state.num_output_tokens == state.true_output_tokens:
                state.finish_time = end
                state.status = Status.FINISHED
                del self.running[rid]
                self.cache.free(rid)
                self.num_done += 1
                return
        self.cache.set_tokens(rid, kv_tokens_held(state.num_computed_tokens, state.num_prompt_tokens,
                                                  state.num_output_tokens, self.sim.kv_convention))

    # ------------------------------------------------------------------ results
    def _result(self, wall_time: float) -> RunResult:
        def column(attr, dtype=np.float64):
            values = [getattr(s, attr) for s in self.states]
            if dtype is np.float64:
                return np.array([np.nan if v is None else v for v in values], dtype=dtype)
            return np.array(values, dtype=dtype)

        rejected = np.array([s.status is Status.REJECTED for s in self.states], dtype=bool)
        return RunResult(
            policy=self.policy.name, workload=self.workload,
            kv_capacity_tokens=self.cache.capacity_blocks * self.cache.block_size,
            first_scheduled_time=column("first_scheduled_time"), first_token_time=column("first_token_time"),
            finish_time=column("finish_time"), num_evictions=column("num_evictions", np.int64),
            num_recomputed_tokens=column("num_recomputed_tokens", np.int64),
            num_computed_tokens=column("total_computed_tokens", np.int64), rejected=rejected,
            reject_reasons={s.request_id: s.reject_reason for s in self.states if s.reject_reason},
            num_iterations=self.iteration, busy_time=self.busy_time, kv_peak_tokens=self.kv_peak,
            kv_token_seconds=self.kv_token_seconds, wall_time=wall_time, iterations=self.iterations)


def _make_state(workload: Workload, i: int) -> RequestState:
    def opt(col, cast):
        return None if col is None else cast(col[i])
    return RequestState(i, float(workload.arrival_time[i]), int(workload.num_prompt_tokens[i]),
                        int(workload.true_output_tokens[i]), opt(workload.predicted_output_tokens, float),
                        opt(workload.predicted_lo, int), opt(workload.predicted_hi, int),
                        opt(workload.type_id, int))
