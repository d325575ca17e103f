"""The engine's fast path (DESIGN.md §4): advancing a stable decode batch many iterations at once.

``Simulator(fast=True)`` is the default; ``Simulator(fast=False)`` is the reference loop, which asks the policy at every boundary; it is the
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

A *pure decode step* is a decision in which every resident request is a decode (all its known
tokens but the newest are computed) and gets exactly 1 token, no waiting request is scheduled and
nothing is evicted. Run for k iterations, such a batch changes only by +1 KV token per request per
iteration, so everything the engine needs is a function of k:

- request i, holding ``h_i`` KV tokens at the boundary, holds ``h_i + k + 1`` after iteration k
  (0-based), under both KV conventions; in blocks, ``ceil((h_i + k + 1) / block_size)``;
- iteration k's batch is ``BatchStats(num_decode_seqs=B, decode_context_tokens=C0 + k·B)``;
- request i emits its last token in iteration ``r_i - 1`` (``r_i`` = output tokens still to come).

The policy contract (`PolicyTags.event_stable`) is documented in `kvsched.engine.simulator`; this module holds
the arithmetic, free of engine state, so it can be tested on its own.

Exactness. The engine's clock is a float accumulated one iteration at a time, and an arrival is seen
at the first boundary whose time is >= its arrival time, so a closed-form sum of the times (which
rounds differently) could see an arrival one iteration early or late. The fast path therefore
evaluates each iteration's duration with the same floating-point operations as
``cost.iteration_time`` (vectorised) and accumulates them left to right with ``np.add.accumulate``
(a sequential fold): times, busy time and KV token-seconds are bit-identical to the reference loop.
The arithmetic series of `LinearCost` is still what makes that cheap: durations are
``d0 + d1 · (C0 + k·B)``, one vector expression.

Cost models. ``decode_run_durations`` uses, in order: the model's own
``decode_run_durations(num_decode_seqs, decode_context_tokens, num_iterations)`` method if it has
one (the `DecodeRunCost` protocol: a cost model whose decode time depends on the decode sequences
and their context tokens provides it, returning exactly what ``iteration_time`` would for each
iteration; `CalibratedCost` does); built-in vector forms for `UnitTime` and `LinearCost`; otherwise
a loop calling ``iteration_time`` once per iteration (still far cheaper than a policy call per
iteration). Short runs are priced one iteration at a time, with the model's
``decode_iteration_time(num_decode_seqs, decode_context_tokens)`` where it has one. The engine
prices runs through a `DecodeRunPricer`, which spot-checks any model-provided form against
``iteration_time`` and falls back to the loop on a difference.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import bisect
import sys

import numpy as np

from ..cost.models import BatchStats, CostModel, LinearCost, UnitTime
from ..errors import InfeasibleDecisionError, KvschedError
from ..policies.base import Policy
from .memory import block_gaps, first_overflow_iteration, new_blocks_by_iteration  # noqa: F401
from .result import IterationRecord
from .rules import KVConvention
from ..state import Status
from .validation import Validation

_RUNNING, _WAITING = Status.RUNNING, Status.WAITING

SHORT_STRETCH = 32      # stretches up to this long are priced and folded in plain Python


def decode_extra_blocks(computed: int, kv_extra: int, block_size: int) -> int:
    """`rules.extra_blocks` of a resident decode (one token, ``computed`` = prompt + outputs - 1;
    `kv_extra` = 1 under EMITTED): a new block exactly when its last one is full. The fast form of
    the rule, inlined in `FastForward.validate` and the fast engine view (a call per decode per
    boundary is too dear there); tests/engine/test_fastforward.py ties all three to the plain rule."""
    return int((computed + kv_extra) % block_size == 0)


@runtime_checkable
class DecodeRunCost(Protocol):
    """A cost model that can price a run of pure decode iterations at once.

    ``decode_run_durations(B, C0, n)[k]`` must equal (bit for bit, for the fast path to stay exact)
    ``iteration_time(BatchStats(num_decode_seqs=B, decode_context_tokens=C0 + k * B))``.
    """

    def decode_run_durations(self, num_decode_seqs: int, decode_context_tokens: int,
                             num_iterations: int) -> np.ndarray: ...


def decode_run_durations(cost: CostModel, num_decode_seqs: int, decode_context_tokens: int,
                         num_iterations: int) -> np.ndarray:
    """Durations (float64, seconds) of `num_iterations` pure decode iterations.

    Iteration k has `num_decode_seqs` decodes attending to ``decode_context_tokens + k ·
    num_decode_seqs`` context tokens in total (each decode's context grows by one per iteration).
    """
    method = getattr(cost, "decode_run_durations", None)
    if method is not None:
        return np.asarray(method(num_decode_seqs, decode_context_tokens, num_iterations),
                          dtype=np.float64)
    if type(cost) is UnitTime:
        return np.ones(num_iterations)
    if type(cost) is LinearCost:
        # Same operations as LinearCost.iteration_time: d0 + d1 * float(kv_tokens).
        context = decode_context_tokens + num_decode_seqs * np.arange(num_iterations, dtype=np.int64)
        return cost.d0 + cost.d1 * context.astype(np.float64)
    return loop_durations(cost, num_decode_seqs, decode_context_tokens, num_iterations)


def loop_durations(cost: CostModel, num_decode_seqs: int, decode_context_tokens: int,
                   num_iterations: int) -> np.ndarray:
    """`decode_run_durations` by calling ``cost.iteration_time`` once per iteration."""
    return np.array([float(cost.iteration_time(BatchStats(
        num_decode_seqs=num_decode_seqs,
        decode_context_tokens=decode_context_tokens + k * num_decode_seqs)))
        for k in range(num_iterations)], dtype=np.float64)


class DecodeRunPricer:
    """Prices runs of pure decode iterations for one simulation.

    `UnitTime` and `LinearCost` are exact by construction (and tested). A model's own forms
    (``decode_run_durations``, ``decode_iteration_time``) are spot-checked against
    ``iteration_time``: the first and last iteration of the first `num_checks` runs, and the
    first `num_checks` single iterations; on any difference the pricer falls back to the
    per-iteration loop for the rest of the simulation, so the fast path never trades exactness for
    speed.
    """

    def __init__(self, cost: CostModel, num_checks: int = 16) -> None:
        self.cost = cost
        exact = type(cost) in (UnitTime, LinearCost) and not hasattr(cost, "decode_run_durations")
        self.num_checks = self.num_one_checks = 0 if exact else num_checks
        self.use_loop = False
        self.decode_one = getattr(cost, "decode_iteration_time", None)

    def one(self, num_decode_seqs: int, decode_context_tokens: int) -> float:
        """The duration of one pure decode iteration, in plain Python (short stretches, where a
        numpy call costs more than the arithmetic). Same value as ``iteration_time``."""
        cost = self.cost
        if type(cost) is LinearCost:
            return cost.d0 + cost.d1 * decode_context_tokens
        if type(cost) is UnitTime:
            return 1.0
        if self.decode_one is not None and not self.use_loop:
            value = self.decode_one(num_decode_seqs, decode_context_tokens)
            if not self.num_one_checks:
                return value
            self.num_one_checks -= 1
            expected = float(cost.iteration_time(BatchStats(num_decode_seqs=num_decode_seqs,
                                                            decode_context_tokens=decode_context_tokens)))
            if value == expected:
                return value
            self.use_loop = True
        return float(cost.iteration_time(BatchStats(num_decode_seqs=num_decode_seqs,
                                                    decode_context_tokens=decode_context_tokens)))

    def __call__(self, num_decode_seqs: int, decode_context_tokens: int, num_iterations: int) -> np.ndarray:
        args = (self.cost, num_decode_seqs, decode_context_tokens, num_iterations)
        if self.use_loop:
            return loop_durations(*args)
        durations = decode_run_durations(*args)
        if self.num_checks:
            self.num_checks -= 1
            for k in {0, num_iterations - 1}:
                expected = float(self.cost.iteration_time(BatchStats(
                    num_decode_seqs=num_decode_seqs,
                    decode_context_tokens=decode_context_tokens + k * num_decode_seqs)))
                if durations[k] != expected:
                    self.use_loop = True
                    return loop_durations(*args)
        return durations


def accumulate(start: float, values: np.ndarray) -> np.ndarray:
    """``[start, start + v0, (start + v0) + v1, ...]``: a left fold, as ``x += v`` in a loop."""
    out = np.empty(len(values) + 1, dtype=np.float64)
    out[0] = start
    out[1:] = values
    return np.add.accumulate(out)


class EventStabilityError(KvschedError):
    """A policy tagged `event_stable` changed a pure decode step between events (verify mode)."""


class FastForward:
    """The fast path of one `Simulation` (``Simulator(fast=True)``; module docstring).

    It checks and advances the decisions of stepped iterations with resident decodes handled in
    one tight loop (the rest through the simulation's plain rules) and, for a policy tagged
    `event_stable`, tracks what is known since the policy was last asked and advances pure decode
    stretches many iterations at once. Everything it does
    gives the reference loop's records bit for bit (tests/engine/test_fastforward.py).
    """

    def __init__(self, simulation) -> None:
        self.s = simulation
        policy = simulation.policy
        self.kv_extra = int(simulation.simulator.kv_convention is KVConvention.EMITTED)  # the emitted token's KV
        self.stable = policy.tags.event_stable     # stretches only for policies that promise it
        self.stable_horizon = getattr(policy, "stable_horizon", None)
        if getattr(type(policy), "stable_horizon", None) is Policy.stable_horizon:
            self.stable_horizon = None           # the base class's: no limit, not worth a call
        self.reserve_blocks = _reserve_blocks(policy) if self.stable else 0
        self.skip_ok = False       # the last decision scheduled every resident and evicted nothing
        self.all_decode = False    # ... and left every resident a decode
        self.deadline = 0          # the policy's horizon: ask again at this iteration at the latest
        self.gaps: list[int] = []  # sorted free slots in each resident's last block (`_pure_length`)
        self.context = 0           # the pure decode step's context tokens (`_pure_length`)
        self.price = DecodeRunPricer(simulation.simulator.cost)

    # ------------------------------------------------------------------ what is known
    def known_length(self) -> int:
        """Iterations for which the policy's answer is known to be the pure decode step (0: ask).

        The contract: the last decision scheduled every resident and evicted nothing, every
        resident is now a decode, no arrival has become visible since, no request finished or
        completed its prefill since if requests wait, the policy's horizon has not passed, and the
        step fits.
        """
        s = self.s
        if not (self.stable and self.skip_ok and self.all_decode and s.running) or s.arrived:
            return 0
        if (s.waiting and s.progressed) or s.iteration >= self.deadline:
            return 0
        return self._pure_length()

    def forward_known(self, known: int) -> None:
        """Run the pure decode step for the `known` iterations (up to the next arrival)."""
        self._forward(self._durations(len(self.s.running), self.context, known))

    def observe_idle(self, known: int) -> None:
        """The policy scheduled nothing."""
        self._check_stable(False, known)
        self.skip_ok = False

    def observe(self, view, checked: Validation, evicted: bool, known: int) -> bool:
        """Take note of an accepted decision; if it is the pure decode step and may be repeated,
        run it as a stretch up to the next event and return True."""
        if not self.stable:
            return False
        s = self.s
        batch = checked.batch
        pure = not evicted and not batch.num_prefill_seqs and batch.num_decode_seqs == len(s.running)
        self._check_stable(pure, known)
        self.skip_ok = not evicted and checked.num_resident == len(s.running)
        self.all_decode = checked.num_partial == 0
        self.deadline = self._horizon(view) if self.skip_ok else 0
        if pure and self.skip_ok and not s.simulator.verify_stable:
            length = self._pure_length()
            if length > 1:
                self._forward(self._durations(batch.num_decode_seqs, batch.decode_context_tokens, length))
                return True
        return False

    def _check_stable(self, pure: bool, known: int) -> None:
        """Verify mode: where the fast path would not have asked, the answer must be pure."""
        if known and not pure:
            s = self.s
            raise EventStabilityError(
                f"policy {s.policy.name!r} is tagged event_stable, but at t={s.now:g} "
                f"(iteration {s.iteration}) it departed from the pure decode step between events")

    def _horizon(self, view) -> int:
        """The iteration at which the policy must be asked again at the latest (its horizon)."""
        horizon = None if self.stable_horizon is None else self.stable_horizon(view)
        if horizon is None:
            return sys.maxsize
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise InfeasibleDecisionError(f"policy {self.s.policy.name!r}: stable_horizon returned "
                                          f"{horizon!r}, expected None or an integer >= 1")
        return self.s.iteration + int(horizon)

    def _pure_length(self) -> int:
        """Iterations the pure decode step can run from this boundary before the next event.

        Bounded by the first completion, the first iteration that would overflow the KV cache (0
        when even this one would) and the policy's horizon; the next arrival is handled in
        `_durations` (it needs the times). Leaves the sorted block gaps and the batch's context
        tokens for `_forward` and `forward_known`: one pass.
        """
        s, conv_extra = self.s, self.kv_extra
        cache = s.cache
        block_size = cache.block_size
        length, context, gaps = self.deadline - s.iteration, 0, []
        for state in s.running.values():
            computed = state.num_computed_tokens
            remaining = state.true_output_tokens - state.num_output_tokens
            if remaining < length:
                length = remaining
            context += computed
            gaps.append(-(computed + conv_extra) % block_size)
        gaps.sort()
        self.gaps, self.context = gaps, context + len(gaps)
        free = cache.num_free_blocks - self.reserve_blocks
        if free < 0:
            return 0
        return min(length, first_overflow_iteration(gaps, free, block_size))

    # ------------------------------------------------------------------ stepped iterations
    def validate(self, decision, evicted: frozenset[int]) -> Validation:
        """`Simulation._validate` in one pass, the plain rules inlined: resident decodes (1
        token, an int, the common case) in a few operations, every other entry with the checks
        and arithmetic of `Simulation.plan` (an int id of a waiting or resident request not
        evicted, an int n from 1 to its uncomputed tokens; `fast_batch.extra_blocks` for its
        blocks) and the sums in locals (no `Tally`: one pass per stepped iteration is what this
        path is for). Any entry that fails those checks, and any decision over one of the
        engine's limits, is handed whole to the plain `_validate`: it raises the error, or
        accepts what only it accepts (numpy ints). tests/engine/test_fastforward.py compares
        the two."""
        s = self.s
        if s.prefix:
            # with prefix caching every entry is allocated in the decision's order, decodes too
            # (the order decides the blocks reused and the same-step hits): the plain rules
            return s._validate(decision, evicted)
        running, states, emitted = s.running, s.states, self.kv_extra
        cache = s.cache
        block_size, num_states = cache.block_size, len(states)
        decodes, plan = [], []
        used, decode_context = cache.used_blocks, 0
        resident = partial = prefill_tokens = prefill_context = prefill_work = 0
        for rid, n in decision.num_tokens.items():
            state = running.get(rid)
            if (n == 1 and type(n) is int and state is not None and state.num_output_tokens >= 1
                    and state.num_computed_tokens == state.num_prompt_tokens + state.num_output_tokens - 1):
                computed = state.num_computed_tokens
                used += (computed + emitted) % block_size == 0      # decode_extra_blocks, inlined
                decode_context += computed + 1
                decodes.append(state)
                continue
            state = states[rid] if type(rid) is int and 0 <= rid < num_states else None
            if state is None or type(n) is not int or rid in evicted:
                return s._validate(decision, evicted)
            status = state.status
            prompt, outputs, computed = state.num_prompt_tokens, state.num_output_tokens, state.num_computed_tokens
            known = prompt + outputs
            if not (status is _RUNNING or status is _WAITING) or not 1 <= n <= known - computed:
                return s._validate(decision, evicted)
            # Not a resident decode (those took the branch above; a waiting request has computed
            # nothing): a prefill chunk, holding its computed tokens under both conventions.
            # rules.extra_blocks(computed, prompt, outputs, n, ...), as `fast_batch.extra_blocks`
            after = computed + n
            emits = after == known
            kv_after = after + (emitted and (emits or (outputs >= 1 and after == known - 1)))
            used += (-computed // block_size) - (-kv_after // block_size)
            resident += status is _RUNNING
            partial += not emits
            prefill_tokens += n
            prefill_context += after
            prefill_work += n * after
            plan.append((state, n))
        num_decodes, num_prefills = len(decodes), len(plan)
        budget = s.simulator.max_num_batched_tokens
        if ((budget is not None and num_decodes + prefill_tokens > budget) or used > cache.capacity_blocks
                or (s.simulator.separate_batching and num_prefills and num_decodes)):
            return s._validate(decision, evicted)              # over a limit: the plain check raises
        batch = BatchStats(prefill_tokens, num_prefills, num_decodes, prefill_context, prefill_work,
                           decode_context)
        return Validation(tuple(decodes), tuple(plan), batch, used, resident + num_decodes, partial)

    def advance_decodes(self, states, length: int, end: float, ends=None) -> None:
        """Each of `states` (resident decodes) decoded `length` tokens by `end` (the iterations
        ended at `ends`, needed when token gaps are recorded and length > 1); those whose last
        token came finish. `rules.advance` applied `length` times, in closed form."""
        s, conv_extra = self.s, self.kv_extra
        cache, finished, block_size, prefix = s.cache, [], s.cache.block_size, s.prefix
        if s.token_gaps is not None:
            self._record_gaps(states, length, end, ends)
        for state in states:
            before = state.num_computed_tokens
            state.num_computed_tokens = after = before + length
            state.total_computed_tokens += length
            if before < state.high_water_tokens:
                state.num_recomputed_tokens += min(length, state.high_water_tokens - before)
            if after > state.high_water_tokens:
                state.high_water_tokens = after
            state.num_output_tokens += length
            if prefix:
                # `PrefixCache.set_tokens`: a new block, or a full one to cache (finishing ones
                # too: their last blocks are allocated and cached before they free them)
                if (before - 1) // block_size != after // block_size:
                    cache.set_tokens(state.request_id, after)
                if state.num_output_tokens == state.true_output_tokens:
                    finished.append(state)
            elif state.num_output_tokens == state.true_output_tokens:
                finished.append(state)
            elif (before + conv_extra - 1) // block_size != (after + conv_extra - 1) // block_size:
                cache.set_tokens(state.request_id, after + conv_extra)      # it crossed into a new block
        for state in finished:
            s.finish(state, end)

    def advance_one(self, states, end: float) -> None:
        """`advance_decodes(states, 1, end)`: one stepped iteration's resident decodes, in
        fewer steps when neither token gaps nor prefix caching are recorded (the same updates:
        with one token, recomputation is that token, and the KV crosses into a new block iff
        ``after + kv_extra - 1`` is a multiple of the block size)."""
        s = self.s
        if s.token_gaps is not None or s.prefix:
            self.advance_decodes(states, 1, end)
            return
        cache, conv_extra, finished = s.cache, self.kv_extra, []
        block_size, set_tokens = cache.block_size, cache.set_tokens
        for state in states:
            before = state.num_computed_tokens
            state.num_computed_tokens = after = before + 1
            state.total_computed_tokens += 1
            if before < state.high_water_tokens:
                state.num_recomputed_tokens += 1
            elif after > state.high_water_tokens:
                state.high_water_tokens = after
            state.num_output_tokens += 1
            if state.num_output_tokens == state.true_output_tokens:
                finished.append(state)
            elif (after + conv_extra - 1) % block_size == 0:
                set_tokens(state.request_id, after + conv_extra)    # it crossed into a new block
        for state in finished:
            s.finish(state, end)

    def advance_step(self, state, n: int, start: float, end: float) -> None:
        """`Simulation._advance` (any entry of a stepped iteration's plan) with `rules.advance`,
        `rules.is_decode_step` and `rules.kv_tokens_held` inlined; tests/engine/test_fastforward.py
        compares the two on every small state."""
        s = self.s
        rid = state.request_id
        if state.status is _WAITING:
            s.admit(state, start)
        prompt, outputs, computed = state.num_prompt_tokens, state.num_output_tokens, state.num_computed_tokens
        high = state.high_water_tokens
        state.num_computed_tokens = after = computed + n
        if after > high:
            state.high_water_tokens = after
        state.total_computed_tokens += n
        if computed < high:
            state.num_recomputed_tokens += n if n < high - computed else high - computed
        if after == prompt + outputs:                           # it emits
            if n != 1 or outputs < 1:
                s.progressed = True                             # a prefill (or recomputation) completed
            state.num_output_tokens = outputs = outputs + 1
            if state.first_token_time is None:
                state.first_token_time = end
            if outputs >= 2 and s.token_gaps is not None:
                s.token_gaps[s.gap_offsets[rid] + outputs - 2] = end - state.last_token_time
            state.last_token_time = end
            if outputs == state.true_output_tokens:
                s.finish(state, end)
                return
        s.cache.set_tokens(rid, after + (self.kv_extra and outputs >= 1 and after == prompt + outputs - 1))

    def _record_gaps(self, states, length: int, end: float, ends) -> None:
        """The token gaps of `advance_decodes`: each state's first token here follows its last
        one before; the others follow one another, one per iteration."""
        gaps, offsets = self.s.token_gaps, self.s.gap_offsets
        steps = np.diff(np.asarray(ends, dtype=np.float64)) if length > 1 else None
        first_end = end if length == 1 else float(ends[0])
        for state in states:
            k = offsets[state.request_id] + state.num_output_tokens - 1
            gaps[k] = first_end - state.last_token_time
            if steps is not None:
                gaps[k + 1:k + length] = steps
            state.last_token_time = end

    # ------------------------------------------------------------------ stretches
    def _forward(self, durations: np.ndarray | list[float]) -> None:
        """Run the pure decode step for ``len(durations)`` iterations (up to the next event).
        Times and sums are accumulated exactly as in the reference loop (a list: in plain Python,
        for short stretches; an array: with numpy)."""
        if isinstance(durations, list):
            self._forward_short(durations)
            return
        s = self.s
        length, cache = len(durations), s.cache
        if self.gaps[0] >= length:      # no request needs a new block during the stretch
            used_tokens = np.full(length, cache.used_blocks * cache.block_size, dtype=np.int64)
        else:
            used_tokens = (cache.used_blocks + new_blocks_by_iteration(
                self.gaps, cache.block_size, length)) * cache.block_size
        s.kv_peak = max(s.kv_peak, int(used_tokens[-1]))
        # Clock, busy time and KV token-seconds: three left folds, as `x += v` in the loop.
        sums = np.empty((3, length + 1))
        sums[:, 0] = (s.now, s.busy_time, s.kv_token_seconds)
        sums[0, 1:] = sums[1, 1:] = durations
        sums[2, 1:] = used_tokens.astype(np.float64) * durations
        times = np.add.accumulate(sums, axis=1)
        s.busy_time, s.kv_token_seconds = float(times[1, -1]), float(times[2, -1])
        times = times[0]
        if s.iterations is not None:
            tokens, evicted = {rid: 1 for rid in s.running}, s.take_evicted()
            s.iterations.extend(
                IterationRecord(float(times[k]), float(durations[k]), dict(tokens), () if k else evicted,
                                int(used_tokens[k]))
                for k in range(length))
        s.evicted_since.clear()
        s.now = end = float(times[-1])
        s.iteration += length
        self.advance_decodes(list(s.running.values()), length, end, times[1:])

    def _forward_short(self, durations: list[float]) -> None:
        """`_forward` in plain Python, the same operations iteration by iteration."""
        s, gaps = self.s, self.gaps
        cache = s.cache
        block_size, num_seqs, base_blocks = cache.block_size, len(gaps), cache.used_blocks
        now, busy, token_seconds = s.now, s.busy_time, s.kv_token_seconds
        tokens = {rid: 1 for rid in s.running} if s.iterations is not None else None
        evicted = s.take_evicted() if s.evicted_since else ()
        ends = [] if s.token_gaps is not None else None
        for k, duration in enumerate(durations):
            m, r = divmod(k, block_size)
            used = (base_blocks + m * num_seqs + bisect.bisect_right(gaps, r)) * block_size
            if tokens is not None:
                s.iterations.append(IterationRecord(now, duration, dict(tokens), () if k else evicted, used))
            now += duration
            busy += duration
            token_seconds += used * duration
            if ends is not None:
                ends.append(now)
        s.kv_peak = max(s.kv_peak, used)
        s.now, s.busy_time, s.kv_token_seconds = now, busy, token_seconds
        s.iteration += len(durations)
        self.advance_decodes(list(s.running.values()), len(durations), now, ends)

    def _durations(self, seqs: int, context: int, limit: int) -> np.ndarray | list[float]:
        """Durations of the stretch's iterations: `limit` of them, or up to the first boundary at
        or after the next arrival if that comes sooner. A stretch that looks short (at most
        `SHORT_STRETCH` iterations, or an arrival due within as many first-iteration durations) is
        priced one iteration at a time in Python and returned as a list, until it turns out
        longer; the rest is priced with numpy, in growing chunks."""
        s, price = self.s, self.price
        arrival = s.next_arrival_time()
        short, start = [price.one(seqs, context)], s.now
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
            times = accumulate(start, durations)
            seen = int(np.searchsorted(times[1:], arrival, side="left"))   # boundary done + seen + 1
            if seen < n:
                parts.append(durations[:seen + 1])
                break
            parts.append(durations)
            done, start, chunk = done + n, float(times[-1]), chunk * 4
        return np.concatenate(parts)


def _reserve_blocks(policy) -> int:
    reserve = getattr(policy, "stable_reserve_blocks", None)
    reserve = 0 if reserve is None else reserve()
    if isinstance(reserve, bool) or not isinstance(reserve, (int, np.integer)) or reserve < 0:
        raise InfeasibleDecisionError(f"policy {policy.name!r}: stable_reserve_blocks() returned "
                                      f"{reserve!r}, expected an integer >= 0")
    return int(reserve)
