"""`Simulation`: one run of the exact, per-iteration simulator, steppable (DESIGN.md §1 and §4).

A small deterministic core in SimPy's style: build it, then ``step()`` boundary by boundary or
``run(until=...)``, look at ``view()`` (what the policy sees) and ``now`` between steps, and take
``result()`` at any time (requests not finished yet have NaN times). `Simulator.run` is the
one-call form.

Conventions, fixed here once (the rules themselves are `kvsched.engine.rules`):

- Time advances in iterations. At each boundary the engine admits the requests that have arrived
  (arrival_time <= now), asks the policy for a `Decision`, validates it and runs the iteration,
  which lasts ``cost.iteration_time(batch)``. Requests arriving during an iteration are seen at the
  next boundary. When nothing is scheduled the clock jumps to the next arrival (or the policy's
  ``wake_time``); a decision that only evicts takes no time and the policy is asked again.
- Tokens: vLLM V1's rule (`rules.advance`): scheduling n tokens computes n of the request's
  known-but-uncomputed tokens; an iteration that computes the last known token emits a new output
  token at its end. A request with o output tokens and no eviction is computed in s + o - 1 tokens
  (the last output token is sampled, never fed back) over at least o iterations.
- TTFT is the end of the iteration that emits the first output token; a request finishes at the end
  of the iteration that emits its o-th token, and its KV is freed then. A token gap is the time
  between the ends of the iterations that emitted two consecutive tokens of a request (an eviction
  and its recomputation included).
- KV: the engine's `kv_convention` (`KVConvention.COMPUTED`, vLLM, by default; `EMITTED` for the
  papers' s + j). The memory check uses the KV each resident request holds *after* this iteration's
  tokens (finishing requests included), in whole blocks; ``used <= capacity`` always holds.
- Evictions (`Simulator.eviction`, `rules.outputs_after_eviction`): the request's KV is dropped
  and ``num_computed_tokens`` returns to 0; under RECOMPUTE (default) the tokens it had generated
  are kept and must be recomputed with its prompt, under RESTART they are discarded and generated
  again (``num_restarted_tokens``). Tokens computed below the request's earlier high-water mark
  count as recomputed. TTFT is the first emission of the first token (a restart does not move
  it); a restarted request's token gaps are those of its last generation (earlier ones are
  overwritten).
- Requests whose peak KV (s + o - 1, or s + o under EMITTED, in blocks) exceeds the capacity are
  rejected on arrival, with the reason in the results (`rules.rejection_reason`).
- Ties: the waiting queue is ordered by (arrival time, request id); the running set by admission.
  The engine itself draws no random numbers, so a run is a deterministic function of its inputs.
- Views: ``SchedulerView.waiting`` and ``.running`` are read-only windows on the engine's own lists
  (no copy per iteration); like the request views they are live, valid during the `schedule` call.

With ``Simulator(fast=False)`` this is the reference loop: the policy is asked at every boundary
and every rule is applied in its plain form; it is the definition of correct. Otherwise a
`kvsched.engine.fastforward.FastForward` checks and advances resident decodes in tight loops and,
for an `event_stable` policy, advances its stable decode batches many iterations at once (same
per-request records, bit for bit).
"""

from __future__ import annotations

import bisect
import heapq
import time
from collections.abc import Callable

import numpy as np

from ..errors import InfeasibleDecisionError, StalledError
from ..state import Decision, Oracle, ReadOnlyList, RequestState, RequestView, SchedulerView, Status
from ..workload.synthetic import Workload
from . import rules
from .rules import KVConvention
from .fast_batch import FastBatch, extra_blocks as fast_extra_blocks
from .fastforward import FastForward
from .validation import Tally, Validation
from .memory import KVCache
from .caching_view import CachingEngineView
from .prefix_cache import DISTINCT_PROMPTS, PrefixCache, TokenStream
from .result import IterationRecord, RunResult, num_token_gaps, token_gap_offsets

ProgressCallback = Callable[[int, int], None]
PROGRESS_EVERY = 512     # iterations between progress reports


def _queue_key(state: RequestState) -> tuple[float, int]:
    return (state.arrival_time, state.request_id)


class _EngineRequestView(RequestView):
    """`RequestView` with its fixed fields held in slots (policies read them for every resident
    request at every boundary). Still read-only: `RequestView.__setattr__` refuses every
    assignment."""

    __slots__ = ("request_id", "arrival_time", "num_prompt_tokens")

    def __init__(self, state: RequestState) -> None:
        super().__init__(state)
        for name in _EngineRequestView.__slots__:
            object.__setattr__(self, name, getattr(state, name))

    @property
    def num_uncomputed_tokens(self) -> int:
        # rules.num_uncomputed_tokens inlined (read by policies for every resident at every
        # boundary); tests/engine/test_fastforward.py ties it to `RequestView`'s.
        s = self._s
        return s.num_prompt_tokens + s.num_output_tokens - s.num_computed_tokens

    @property
    def is_decode(self) -> bool:
        # rules.is_decode inlined, as num_uncomputed_tokens.
        s = self._s
        return s.num_output_tokens >= 1 and s.num_prompt_tokens + s.num_output_tokens - s.num_computed_tokens == 1


class _CachingRequestView(_EngineRequestView):
    """`_EngineRequestView` with prefix caching on: `RequestView`'s rules, which count a waiting
    request's hit, instead of the inlined ones."""

    __slots__ = ()
    num_uncomputed_tokens = RequestView.num_uncomputed_tokens
    is_decode = RequestView.is_decode


class _EngineView(SchedulerView):
    """`SchedulerView` whose memory helpers read the engine's request state directly (the same
    rules as the base class, without the view properties; other request objects fall back)."""

    __slots__ = ()

    def kv_tokens(self, request) -> int:
        try:
            s = request._s
        except AttributeError:
            return SchedulerView.kv_tokens(self, request)
        if s.status is not Status.RUNNING:
            return 0
        return rules.kv_tokens_held(s.num_computed_tokens, s.num_prompt_tokens, s.num_output_tokens,
                                    self.kv_convention)

    def kv_tokens_after(self, request, num_new_tokens: int) -> int:
        try:
            s = request._s
        except AttributeError:
            return SchedulerView.kv_tokens_after(self, request, num_new_tokens)
        computed = s.num_computed_tokens if s.status is Status.RUNNING else 0
        return rules.kv_tokens_after_step(computed, s.num_prompt_tokens, s.num_output_tokens,
                                          num_new_tokens, self.kv_convention)

    def extra_blocks(self, request, num_new_tokens: int) -> int:
        try:
            s = request._s
        except AttributeError:
            return SchedulerView.extra_blocks(self, request, num_new_tokens)
        computed = s.num_computed_tokens if s.status is Status.RUNNING else 0
        return rules.extra_blocks(computed, s.num_prompt_tokens, s.num_output_tokens, num_new_tokens,
                                  self.kv_convention, self.block_size)


class _FastEngineView(_EngineView):
    """The fast path's `_EngineView` (``Simulator(fast=True)``): its batches are `FastBatch`es and
    `extra_blocks` is `fast_batch.extra_blocks` (one function instead of the rules' five calls):
    every policy's batch asks for every request it adds. The reference loop keeps the plain
    `Batch` and rules, so reference-vs-fast tests compare the two; tests/engine/test_fast_batch.py
    ties `FastBatch` to `Batch` and tests/engine/test_fastforward.py this view to the plain one."""

    __slots__ = ()

    def extra_blocks(self, request, num_new_tokens: int) -> int:
        s = getattr(request, "_s", None)
        if s is None:
            return SchedulerView.extra_blocks(self, request, num_new_tokens)
        return fast_extra_blocks(s, num_new_tokens, self.kv_convention is KVConvention.EMITTED,
                                 self.block_size)

    def new_batch(self, max_num_batched_tokens: int | None = None) -> FastBatch:
        # SchedulerView.new_batch's budget (the smaller of the engine's and the policy's), without
        # building a plain Batch first; tests/engine/test_fast_batch.py compares the two.
        budget = self.max_num_batched_tokens
        if max_num_batched_tokens is not None:
            budget = max_num_batched_tokens if budget is None else min(budget, max_num_batched_tokens)
        return FastBatch(self, budget)


class Simulation:
    """One run of `policy` over `workload` on `simulator`'s engine (cost, KV cache, settings).

    The policy is reset with `seed` here. `progress(done, total)` is called every
    `PROGRESS_EVERY` iterations and when the run completes.
    """

    def __init__(self, simulator, workload: Workload, policy, *, seed: int | None = 0,
                 progress: ProgressCallback | None = None, reset: bool = True) -> None:
        if reset:
            policy.reset(seed=seed)
        self.simulator, self.workload, self.policy, self.progress = simulator, workload, policy, progress
        self.prefix = simulator.prefix_caching
        self.states = [_make_state(workload, i) for i in range(len(workload))]
        if self.prefix:
            self.cache = PrefixCache(simulator.kv_capacity_tokens, simulator.block_size,
                                     make_stream=self._token_stream)
            for state in self.states:
                state.prefix_cache = self.cache
                state.view = _CachingRequestView(state)
        else:
            self.cache = KVCache(simulator.kv_capacity_tokens, simulator.block_size)
            for state in self.states:
                state.view = _EngineRequestView(state)
        self.finished_now: list[RequestState] = []   # finished this step, KV still held (caching)
        # Arrivals: `arrival_queue` (sorted) and, for closed-loop workloads, the follow-up turns,
        # released when their previous turn finishes (`followups`) into the heap `released`.
        self.followups = workload.follow_ups()
        self.arrival_queue = ([state for state in self.states if workload.parent[state.request_id] < 0]
                              if self.followups else self.states)
        self.released: list[tuple[float, int]] = []
        self.closed_loop = bool(self.followups)
        self.oracle = Oracle(self.states) if policy.tags.clairvoyant else None
        self.waiting: list[RequestState] = []
        self.waiting_views: list = []
        self.running: dict[int, RequestState] = {}     # admission order
        self.running_views: list = []                  # the same, as views
        self._waiting_window = ReadOnlyList(self.waiting_views)
        self._running_window = ReadOnlyList(self.running_views)
        fast = simulator.fast or simulator.verify_stable
        self.fast_forward = FastForward(self) if fast else None     # None: the reference loop
        # a stepped iteration's plan entries: the plain rule, or the fast path's inlined form
        self._advance_entry = self._advance if self.fast_forward is None else self.fast_forward.advance_step
        # Events since the policy was last asked (the fast path reads them):
        self.arrived = False       # an arrival became visible
        self.progressed = False    # a request finished or completed its prefill (or recomputation)
        self.next_arrival = 0      # index in arrival_queue
        self.num_done = 0
        self.now = 0.0
        self.iteration = 0
        self.admit_counter = 0
        self.busy_time = 0.0
        self.kv_peak = 0
        self.kv_token_seconds = 0.0
        self.iterations: list[IterationRecord] | None = [] if simulator.record_iterations else None
        self.token_gaps = self.gap_offsets = None     # RunResult.token_gaps, filled as tokens are emitted
        if simulator.record_token_gaps:
            self.token_gaps = np.full(num_token_gaps(workload.true_output_tokens), np.nan)
            self.gap_offsets = token_gap_offsets(workload.true_output_tokens).tolist()
        self.evicted_since: list[int] = []   # evicted since the last iteration (its record lists them)
        self._next_progress = 0
        self._wall_time = 0.0
        # `view`: its type and the fields fixed for the run, gathered once (a view is made at
        # every policy call)
        if self.prefix:
            self._view_type = CachingEngineView
        else:
            self._view_type = _EngineView if self.fast_forward is None else _FastEngineView
        self._view_fields = dict(
            waiting=self._waiting_window, running=self._running_window,
            kv_capacity_tokens=self.cache.usable_tokens, block_size=simulator.block_size,
            kv_convention=simulator.kv_convention, max_num_batched_tokens=simulator.max_num_batched_tokens,
            separate_batching=simulator.separate_batching, oracle=self.oracle,
            **({"prefix_cache": self.cache} if self.prefix else {}))

    # ------------------------------------------------------------------ public
    @property
    def done(self) -> bool:
        """Every request finished or was rejected."""
        return self.num_done == len(self.states)

    def step(self) -> bool:
        """Advance past the next boundary: admit arrivals, then run the policy's decision (one
        iteration, a fast-forwarded stretch, an eviction, or an idle jump). Returns False once the
        run is done (and then does nothing)."""
        if self.done:
            return False
        started = time.perf_counter()
        self._step()
        self._wall_time += time.perf_counter() - started
        return not self.done

    def run(self, until: float | None = None) -> None:
        """Step until the run is done, or until the clock reaches `until` (seconds)."""
        # `step` without its clock reads: the run is timed once (two reads per boundary are a
        # few per cent of a fast run)
        started, total = time.perf_counter(), len(self.states)
        try:
            while self.num_done != total and (until is None or self.now < until):
                self._step()
        finally:
            self._wall_time += time.perf_counter() - started

    def _step(self) -> None:
        """`step` of a run not done yet."""
        self._admit_arrivals()
        if not self.waiting and not self.running:
            arrival = self.next_arrival_time()
            if arrival is not None:                     # else the last arrivals were all rejected
                self.now = max(self.now, arrival)
        else:
            ff = self.fast_forward
            known = ff.known_length() if ff is not None else 0
            if known and not self.simulator.verify_stable:
                ff.forward_known(known)
            else:
                self._ask_policy(known)
        if self.finished_now:
            self._release_finished()
        if self.progress is not None:
            self._report_progress()

    def view(self) -> SchedulerView:
        """What the policy sees at the current boundary (live: valid until the next step)."""
        return self._view_type(
            now=self.now, iteration=self.iteration, kv_used_tokens=self.cache.used_tokens,
            has_future_arrivals=self.has_future_arrivals(),
            **self._view_fields)

    def next_arrival_time(self) -> float | None:
        """When the next request not yet seen arrives (None: none is known to come)."""
        queue, released = self.arrival_queue, self.released
        arrival = queue[self.next_arrival].arrival_time if self.next_arrival < len(queue) else None
        if released and (arrival is None or released[0][0] < arrival):
            return released[0][0]
        return arrival

    def has_future_arrivals(self) -> bool:
        """Some request will arrive whatever the policy does. Follow-up turns not released yet
        do not count: they arrive only after work the policy must schedule, so a policy that
        waits for arrivals (WAIT's drain rule) would wait for them forever."""
        return self.next_arrival < len(self.arrival_queue) or bool(self.released)

    def result(self) -> RunResult:
        """The records so far (requests not finished yet: NaN times)."""
        def column(attr, dtype=np.float64):
            values = [getattr(s, attr) for s in self.states]
            if dtype is np.float64:
                return np.array([np.nan if v is None else v for v in values], dtype=dtype)
            return np.array(values, dtype=dtype)

        rejected = np.array([s.status is Status.REJECTED for s in self.states], dtype=bool)
        return RunResult(
            policy=self.policy.name, workload=self.workload,
            kv_capacity_tokens=self.cache.usable_tokens,
            first_scheduled_time=column("first_scheduled_time"), first_token_time=column("first_token_time"),
            finish_time=column("finish_time"), num_evictions=column("num_evictions", np.int64),
            num_recomputed_tokens=column("num_recomputed_tokens", np.int64),
            total_computed_tokens=column("total_computed_tokens", np.int64), rejected=rejected,
            reject_reasons={s.request_id: s.reject_reason for s in self.states if s.reject_reason},
            num_iterations=self.iteration, busy_time=self.busy_time, kv_peak_tokens=self.kv_peak,
            kv_token_seconds=self.kv_token_seconds, wall_time=self._wall_time,
            iterations=self.iterations, token_gaps=None if self.token_gaps is None else self.token_gaps.copy(),
            num_restarted_tokens=(column("num_restarted_tokens", np.int64)
                                  if self.simulator.eviction is rules.Eviction.RESTART else None),
            num_cached_tokens=column("total_cached_tokens", np.int64) if self.prefix else None,
            num_lookup_tokens=column("total_lookup_tokens", np.int64) if self.prefix else None,
            realized_arrival_time=column("arrival_time") if self.closed_loop else None)

    # ------------------------------------------------------------------ one boundary
    def _ask_policy(self, known: int) -> None:
        """Ask the policy for this boundary's decision and run it (one iteration, or a stretch)."""
        view = self.view()
        decision = self.policy.schedule(view)
        self.arrived = self.progressed = False
        evicted = self._evict(decision.evict)
        ff = self.fast_forward
        if not decision.num_tokens:
            if ff is not None:
                ff.observe_idle(known)
            if not evicted:                    # evictions alone change the state: ask again now
                self._idle(decision.wake_time)
            return
        checked = ff.validate(decision, evicted) if ff is not None else self._validate(decision, evicted)
        if ff is not None and ff.observe(view, checked, bool(evicted), known):
            return                             # it ran the decision as a fast-forwarded stretch
        self._run_iteration(decision, checked)

    def _report_progress(self) -> None:
        if self.progress is None:
            return
        if self.done or self.iteration >= self._next_progress:
            self.progress(self.num_done, len(self.states))
            self._next_progress = self.iteration + PROGRESS_EVERY

    # ------------------------------------------------------------------ arrivals
    def _admit_arrivals(self) -> None:
        queue, n = self.arrival_queue, len(self.arrival_queue)
        while self.next_arrival < n and queue[self.next_arrival].arrival_time <= self.now:
            self.next_arrival += 1
            self._arrive(queue[self.next_arrival - 1])
        released = self.released
        while released and released[0][0] <= self.now:
            self._arrive(self.states[heapq.heappop(released)[1]])

    def _arrive(self, state: RequestState) -> None:
        """`state` arrived: it waits, or is rejected on the spot (`rules.rejection_reason`)."""
        self.arrived = True
        cache = self.cache
        reason = rules.rejection_reason(state.num_prompt_tokens, state.true_output_tokens,
                                        self.simulator.kv_convention, cache.capacity_blocks,
                                        cache.block_size)
        if reason is not None:
            self._reject(state, reason)
            return
        state.status = Status.WAITING
        self._enqueue(state)

    def _reject(self, state: RequestState, reason: str) -> None:
        """Reject `state`, and the later turns of its conversation with it (they never arrive)."""
        state.status = Status.REJECTED
        state.reject_reason = reason
        self.num_done += 1
        for child in self.followups.pop(state.request_id, ()):
            _set_arrival(self.states[child], float("nan"))      # it never arrives
            self._reject(self.states[child], f"its previous turn, request {state.request_id}, was rejected")

    def _release_followups(self, state: RequestState, end: float) -> None:
        """`state` finished at `end`: its follow-up turns arrive a think time later."""
        think = self.workload.think_time
        for child in self.followups.pop(state.request_id, ()):
            arrival = end + float(think[child])
            _set_arrival(self.states[child], arrival)
            heapq.heappush(self.released, (arrival, child))

    def _enqueue(self, state: RequestState) -> None:
        index = bisect.bisect_right(self.waiting, _queue_key(state), key=_queue_key)
        self.waiting.insert(index, state)
        self.waiting_views.insert(index, state.view)

    def _dequeue(self, state: RequestState) -> None:
        index = bisect.bisect_left(self.waiting, _queue_key(state), key=_queue_key)
        del self.waiting[index]
        del self.waiting_views[index]

    def _idle(self, wake_time: float | None) -> None:
        """Nothing scheduled: jump to the next arrival or the policy's wake-up time."""
        candidates = []
        arrival = self.next_arrival_time()
        if arrival is not None:
            candidates.append(arrival)
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
            self.running_views.remove(state.view)
            self.cache.free(rid)
            self.evicted_since.append(rid)
            state.num_computed_tokens = 0
            kept = rules.outputs_after_eviction(state.num_output_tokens, self.simulator.eviction)
            state.num_restarted_tokens += state.num_output_tokens - kept
            state.num_output_tokens = kept
            state.num_evictions += 1
            state.status = Status.WAITING
            state.admitted_seq = None
            self._enqueue(state)
        return frozenset(evict)

    def _validate(self, decision: Decision, evicted: frozenset[int]) -> Validation:
        """Check a decision with the plain rules; return its plan, batch and KV after it."""
        tally = Tally(self.cache.used_blocks)
        plan = self.plan(decision.num_tokens.items(), evicted, tally)
        return self.checked((), plan, tally)

    def plan(self, items, evicted: frozenset[int], tally: Tally) -> tuple:
        """Check each (request id, tokens) pair with the plain rules and add it to `tally`."""
        convention, block_size, plan = self.simulator.kv_convention, self.cache.block_size, []
        # prefix caching: hit blocks the decision's admissions take, and the keys of the blocks
        # its entries are allocated (later admissions of the decision hit them too)
        taken: set[int] = set()
        pending: set[int] = set()
        for rid, n in items:
            state = self._schedulable(rid, evicted)
            prompt, outputs = state.num_prompt_tokens, state.num_output_tokens
            computed = state.num_computed_tokens
            if self.prefix and state.status is Status.WAITING:
                cache = self.cache
                hit = cache.hit_blocks(rid, prompt + outputs)
                computed = len(hit) * block_size
                n = _token_count(rid, n, rules.num_uncomputed_tokens(prompt, outputs, computed))
                more = cache.same_step_hit(rid, prompt + outputs, len(hit), n, pending)
                shared = cache.shared_hit_blocks(rid, prompt + outputs, taken) + more
                computed += more * block_size
                tally.used_blocks += rules.admission_blocks(computed, shared, prompt, outputs, n,
                                                            convention, block_size)
                taken.update(hit)
                pending.update(cache.new_keys(rid, computed, computed + n))
            else:
                n = _token_count(rid, n, rules.num_uncomputed_tokens(prompt, outputs, computed))
                tally.used_blocks += rules.extra_blocks(computed, prompt, outputs, n, convention, block_size)
                if self.prefix:
                    pending.update(self.cache.new_keys(rid, computed, computed + n))
            tally.num_resident += state.status is Status.RUNNING
            tally.num_partial += not rules.emits(prompt, outputs, computed, n)
            tally.add(n, computed + n, rules.is_decode_step(prompt, outputs, computed, n))
            plan.append((state, n))
        return tuple(plan)

    def checked(self, decodes, plan, tally: Tally) -> Validation:
        """The `Validation` of a tallied decision, after the engine's limits on the whole of it:
        token budget, KV capacity, separate batching."""
        budget, cache = self.simulator.max_num_batched_tokens, self.cache
        if budget is not None and tally.num_tokens > budget:
            raise InfeasibleDecisionError(f"{tally.num_tokens} tokens scheduled, over the budget of {budget}")
        if tally.used_blocks > cache.capacity_blocks:
            raise InfeasibleDecisionError(
                f"KV overflow at t={self.now:g}: {tally.used_blocks} blocks needed after the iteration, "
                f"capacity {cache.capacity_blocks} blocks of {cache.block_size} tokens")
        batch = tally.batch()
        if self.simulator.separate_batching and batch.num_prefill_seqs and batch.num_decode_seqs:
            raise InfeasibleDecisionError("separate batching: an iteration mixes prefill and decode work")
        return Validation(tuple(decodes), plan, batch, tally.used_blocks, tally.num_resident, tally.num_partial)

    def _schedulable(self, rid, evicted) -> RequestState:
        if not isinstance(rid, (int, np.integer)) or not 0 <= rid < len(self.states):
            raise InfeasibleDecisionError(f"unknown request id {rid!r}")
        state = self.states[rid]
        if state.status not in (Status.WAITING, Status.RUNNING):
            raise InfeasibleDecisionError(f"request {rid} is {state.status.value}, not schedulable")
        if rid in evicted:
            raise InfeasibleDecisionError(f"request {rid} is evicted and scheduled in the same decision")
        return state

    # ------------------------------------------------------------------ iterations
    def _run_iteration(self, decision: Decision, checked: Validation) -> None:
        duration = float(self.simulator.cost.iteration_time(checked.batch))
        start, end = self.now, self.now + duration
        used_tokens = checked.used_blocks * self.cache.block_size
        self.kv_peak = max(self.kv_peak, used_tokens)
        self.kv_token_seconds += used_tokens * duration
        self.busy_time += duration
        if self.iterations is not None:
            self.iterations.append(IterationRecord(start, duration, {int(rid): int(n) for rid, n in
                                                                     decision.num_tokens.items()},
                                                   self.take_evicted(), used_tokens))
        self.evicted_since.clear()
        if self.prefix:
            self._take_hits_and_allocate(checked.plan)
        if checked.decodes:
            self.fast_forward.advance_one(checked.decodes, end)
        advance = self._advance_entry
        for state, n in checked.plan:
            advance(state, n, start, end)
        self.now = end
        self.iteration += 1

    def _take_hits_and_allocate(self, plan) -> None:
        """Prefix caching (`kvsched.engine.prefix_cache`): the decision's admissions take their
        boundary hits, all of them before any new block is allocated; then, in the decision's
        order, each entry is allocated its blocks for the step, their full ones registered at
        once, and an admission first takes the blocks earlier entries registered
        (`rules.same_step_hit_blocks`, as `plan` counted them)."""
        cache, block_size = self.cache, self.cache.block_size
        for state, _ in plan:
            if state.status is Status.WAITING:
                num_tokens = state.num_prompt_tokens + state.num_output_tokens
                hit = cache.take_hit(state.request_id, num_tokens)
                state.num_computed_tokens = hit
                state.total_cached_tokens += hit
                state.total_lookup_tokens += num_tokens
        pending: set[int] = set()
        for state, n in plan:
            rid, computed = state.request_id, state.num_computed_tokens
            if state.status is Status.WAITING:
                num_tokens = state.num_prompt_tokens + state.num_output_tokens
                more = cache.same_step_hit(rid, num_tokens, computed // block_size, n, pending)
                if more:
                    cache.extend_hit(rid, more)
                    computed += more * block_size
                    state.num_computed_tokens = computed
                    state.total_cached_tokens += more * block_size
            pending.update(cache.new_keys(rid, computed, computed + n))
            cache.set_tokens(rid, computed + n)

    def admit(self, state: RequestState, start: float) -> None:
        """A waiting request scheduled in the iteration starting at `start` becomes resident."""
        self._dequeue(state)
        state.status = Status.RUNNING
        state.admitted_seq = self.admit_counter
        self.admit_counter += 1
        self.running[state.request_id] = state
        self.running_views.append(state.view)
        if state.first_scheduled_time is None:
            state.first_scheduled_time = start

    def _advance(self, state: RequestState, n: int, start: float, end: float) -> None:
        """Compute `n` tokens of `state` in the iteration [start, end] (`rules.advance`)."""
        rid = state.request_id
        if state.status is Status.WAITING:
            self.admit(state, start)
        prompt, outputs = state.num_prompt_tokens, state.num_output_tokens
        decode = rules.is_decode_step(prompt, outputs, state.num_computed_tokens, n)
        step = rules.advance(prompt, outputs, state.num_computed_tokens, state.high_water_tokens, n)
        state.num_computed_tokens = step.computed
        state.high_water_tokens = step.high_water
        state.total_computed_tokens += n
        state.num_recomputed_tokens += step.num_recomputed_tokens
        if step.emitted:
            state.num_output_tokens = step.outputs
            self.progressed |= not decode      # a prefill (or recomputation) completed
            if state.first_token_time is None:
                state.first_token_time = end
            if step.outputs >= 2 and self.token_gaps is not None:
                self.token_gaps[self.gap_offsets[rid] + step.outputs - 2] = end - state.last_token_time
            state.last_token_time = end
            if state.num_output_tokens == state.true_output_tokens:
                self.finish(state, end)
                return
        self.cache.set_tokens(rid, rules.kv_tokens_held(state.num_computed_tokens, prompt,
                                                        state.num_output_tokens,
                                                        self.simulator.kv_convention))

    def take_evicted(self) -> tuple[int, ...]:
        """The requests evicted since the last iteration, for the next iteration's record."""
        evicted = tuple(int(rid) for rid in self.evicted_since)
        self.evicted_since.clear()
        return evicted

    def finish(self, state: RequestState, end: float) -> None:
        """`state` emitted its last token at `end`: record it and free its KV (with prefix
        caching, at the end of the step: `_release_finished`)."""
        self.progressed = True
        state.finish_time = end
        state.status = Status.FINISHED
        del self.running[state.request_id]
        self.running_views.remove(state.view)
        if self.prefix:
            self.finished_now.append(state)
        else:
            self.cache.free(state.request_id)
        self.num_done += 1
        if self.followups:
            self._release_followups(state, end)

    def _release_finished(self) -> None:
        """Free the blocks of the requests that finished in this step, oldest admission first
        (vLLM frees them in its running order): the order decides which freed blocks the LRU
        reuses first, so it must not depend on the path (reference loop or fast path)."""
        for state in sorted(self.finished_now, key=lambda state: state.admitted_seq):
            self.cache.free(state.request_id)
        self.finished_now.clear()

    def _token_stream(self, request_id: int) -> TokenStream:
        """Request `request_id`'s token content (`prefix_cache.TokenStream`): its prompt's
        segments (`Workload.segments`; a fresh segment when the workload has none)."""
        segments = self.workload.segments
        if segments is None:
            pieces = [(DISTINCT_PROMPTS + request_id, self.states[request_id].num_prompt_tokens)]
        else:
            pieces = segments.of(request_id)
        return TokenStream(pieces, request_id, self.cache.block_size)


def _token_count(rid, n, uncomputed: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= uncomputed:
        raise InfeasibleDecisionError(
            f"request {rid}: {n!r} tokens scheduled, expected an integer in [1, {uncomputed}]")
    return int(n)


def _set_arrival(state: RequestState, arrival: float) -> None:
    """A follow-up turn's realised arrival, in its state and in its view (`_EngineRequestView`
    holds ``arrival_time`` in a slot, copied when the view was built: without this the policy saw
    the turn's nominal arrival, its conversation's start)."""
    state.arrival_time = arrival
    view = state.view
    if isinstance(view, _EngineRequestView):
        object.__setattr__(view, "arrival_time", arrival)


def _make_state(workload: Workload, i: int) -> RequestState:
    def opt(col, cast):
        return None if col is None else cast(col[i])
    return RequestState(i, float(workload.arrival_time[i]), int(workload.num_prompt_tokens[i]),
                        int(workload.true_output_tokens[i]), opt(workload.predicted_output_tokens, float),
                        opt(workload.predicted_lo, int), opt(workload.predicted_hi, int),
                        opt(workload.type_id, int))
