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
- Views: ``SchedulerView.waiting`` and ``.running`` are read-only windows on the engine's own lists
  (no copy per iteration); like the request views they are live, valid during the `schedule` call.

Fast path (``Simulator(fast=True)``, the default; DESIGN.md §4; arithmetic in `kvsched.engine.fastforward`).
``Simulator(fast=False)`` is the reference loop, which asks the policy at every boundary; it is the
definition of correct, and the fast path gives bit-identical per-request records and run figures.

A *pure decode step* is a decision in which every resident request is a decode (all its known
tokens but the newest computed) and gets exactly 1 token, nothing is evicted and no waiting request
is scheduled. A policy tagged ``PolicyTags(event_stable=True)`` promises:

    Suppose my decision at a boundary scheduled every resident request (paused none) and evicted
    nothing. Then at every later boundary before the next *event* at which every resident request
    is a decode, I would return the pure decode step; and not being asked at those boundaries
    changes none of my later decisions.

Events: (1) an arrival becomes visible (the first boundary at or after its arrival time);
(2) *while requests are waiting*, a request finished or completed its prefill (or recomputation)
in the previous iteration; (3) the pure decode step would not fit: the first iteration whose KV
after growth, in whole blocks, exceeds the capacity less the policy's ``stable_reserve_blocks()``
(0 unless it defines one; with ``block_size > 1`` the batch grows by a block whenever a request
crosses a block boundary); (4) the policy's own horizon: if it defines
``stable_horizon(view) -> int | None`` (called right after each decision that scheduled every
resident and evicted nothing, with the same view), it is asked again after at most that many
iterations (None: no limit). Asking a policy earlier than its events is always allowed (the
reference loop asks at every boundary), so the reserve and the horizon may be conservative.

So with requests waiting, a pure decode step stays so until an arrival, a completion, an overflow
or the horizon (the waiting requests stay blocked: memory only fills up meanwhile); with nothing
waiting, the residents keep decoding through completions and through the end of their prefills
(the batch only shrinks, so it stays within any token budget or seat limit that the decision
before it met). Between asked boundaries only ``now``, ``iteration``, the residents' computed and
generated token counts, the resident set (shrinking) and ``kv_used_tokens`` change; the waiting
queue and ``has_future_arrivals`` do not. vLLM's and Sarathi's policies keep this promise.

Verification: the engine relies only on what it can count (the last decision scheduled every
resident, evicted nothing, completed every prefill chunk; O(1) extra per decision). The promise
itself is checked by ``Simulator(verify_stable=True)``: it asks the policy at every boundary, as the
reference loop does, and raises `EventStabilityError` at the first boundary the fast path would
have skipped where the answer is not the pure decode step. Policies without the tag are asked at
every boundary.
"""

from __future__ import annotations

import bisect
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import fastforward as fastpath
from ..cost.models import BatchStats, CostModel
from ..errors import ConfigError, InfeasibleDecisionError, KvschedError, StalledError
from .memory import KVCache
from .rules import KVConvention, kv_tokens_after_step, kv_tokens_held, peak_kv_tokens
from ..policies.base import Policy
from ..state import Decision, Oracle, RequestState, RequestView, SchedulerView, Status
from ..workload.synthetic import Workload

ProgressCallback = Callable[[int, int], None]
SHORT_STRETCH = 32      # stretches up to this long are priced and folded in plain Python


def _queue_key(state: RequestState) -> tuple[float, int]:
    return (state.arrival_time, state.request_id)


class EventStabilityError(KvschedError):
    """A policy tagged `event_stable` changed a pure decode step between events (verify mode)."""


class _EngineRequestView(RequestView):
    """`RequestView` with its derived properties computed in one step and its fixed fields held in
    slots (same values; policies read them for every resident request at every boundary). Still
    read-only: `RequestView.__setattr__` refuses every assignment."""

    __slots__ = ("request_id", "arrival_time", "num_prompt_tokens")

    def __init__(self, state: RequestState) -> None:
        super().__init__(state)
        for name in self.__slots__:
            object.__setattr__(self, name, getattr(state, name))

    @property
    def num_tokens(self) -> int:
        s = self._s
        return s.num_prompt_tokens + s.num_output_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        s = self._s
        return s.num_prompt_tokens + s.num_output_tokens - s.num_computed_tokens

    @property
    def is_decode(self) -> bool:
        s = self._s
        return s.num_output_tokens >= 1 and s.num_prompt_tokens + s.num_output_tokens - s.num_computed_tokens == 1


class _EngineView(SchedulerView):
    """`SchedulerView` whose memory helpers read the engine's request state directly (same results
    as the base class, which `tests/engine/test_fastforward.py` checks; other request objects fall back)."""

    __slots__ = ()

    def kv_tokens(self, request) -> int:
        try:
            s = request._s
        except AttributeError:
            return SchedulerView.kv_tokens(self, request)
        if s.status is not Status.RUNNING:
            return 0
        return kv_tokens_held(s.num_computed_tokens, s.num_prompt_tokens, s.num_output_tokens,
                              self.kv_convention)

    def kv_tokens_after(self, request, num_new_tokens: int) -> int:
        try:
            s = request._s
        except AttributeError:
            return SchedulerView.kv_tokens_after(self, request, num_new_tokens)
        computed = s.num_computed_tokens if s.status is Status.RUNNING else 0
        return kv_tokens_after_step(computed, s.num_prompt_tokens, s.num_output_tokens,
                                    num_new_tokens, self.kv_convention)

    def extra_blocks(self, request, num_new_tokens: int) -> int:
        """Blocks needed beyond those held: ceil(after / bs) - ceil(held / bs) (inlined)."""
        try:
            s = request._s
        except AttributeError:
            return SchedulerView.extra_blocks(self, request, num_new_tokens)
        prompt, outputs, bs = s.num_prompt_tokens, s.num_output_tokens, self.block_size
        emitted = self.kv_convention is KVConvention.EMITTED
        if s.status is Status.RUNNING:
            held = computed = s.num_computed_tokens
            if emitted and outputs >= 1 and computed == prompt + outputs - 1:
                held += 1
        else:
            held = computed = 0
        after = computed + num_new_tokens
        if after == prompt + outputs:
            outputs += 1
        if emitted and outputs >= 1 and after == prompt + outputs - 1:
            after += 1
        return -(-after // bs) + (-held // bs)


class _ReadOnlyList(Sequence):
    """A read-only window on one of the engine's lists: no copy, live (valid during `schedule`)."""

    __slots__ = ("_items",)

    def __init__(self, items: list) -> None:
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self._items[index])
        return self._items[index]

    def __iter__(self):
        return iter(self._items)

    def __reversed__(self):
        return reversed(self._items)

    def __contains__(self, item) -> bool:
        return item in self._items

    def __repr__(self) -> str:
        return f"ReadOnlyList({self._items!r})"


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
        from ..metrics import summarize
        return summarize(self)


@dataclass(frozen=True)
class Simulator:
    """Runs a policy over a workload under a cost model and a KV capacity.

    ``max_num_batched_tokens``: engine-wide token budget per iteration (None: unlimited).
    ``separate_batching``: every iteration holds only prefill work or only decodes.
    ``fast``: fast-forward stable decode batches of `event_stable` policies (see the module
    docstring); False runs the reference loop. ``verify_stable``: step every boundary and check
    the `event_stable` promise (raises `EventStabilityError`). ``compiled``: run the built-in
    policies that have numba kernels (`kvsched.engine.compiled`; same results) compiled — None: when
    numba is installed and the run is supported, True: always (ConfigError if it cannot), False:
    never.
    """

    cost: CostModel
    kv_capacity_tokens: int
    block_size: int = 1
    kv_convention: KVConvention = KVConvention.COMPUTED
    max_num_batched_tokens: int | None = None
    separate_batching: bool = False
    record_iterations: bool = False
    fast: bool = True
    verify_stable: bool = False
    compiled: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kv_convention", KVConvention(self.kv_convention))
        if self.kv_capacity_tokens < self.block_size:
            raise ValueError("kv_capacity_tokens must hold at least one block")

    def run(self, workload: Workload, policy, *, seed: int | None = 0,
            progress: ProgressCallback | None = None) -> RunResult:
        """Simulate `workload` under `policy`. `seed` seeds the policy's own randomness (0 by
        default, so that runs are reproducible; None asks for fresh entropy)."""
        policy.reset(seed=seed)
        if self.compiled is not False:
            from . import compiled
            reason = compiled.unsupported(self, policy, workload)
            if reason is None:
                result = compiled.run(self, workload, policy, progress)
                if result is not None:
                    return result
            elif self.compiled:
                raise ConfigError(f"cannot run compiled: {reason}")
        return _Run(self, workload, policy, progress).execute()


class _Run:
    """The mutable state of one simulation run."""

    def __init__(self, sim: Simulator, workload: Workload, policy, progress) -> None:
        self.sim, self.workload, self.policy, self.progress = sim, workload, policy, progress
        self.kv_extra = int(sim.kv_convention is KVConvention.EMITTED)   # the emitted token's KV
        self.cache = KVCache(sim.kv_capacity_tokens, sim.block_size)
        self.states = [_make_state(workload, i) for i in range(len(workload))]
        for state in self.states:
            state.view = _EngineRequestView(state)
        self.oracle = Oracle(self.states) if policy.tags.clairvoyant else None
        self.waiting: list[RequestState] = []
        self.waiting_views: list = []
        self.running: dict[int, RequestState] = {}     # admission order
        self.running_views: list = []                  # the same, as views
        self.waiting_window = _ReadOnlyList(self.waiting_views)
        self.running_window = _ReadOnlyList(self.running_views)
        self.stable = policy.tags.event_stable and (sim.fast or sim.verify_stable)
        self.stable_horizon = getattr(policy, "stable_horizon", None)
        if getattr(type(policy), "stable_horizon", None) is Policy.stable_horizon:
            self.stable_horizon = None           # the base class's: no limit, not worth a call
        self.reserve_blocks = _reserve_blocks(policy) if self.stable else 0
        # What the fast path knows since the policy was last asked (see `_known_length`):
        self.skip_ok = False       # its decision scheduled every resident and evicted nothing
        self.all_decode = False    # ... and left every resident a decode
        self.deadline = 0          # its horizon: ask again at this iteration at the latest
        self.arrived = False       # an arrival became visible since
        self.progressed = False    # a request finished or completed its prefill since
        self.next_progress = 0
        self.fast_gaps: list[int] = []
        self.fast_context = 0
        self.price_decodes = fastpath.DecodeRunPricer(sim.cost)
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
            known = self._known_length()
            if known and not self.sim.verify_stable:
                self._fast_forward(self._decode_run(self._pure_batch(), known))
            else:
                self._ask_policy(known)
            if self.progress is not None and self.iteration >= self.next_progress:
                self.progress(self.num_done, n)
                self.next_progress = self.iteration + 512
        if self.progress is not None:
            self.progress(self.num_done, n)
        return self._result(time.perf_counter() - started)

    def _ask_policy(self, known: int) -> None:
        """Ask the policy for this boundary's decision and run it (one iteration, or a stretch)."""
        view = self._view()
        decision = self.policy.schedule(view)
        self.arrived = self.progressed = False
        evicted = self._evict(decision.evict)
        if not decision.num_tokens:
            self._check_stable(False, known)
            self.skip_ok = False
            if not evicted:                    # evictions alone change the state: ask again now
                self._idle(decision.wake_time)
            return
        plan, batch, used_blocks, num_resident, num_partial = self._validate(decision, evicted)
        pure = not evicted and not batch.num_prefill_seqs and batch.num_decode_seqs == len(self.running)
        self._check_stable(pure, known)
        self.skip_ok = self.stable and not evicted and num_resident == len(self.running)
        self.all_decode = num_partial == 0
        self.deadline = self._horizon(view) if self.skip_ok else 0
        if pure and self.skip_ok and not self.sim.verify_stable:
            length = self._pure_length()
            if length > 1:
                self._fast_forward(self._decode_run(batch, length))
                return
        self._run_iteration(decision, plan, batch, used_blocks)

    # ------------------------------------------------------------------ fast path
    def _known_length(self) -> int:
        """Iterations for which the policy's answer is known to be the pure decode step (0: ask).

        The contract (module docstring): the last decision scheduled every resident and evicted
        nothing, every resident is now a decode, no arrival has become visible since, no request
        finished or completed its prefill since if requests wait, the policy's horizon has not
        passed, and the step fits.
        """
        if not (self.skip_ok and self.all_decode and self.running) or self.arrived:
            return 0
        if (self.waiting and self.progressed) or self.iteration >= self.deadline:
            return 0
        return self._pure_length()

    def _check_stable(self, pure: bool, known: int) -> None:
        """Verify mode: where the fast path would not have asked, the answer must be pure."""
        if known and not pure:
            raise EventStabilityError(
                f"policy {self.policy.name!r} is tagged event_stable, but at t={self.now:g} "
                f"(iteration {self.iteration}) it departed from the pure decode step between events")

    def _horizon(self, view: SchedulerView) -> int:
        """The iteration at which the policy must be asked again at the latest (its horizon)."""
        horizon = None if self.stable_horizon is None else self.stable_horizon(view)
        if horizon is None:
            return sys.maxsize
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise InfeasibleDecisionError(f"policy {self.policy.name!r}: stable_horizon returned "
                                          f"{horizon!r}, expected None or an integer >= 1")
        return self.iteration + int(horizon)

    def _pure_length(self) -> int:
        """Iterations the pure decode step can run from this boundary before the next event.

        Bounded by the first completion, the first iteration that would overflow the KV cache (0
        when even this one would) and the policy's horizon; the next arrival is handled in
        `_decode_run` (it needs the times). Leaves the sorted block gaps (`fastpath.block_gaps`)
        and the batch's context tokens for `_fast_forward` and `_pure_batch`: one pass.
        """
        conv_extra = self.kv_extra
        block_size, cache = self.cache.block_size, self.cache
        length, context, gaps = self.deadline - self.iteration, 0, []
        for state in self.running.values():
            computed = state.num_computed_tokens
            remaining = state.true_output_tokens - state.num_output_tokens
            if remaining < length:
                length = remaining
            context += computed
            gaps.append(-(computed + conv_extra) % block_size)
        gaps.sort()
        self.fast_gaps, self.fast_context = gaps, context + len(gaps)
        free = cache.num_free_blocks - self.reserve_blocks
        if free < 0:
            return 0
        return min(length, fastpath.first_overflow_iteration(gaps, free, block_size))

    def _pure_batch(self) -> BatchStats:
        """The pure decode step's batch (after `_pure_length` at the same boundary)."""
        return BatchStats(num_decode_seqs=len(self.running), decode_context_tokens=self.fast_context)

    def _fast_forward(self, durations: np.ndarray | list[float]) -> None:
        """Run the pure decode step for ``len(durations)`` iterations (up to the next event).
        Times and sums are accumulated exactly as in the reference loop (a list: in plain Python,
        for short stretches; an array: with numpy)."""
        if isinstance(durations, list):
            self._fast_forward_short(durations)
            return
        length, cache = len(durations), self.cache
        if self.fast_gaps[0] >= length:      # no request needs a new block during the stretch
            used_tokens = np.full(length, cache.used_blocks * cache.block_size, dtype=np.int64)
        else:
            used_tokens = (cache.used_blocks + fastpath.new_blocks_by_iteration(
                self.fast_gaps, cache.block_size, length)) * cache.block_size
        self.kv_peak = max(self.kv_peak, int(used_tokens[-1]))
        # Clock, busy time and KV token-seconds: three left folds, as `x += v` in the loop.
        sums = np.empty((3, length + 1))
        sums[:, 0] = (self.now, self.busy_time, self.kv_token_seconds)
        sums[0, 1:] = sums[1, 1:] = durations
        sums[2, 1:] = used_tokens.astype(np.float64) * durations
        times = np.add.accumulate(sums, axis=1)
        self.busy_time, self.kv_token_seconds = float(times[1, -1]), float(times[2, -1])
        times = times[0]
        if self.iterations is not None:
            tokens = {rid: 1 for rid in self.running}
            self.iterations.extend(
                IterationRecord(float(times[k]), float(durations[k]), dict(tokens), (), int(used_tokens[k]))
                for k in range(length))
        self.now = end = float(times[-1])
        self.iteration += length
        self._advance_decodes(length, end)

    def _fast_forward_short(self, durations: list[float]) -> None:
        """`_fast_forward` in plain Python, the same operations iteration by iteration."""
        cache, gaps = self.cache, self.fast_gaps
        block_size, num_seqs, base_blocks = cache.block_size, len(gaps), cache.used_blocks
        now, busy, token_seconds = self.now, self.busy_time, self.kv_token_seconds
        tokens = {rid: 1 for rid in self.running} if self.iterations is not None else None
        for k, duration in enumerate(durations):
            m, r = divmod(k, block_size)
            used = (base_blocks + m * num_seqs + bisect.bisect_right(gaps, r)) * block_size
            if tokens is not None:
                self.iterations.append(IterationRecord(now, duration, dict(tokens), (), used))
            now += duration
            busy += duration
            token_seconds += used * duration
        self.kv_peak = max(self.kv_peak, used)
        self.now, self.busy_time, self.kv_token_seconds = now, busy, token_seconds
        self.iteration += len(durations)
        self._advance_decodes(len(durations), now)

    def _decode_run(self, batch: BatchStats, limit: int) -> np.ndarray | list[float]:
        """Durations of the stretch's iterations: `limit` of them, or up to the first boundary at
        or after the next arrival if that comes sooner. A stretch that looks short (at most
        `SHORT_STRETCH` iterations, or an arrival due within as many first-iteration durations) is
        priced one iteration at a time in Python and returned as a list, until it turns out
        longer; the rest is priced with numpy, in growing chunks."""
        seqs, context, price = batch.num_decode_seqs, batch.decode_context_tokens, self.price_decodes
        arrival = (self.states[self.next_arrival].arrival_time if self.next_arrival < len(self.states)
                   else None)
        short, start = [price.one(seqs, context)], self.now
        if limit > SHORT_STRETCH and (arrival is None or arrival - start > SHORT_STRETCH * short[0]):
            short = []                                           # looks long: numpy from the start
        for k in range(len(short) and min(limit, SHORT_STRETCH)):
            if k:
                short.append(price.one(seqs, context + k * seqs))
            start += short[k]
            if arrival is not None and start >= arrival:         # boundary k + 1 sees the arrival
                return short
        if len(short) == limit:
            return short
        parts, done, chunk = [np.array(short)], len(short), 64
        if arrival is None:
            parts.append(price(seqs, context + done * seqs, limit - done))
            return np.concatenate(parts)
        while done < limit:
            n = min(chunk, limit - done)
            durations = price(seqs, context + done * seqs, n)
            times = fastpath.accumulate(start, durations)
            seen = int(np.searchsorted(times[1:], arrival, side="left"))   # boundary done + seen + 1
            if seen < n:
                parts.append(durations[:seen + 1])
                break
            parts.append(durations)
            done, start, chunk = done + n, float(times[-1]), chunk * 4
        return np.concatenate(parts)

    def _advance_decodes(self, length: int, end: float) -> None:
        """Every resident request decoded `length` tokens; those whose last token came finish."""
        conv_extra = self.kv_extra
        cache, finished, block_size = self.cache, [], self.cache.block_size
        for rid, state in self.running.items():
            before = state.num_computed_tokens
            state.num_computed_tokens = after = before + length
            state.total_computed_tokens += length
            if before < state.max_computed_tokens:
                state.num_recomputed_tokens += min(length, state.max_computed_tokens - before)
            if after > state.max_computed_tokens:
                state.max_computed_tokens = after
            state.num_output_tokens += length
            if state.num_output_tokens == state.true_output_tokens:
                finished.append(state)
            elif (before + conv_extra - 1) // block_size != (after + conv_extra - 1) // block_size:
                cache.set_tokens(rid, after + conv_extra)      # it crossed into a new block
        for state in finished:
            self._finish(state, end)

    # ------------------------------------------------------------------ arrivals and the view
    def _admit_arrivals(self) -> None:
        states, n = self.states, len(self.states)
        while self.next_arrival < n and states[self.next_arrival].arrival_time <= self.now:
            state = states[self.next_arrival]
            self.next_arrival += 1
            self.arrived = True
            peak = peak_kv_tokens(state.num_prompt_tokens, state.true_output_tokens, self.sim.kv_convention)
            if self.cache.blocks(peak) > self.cache.capacity_blocks:
                state.status = Status.REJECTED
                state.reject_reason = (f"needs {peak} KV tokens at its last token; the KV capacity is "
                                       f"{self.cache.usable_tokens} tokens")
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
        return _EngineView(
            now=self.now, iteration=self.iteration, waiting=self.waiting_window,
            running=self.running_window,
            kv_capacity_tokens=self.cache.usable_tokens,
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
            self.running_views.remove(state.view)
            self.cache.free(rid)
            state.num_computed_tokens = 0
            state.num_evictions += 1
            state.status = Status.WAITING
            state.admitted_seq = None
            self._enqueue(state)
        return frozenset(evict)

    def _validate(self, decision: Decision, evicted: frozenset[int]):
        """Check a decision; return the plan — (resident decodes, other (state, tokens) pairs) —,
        the batch, KV blocks used after the iteration, and for the fast path the number of
        resident requests scheduled and of prefill chunks that do not complete their prompt (or
        recomputation)."""
        decodes, plan, budget = [], [], self.sim.max_num_batched_tokens
        num_resident_prefills = num_partial = 0
        total = prefill_tokens = prefill_seqs = decode_seqs = 0
        prefill_context = prefill_work = decode_context = 0
        used_blocks = self.cache.used_blocks
        convention, cache = self.sim.kv_convention, self.cache
        running, block_size = self.running, cache.block_size
        held_extra = self.kv_extra
        for rid, n in decision.num_tokens.items():
            state = running.get(rid)
            if (n == 1 and type(n) is int and state is not None and state.num_output_tokens >= 1
                    and state.num_computed_tokens == state.num_prompt_tokens + state.num_output_tokens - 1):
                # A resident decode (the common case): it grows by a block iff its last one is full.
                after = state.num_computed_tokens + 1
                used_blocks += (after - 1 + held_extra) % block_size == 0
                decode_seqs += 1
                decode_context += after
                total += 1
                decodes.append(state)
                continue
            state = self._schedulable(rid, evicted)
            uncomputed = state.num_prompt_tokens + state.num_output_tokens - state.num_computed_tokens
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= uncomputed:
                raise InfeasibleDecisionError(
                    f"request {rid}: {n!r} tokens scheduled, expected an integer in [1, {uncomputed}]")
            n = int(n)
            after = state.num_computed_tokens + n
            emits = n == uncomputed
            num_partial += not emits
            kv_after = kv_tokens_held(after, state.num_prompt_tokens, state.num_output_tokens + emits,
                                      convention)
            used_blocks += cache.blocks(kv_after) - cache.held_blocks(rid)
            if emits and n == 1 and state.num_output_tokens >= 1:
                decode_seqs += 1
                decode_context += after
            else:
                num_resident_prefills += state.status is Status.RUNNING
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
        return (decodes, plan), batch, used_blocks, decode_seqs + num_resident_prefills, num_partial

    def _schedulable(self, rid, evicted) -> RequestState:
        if not isinstance(rid, (int, np.integer)) or not 0 <= rid < len(self.states):
            raise InfeasibleDecisionError(f"unknown request id {rid!r}")
        state = self.states[rid]
        if state.status not in (Status.WAITING, Status.RUNNING):
            raise InfeasibleDecisionError(f"request {rid} is {state.status.value}, not schedulable")
        if rid in evicted:
            raise InfeasibleDecisionError(f"request {rid} is evicted and scheduled in the same decision")
        return state

    def _run_iteration(self, decision: Decision, plan, batch: BatchStats, used_blocks: int) -> None:
        duration = float(self.sim.cost.iteration_time(batch))
        start, end = self.now, self.now + duration
        used_tokens = used_blocks * self.cache.block_size
        self.kv_peak = max(self.kv_peak, used_tokens)
        self.kv_token_seconds += used_tokens * duration
        self.busy_time += duration
        if self.iterations is not None:
            self.iterations.append(IterationRecord(start, duration, {int(rid): int(n) for rid, n in
                                                                     decision.num_tokens.items()},
                                                   tuple(decision.evict), used_tokens))
        decodes, others = plan
        held_extra, block_size = self.kv_extra, self.cache.block_size
        for state in decodes:
            # `_advance` for a resident decode (1 token computed, 1 emitted), in fewer steps.
            before = state.num_computed_tokens
            state.num_computed_tokens = after = before + 1
            state.total_computed_tokens += 1
            if before < state.max_computed_tokens:
                state.num_recomputed_tokens += 1
            elif after > state.max_computed_tokens:
                state.max_computed_tokens = after
            state.num_output_tokens += 1
            if state.num_output_tokens == state.true_output_tokens:
                self._finish(state, end)
            elif (after - 1 + held_extra) % block_size == 0:     # the KV crossed into a new block
                self.cache.set_tokens(state.request_id, after + held_extra)
        for state, n in others:
            self._advance(state, n, start, end)
        self.now = end
        self.iteration += 1

    def _finish(self, state: RequestState, end: float) -> None:
        self.progressed = True
        state.finish_time = end
        state.status = Status.FINISHED
        del self.running[state.request_id]
        self.running_views.remove(state.view)
        self.cache.free(state.request_id)
        self.num_done += 1

    def _advance(self, state: RequestState, n: int, start: float, end: float) -> None:
        rid = state.request_id
        if state.status is Status.WAITING:
            self._dequeue(state)
            state.status = Status.RUNNING
            state.admitted_seq = self.admit_counter
            self.admit_counter += 1
            self.running[rid] = state
            self.running_views.append(state.view)
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
            self.progressed = True     # a prefill (or recomputation) completed, or a slow-path decode
            if state.first_token_time is None:
                state.first_token_time = end
            if state.num_output_tokens == state.true_output_tokens:
                self._finish(state, end)
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
            kv_capacity_tokens=self.cache.usable_tokens,
            first_scheduled_time=column("first_scheduled_time"), first_token_time=column("first_token_time"),
            finish_time=column("finish_time"), num_evictions=column("num_evictions", np.int64),
            num_recomputed_tokens=column("num_recomputed_tokens", np.int64),
            num_computed_tokens=column("total_computed_tokens", np.int64), rejected=rejected,
            reject_reasons={s.request_id: s.reject_reason for s in self.states if s.reject_reason},
            num_iterations=self.iteration, busy_time=self.busy_time, kv_peak_tokens=self.kv_peak,
            kv_token_seconds=self.kv_token_seconds, wall_time=wall_time, iterations=self.iterations)


def _reserve_blocks(policy) -> int:
    reserve = getattr(policy, "stable_reserve_blocks", None)
    reserve = 0 if reserve is None else reserve()
    if isinstance(reserve, bool) or not isinstance(reserve, (int, np.integer)) or reserve < 0:
        raise InfeasibleDecisionError(f"policy {policy.name!r}: stable_reserve_blocks() returned "
                                      f"{reserve!r}, expected an integer >= 0")
    return int(reserve)


def _make_state(workload: Workload, i: int) -> RequestState:
    def opt(col, cast):
        return None if col is None else cast(col[i])
    return RequestState(i, float(workload.arrival_time[i]), int(workload.num_prompt_tokens[i]),
                        int(workload.true_output_tokens[i]), opt(workload.predicted_output_tokens, float),
                        opt(workload.predicted_lo, int), opt(workload.predicted_hi, int),
                        opt(workload.type_id, int))
