"""The future-memory check shared by MC-SF, A_max, A_min and H-SF (ALGORITHMS.md §1, §3).

Timeline model. Iterations are indexed by the engine's ``view.iteration`` (one per batch; under
`UnitTime` these are the papers' rounds). A request that is computed in every iteration from
iteration ``I`` on holds ``kv(I) = view.kv_tokens_after(r, r.num_uncomputed_tokens)`` KV tokens
after iteration I (its whole prompt, or its prompt plus the tokens it must recompute, in one
iteration; ``s + g + emitted_offset`` for a request with g tokens generated) and one more token in
every following iteration. So it holds ``base + k`` tokens in iteration k, with the constant
``base = kv(I) − I``, until its predicted last iteration ``end = I + (õ − g) − 1``. Under EMITTED,
UnitTime and block size 1 a request started at round t holds s + (k − t + 1) tokens in round k,
i.e. s + j while emitting token j: the papers' s_i + t' − p_i.

Chunked prefill (an engine token budget N, ``max_num_batched_tokens``; not in the papers). A request
with U uncomputed tokens (prompt, plus generated tokens to recompute after an eviction) that gets
n < U tokens in iteration I needs ``extra`` more iterations to compute the rest, so it emits its
next token at the end of iteration I + extra instead of I, and its whole timeline moves extra
iterations later: ``base = kv(I) − I − extra``, ``end = I + extra + (õ − g) − 1``. The request holds
only its computed tokens meanwhile; each prefill iteration computes at least one token, so after
iteration I + m (m < extra) it holds at most kv(I) − (extra − m) = base + k: the linear timeline is
an upper bound during the prefill and exact from its last iteration on. ``extra`` comes from the
shares the policy serves (`FutureMemoryPolicy`): resident requests in admission order, so every
request served before this one takes one token per iteration while it is resident — up to its
predicted end — and this one the rest of N (`prefill_iterations`). With exact predictions the
shares, hence the timeline, come true, and a request re-estimated in a later iteration of its
prefill gets the same (base, end). With no budget n = U, extra = 0: the papers' rule unchanged.

Check. With blocks of B tokens the predicted load of a set of requests in iteration k is
L(k) = Σ_{r: end_r ≥ k} ⌈(base_r + k) / B⌉. Between two consecutive ends the set is fixed and every
term is nondecreasing in k, so max_{I ≤ k ≤ T} L(k) is reached at an end ≤ T or at T itself: only
the sorted completion breakpoints need checking (MC-SF's observation), never every future round.

`FutureMemory` keeps the entries sorted by end together with ``peak[j] = L(end_j)`` of the current
set and updates the peaks incrementally:

- ``fits(base, end, cap)``: L'(end_j) = peak_j + own blocks ≤ cap for the ends ≤ end, and
  L(end) + own ≤ cap. Block size 1: O(log n) — the first condition is one prefix maximum of
  peak_j + end_j and L(end) is a suffix sum, both kept as lists rebuilt in O(n) after a change.
  Larger blocks: O(n) vectorised numpy (O(k) in the breakpoints ≤ end plus the entries ≥ end).
- ``add`` / ``remove``: O(log n) to locate, O(n) vectorised to update the peaks.
- ``update``: many changes at once (A_min raising many estimates) rebuild everything in
  O(n log n) (O(n·B) for blocks of B ≤ 64 tokens).
- ``drop_before(I)``: entries predicted to end before iteration I contribute to no future peak and
  are dropped without touching the others.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import ConfigError
from ..state import Decision, RequestView, SchedulerView, Status
from .base import Policy

# The timeline's entries are the columns of one (4, n) int64 table, sorted by end: one
# concatenation inserts or deletes an entry in all four rows (numpy's per-call overhead, not its
# arithmetic, is most of the cost at a few hundred entries; the timeline changes at every
# admission, in a server also at every admission the engine defers).
_END, _BASE, _ID, _PEAK = range(4)
_EMPTY = np.zeros((4, 0), dtype=np.int64)


class FutureMemory:
    """Predicted KV timeline of a set of requests (see the module docstring); units: blocks."""

    __slots__ = ("block_size", "_table", "_ends", "_entry", "_lists", "_loads")

    def __init__(self, block_size: int = 1) -> None:
        self.block_size = block_size
        self._table = _EMPTY
        # the ends row as a list, searched by bisect: a numpy call per search costs more than the
        # search at a few hundred entries (the policy searches at every iteration and admission)
        self._ends: list[int] = []
        self._entry: dict[int, tuple[int, int]] = {}
        self._lists: tuple[list[int], list[int]] | None = None
        # load_at's answers since the last change (`_changed`): a policy asks the same ones
        # several times per iteration (the overflow guard and the admission scan both ask L(now);
        # ``fits`` then ``add`` both ask L(end)), each O(n) numpy for blocks of B > 1.
        self._loads: dict[int, int] = {}

    # The rows, sorted by end, as read-only views (every change builds a new table).
    ends = property(lambda self: self._table[_END])
    bases = property(lambda self: self._table[_BASE])
    ids = property(lambda self: self._table[_ID])
    peaks = property(lambda self: self._table[_PEAK], doc="peaks[j] = L(ends[j]) of the current set")

    def __len__(self) -> int:
        return len(self._entry)

    def __contains__(self, rid: int) -> bool:
        return rid in self._entry

    def entry(self, rid: int) -> tuple[int, int] | None:
        """(base, end) of a request, or None."""
        return self._entry.get(rid)

    def request_ids(self):
        return self._entry.keys()

    def _blocks(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def _neg_blocks(self, base: int, values: np.ndarray) -> np.ndarray:
        """−⌈(base + values)/B⌉ elementwise, in two numpy calls (⌈x/B⌉ = −((−x) // B))."""
        return (-base - values) // self.block_size

    def _cache(self) -> tuple[list[int], list[int]]:
        """Block size 1: prefix max of (peak_j + end_j) and suffix sums of bases, as lists (beside
        ``_ends``); rebuilt in O(n) after a change, then each query is O(log n) in pure Python."""
        if self._lists is None:
            table = self._table
            prefix_max = list(itertools.accumulate((table[_PEAK] + table[_END]).tolist(), max))
            suffix = np.concatenate([np.cumsum(table[_BASE, ::-1])[::-1], [0]]).tolist()
            self._lists = (prefix_max, suffix)
        return self._lists

    def _changed(self) -> None:
        """Every change of the entries goes here: the caches of their queries are stale."""
        self._lists = None
        self._loads.clear()

    def load_at(self, k: int) -> int:
        """Predicted blocks in iteration k: Σ over entries with end ≥ k."""
        load = self._loads.get(k)
        if load is None:
            load = self._loads[k] = self._load_at(k)
        return load

    def _load_at(self, k: int) -> int:
        if self.block_size == 1:
            ends, (_, suffix) = self._ends, self._cache()
            j = bisect.bisect_left(ends, k)
            return suffix[j] + k * (len(ends) - j)
        j = bisect.bisect_left(self._ends, k)
        return -int(self._neg_blocks(k, self._table[_BASE, j:]).sum())

    def fits(self, base: int, end: int, cap_blocks: int) -> bool:
        """Whether adding (base, end) keeps L(k) ≤ cap for every k ≤ end (and ≥ the oldest entry).

        At the ends end_j ≤ end the new load is peak_j + ⌈(base + end_j)/B⌉ ≤ cap, i.e. (an
        integer x has ⌈x/B⌉ ≤ m iff x ≤ m·B) base + max_j(B·peak_j + end_j) ≤ B·cap: one maximum.
        Block size 1: O(log n), the maximum a prefix maximum kept as a list. Otherwise O(n)
        vectorised."""
        if self.block_size == 1:
            prefix_max, _ = self._cache()
            j = bisect.bisect_right(self._ends, end)
            return (self.load_at(end) + base + end <= cap_blocks
                    and (j == 0 or prefix_max[j - 1] + base <= cap_blocks))
        if self.load_at(end) + self._blocks(base + end) > cap_blocks:
            return False
        table, B = self._table, self.block_size
        j = bisect.bisect_right(self._ends, end)
        return j == 0 or int((table[_PEAK, :j] * B + table[_END, :j]).max()) + base <= cap_blocks * B

    def add(self, rid: int, base: int, end: int) -> None:
        if rid in self._entry:
            raise ValueError(f"request {rid} is already in the timeline")
        own_peak = self.load_at(end) + self._blocks(base + end)
        table = self._table
        j = bisect.bisect_right(self._ends, end)
        column = np.array(((end,), (base,), (rid,), (own_peak,)), dtype=np.int64)
        table = np.concatenate((table[:, :j], column, table[:, j:]), axis=1)
        table[_PEAK, :j] -= self._neg_blocks(base, table[_END, :j])     # a new array: no view sees it
        self._table = table
        self._ends.insert(j, end)
        self._entry[rid] = (base, end)
        self._changed()

    def remove(self, rid: int) -> None:
        base, end = self._entry.pop(rid)
        table, ends = self._table, self._ends
        lo = bisect.bisect_left(ends, end)
        i = lo + int(np.flatnonzero(table[_ID, lo:] == rid)[0])
        table = np.concatenate((table[:, :i], table[:, i + 1:]), axis=1)
        del ends[i]
        j = bisect.bisect_right(ends, end)
        table[_PEAK, :j] += self._neg_blocks(base, table[_END, :j])
        self._table = table
        self._changed()

    def drop_before(self, k: int) -> None:
        """Forget entries whose predicted last iteration is before k (they affect no future peak)."""
        self._loads.clear()         # a new iteration asks other loads: keep the memo small
        j = bisect.bisect_left(self._ends, k)
        if j:
            table = self._table
            for rid in table[_ID, :j].tolist():
                del self._entry[rid]
            self._table = table[:, j:]
            del self._ends[:j]
            self._changed()

    def update(self, remove, changes: dict[int, tuple[int, int]]) -> None:
        """Remove the ids in `remove` and set (base, end) for the ids in `changes`: one by one when
        few change (O(n) numpy each), else by one rebuild (`_rebuild`)."""
        remove = [rid for rid in remove if rid not in changes] + [rid for rid in changes if rid in self]
        if len(remove) + len(changes) <= max(8, len(self._entry) // 8):
            for rid in remove:
                self.remove(rid)
            for rid, (base, end) in changes.items():
                self.add(rid, base, end)
            return
        for rid in remove:
            del self._entry[rid]
        self._entry.update(changes)
        self._rebuild()

    def _rebuild(self) -> None:
        """Sort the entries by end and recompute every peak L(end_j) from scratch.

        With x_i = base_i + B − 1 = B·u_i + v_i and end_j = B·w_j + z_j (0 ≤ v, z < B),
        ⌈(base_i + end_j)/B⌉ = u_i + w_j + [v_i ≥ B − z_j]; summed over the suffix of entries with
        end ≥ end_j this is suffix sums plus a count over a sorted suffix (O(n log n) for B = 1,
        O(n·B) at most otherwise via per-residue suffix counts when B ≤ 64, else O(n²) vectorised).
        """
        items = sorted(self._entry.items(), key=lambda kv: kv[1][1])
        n, B = len(items), self.block_size
        ids = np.fromiter((rid for rid, _ in items), np.int64, n)
        bases = np.fromiter((e[0] for _, e in items), np.int64, n)
        ends = np.fromiter((e[1] for _, e in items), np.int64, n)
        first = np.searchsorted(ends, ends, "left")
        x = bases + B - 1
        u, v = x // B, x % B
        w, z = ends // B, ends % B
        suffix_u = np.concatenate([np.cumsum(u[::-1])[::-1], [0]])
        count = n - first
        peaks = suffix_u[first] + count * w
        if B > 1:
            if B <= 64:   # suffix counts of v ≥ t for every threshold t
                geq = (v[:, None] >= np.arange(B + 1)[None, :]).astype(np.int64)
                suffix_geq = np.concatenate([np.cumsum(geq[::-1], axis=0)[::-1], np.zeros((1, B + 1), np.int64)])
                peaks += suffix_geq[first, B - z]
            else:
                mask = (np.arange(n)[None, :] >= first[:, None]) & (v[None, :] >= (B - z)[:, None])
                peaks += mask.sum(axis=1)
        self._table = np.stack((ends, bases, ids, peaks.astype(np.int64)))
        self._ends = ends.tolist()
        self._changed()


VICTIM_ORDERS = ("least-progress", "most-progress", "newest", "largest")


def victim_key(view: SchedulerView, order: str):
    """Sort key: the first request under it is evicted first.

    ``least-progress``: fewest output tokens generated (ties: latest admitted) — A_min's rule;
    ``most-progress``: most output tokens generated (ties: latest admitted); ``newest``: latest admitted first (vLLM's LIFO); ``largest``: most KV held (ties: latest admitted).
    """
    if order == "least-progress":
        return lambda r: (r.num_output_tokens, -r.admitted_seq)
    if order == "most-progress":
        return lambda r: (-r.num_output_tokens, -r.admitted_seq)
    if order == "newest":
        return lambda r: -r.admitted_seq
    return lambda r: (-view.kv_tokens(r), -r.admitted_seq)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(kw_only=True)
class FutureMemoryPolicy(Policy):
    """Admission by the future-memory check, in a priority order, never pausing a resident request.

    Per iteration I (n resident, W waiting, a admitted, d requests whose timeline changed —
    admitted or evicted last time, finished earlier than predicted, or outlived their estimate):

    1. Sync the timeline: drop entries ended before I; re-enter resident requests whose (base, end)
       changed (a request that outlived its estimate õ gets õ_eff = max(õ, g + 1), so end = I).
       Requests decoded in the last iteration and still within their estimate are skipped.
       O(n) Python set work + O(d·n) numpy (one O(n log n) rebuild when d > n/8).
    2. Overflow guard: if the resident requests need more than the capacity in iteration I (only
       possible when estimates were too low), evict victims in ``evict_victim`` order until they fit.
       Nothing is admitted in an iteration that evicts (as vLLM V1).
    3. Admission: scan the waiting queue in priority order (kept sorted incrementally: new arrivals
       are the tail of ``view.waiting``, O(log W) search + list insertion each); admit a candidate if
       the check passes with capacity ⌊(1 − protection)·M⌋ blocks. ``rule="stop"`` stops at the
       first failure: a + 1 candidate tests, O(log n) each at block size 1 (O(n) otherwise), plus
       O(n) per admission. ``rule="skip"`` goes on (stopping once even the smallest queued request
       cannot fit in iteration I), so it is O(W log n) per iteration in the worst case. Either
       way the scan stops after ``view.max_num_admissions`` admissions (an engine's seats left,
       past which it defers admissions anyway; None in the simulator): the admissions it makes
       are the first ones of the unlimited scan, whose later ones would only be undone.

    So with ``rule="stop"`` an iteration costs O(n + (a + d)·n) numpy element operations plus
    O((a + 1)·log n) and does not grow with the number of waiting requests W (see
    bench/mcsf_decision_cost.py).

    Every admitted request computes its whole prompt (plus tokens to recompute) in one iteration, and
    every resident request is computed in every iteration, as in the papers' model. With an engine
    token budget N (``max_num_batched_tokens``, not in the papers; the vLLM adapter passes the
    engine's ``max_num_scheduled_tokens``): resident requests are served first, in admission order,
    each with all its uncomputed tokens while the budget lasts (the last one served may get a
    chunk); then candidates, by ``chunking`` (a reconstruction): "budget-left" (default, as vLLM
    V1's chunked prefill) admits a candidate with as many of its tokens as the budget left holds
    (all of them, or a first chunk); "over-budget" admits it with all its tokens if they fit the
    budget left, with a first chunk of the budget left only if they exceed the whole budget N, and
    otherwise makes it wait (a failure for ``rule``). Either way a prompt or recomputation longer
    than N never stalls. Admissions use only budget left after every resident took its share, so at
    most one request — the newest — is in a chunked prefill, the others decode one token per
    iteration and none is ever paused. The check uses the chunked request's shifted timeline
    (module docstring): each iteration its remaining prefill length is recomputed from the older
    requests' predicted ends, which the guard and later admissions then see.
    """

    rule: str = "stop"
    protection: float = 0.0
    evict_victim: str = "least-progress"
    chunking: str = "budget-left"

    RULES: ClassVar[tuple[str, ...]] = ("stop", "skip")
    CHUNKING: ClassVar[tuple[str, ...]] = ("budget-left", "over-budget")

    def __post_init__(self) -> None:
        check_choice("rule", self.rule, self.RULES)
        check_choice("chunking", self.chunking, self.CHUNKING)
        check_choice("evict_victim", self.evict_victim, VICTIM_ORDERS)
        if not 0.0 <= self.protection < 1.0:
            raise ValueError(f"protection must be in [0, 1), got {self.protection}")

    # ------------------------------------------------------------------ hooks
    def estimate(self, view: SchedulerView, request: RequestView) -> int:
        """Predicted total output tokens õ (before the robust max with generated + 1)."""
        raise NotImplementedError

    def priority(self, view: SchedulerView, request: RequestView) -> tuple:
        """Waiting-queue order: shortest estimate first; ties: earlier arrival, smaller prompt, id."""
        return (self._estimate(view, request), request.arrival_time, request.num_prompt_tokens,
                request.request_id)

    def refine(self, view: SchedulerView, request: RequestView) -> None:
        """Called for each resident request at each iteration before its timeline (A_min)."""

    # ------------------------------------------------------------------ run state
    def reset(self, *, seed: int | None = None) -> None:
        self._memory: FutureMemory | None = None
        self._queue: list[tuple] = []          # sorted (priority..., request id)
        self._queued: dict[int, RequestView] = {}
        self._by_size: list[tuple[int, int]] = []   # sorted (tokens to compute, id) of the queue
        self._dequeued: dict[int, RequestView] = {}  # admitted by the last decision
        self._stepped: frozenset[int] = frozenset()  # computed in full in the last iteration
        self._last_iteration: int | None = None
        self.num_policy_evictions = 0

    def forget(self, request_ids: Collection[int]) -> None:
        """Requests that left the engine: out of the queue (one aborted while it waited) and of
        the last decision's admissions. A resident one's timeline goes at the next iteration
        (`_sync_running`: it is no longer among the residents)."""
        for rid in request_ids:
            self._dequeued.pop(rid, None)
        gone = {rid for rid in request_ids if rid in self._queued}
        if gone:
            self._queue = [key for key in self._queue if key[-1] not in gone]
            self._by_size = [key for key in self._by_size if key[-1] not in gone]
            for rid in gone:
                del self._queued[rid]

    def schedule(self, view: SchedulerView) -> Decision:
        if self._memory is None:
            self._memory = FutureMemory(view.block_size)
        full = view.residents_uncomputed()          # read once per iteration
        served = serve_all_residents(full, view.max_num_batched_tokens)
        in_full = served is not None
        if not in_full:
            served = serve_residents(view)
        partial = self._sync_running(view, served, full, in_full)
        evict = self._guard_overflow(view)
        self._sync_waiting(view)
        tokens = {rid: n for rid, n in served.items() if rid not in evict} if evict else served
        # served fewer than their uncomputed tokens, and served (a resident is served 1 or more)
        self._chunked: set[int] = {r.request_id for r in partial if r.request_id in tokens}
        budget = view.max_num_batched_tokens
        if not evict:
            self._admit(view, tokens, None if budget is None else budget - sum(served.values()))
        for rid in evict:
            self._enqueue(view, self._lookup(view, rid))
        self._stepped = frozenset(tokens.keys() - self._chunked if self._chunked else tokens)
        self._last_iteration = view.iteration
        return Decision(num_tokens=tokens, evict=evict)

    # ------------------------------------------------------------------ helpers
    def _estimate(self, view: SchedulerView, request: RequestView) -> int:
        return max(self.estimate(view, request), request.num_output_tokens + 1)

    def _timeline(self, view: SchedulerView, request: RequestView, num_tokens: int | None = None,
                  older_ends=()) -> tuple[int, int]:
        """(base, end): at most base + k KV tokens in iteration k, up to iteration end.

        ``num_tokens``: tokens scheduled now (None: all uncomputed). With fewer, the remaining
        prefill takes ``extra`` more iterations (`prefill_iterations`, the older requests' predicted
        ends ``older_ends`` taking one budget token each) and the timeline shifts ``extra`` later
        (module docstring). Without a budget extra = 0: the papers' rule."""
        uncomputed = request.num_uncomputed_tokens
        first = view.kv_tokens_after(request, uncomputed)
        extra = 0
        if num_tokens is not None and num_tokens < uncomputed:
            extra = prefill_iterations(uncomputed - num_tokens, view.max_num_batched_tokens,
                                       older_ends, view.iteration + 1)
        remaining = self._estimate(view, request) - request.num_output_tokens
        return first - view.iteration - extra, view.iteration + extra + remaining - 1

    def _sync_running(self, view: SchedulerView, served: dict[int, int], full: Mapping[int, int],
                      in_full: bool) -> list[RequestView]:
        """Re-enter the resident requests whose timeline changed. Requests computed in full now
        first; then those chunked or paused now (in admission order), whose prefill length depends
        on the predicted ends of the older ones. `full`: the residents' uncomputed tokens
        (`SchedulerView.residents_uncomputed`); `in_full`: every resident is served all of them.
        Returns the residents served fewer than their uncomputed tokens (chunked or paused now),
        in admission order."""
        memory = self._memory
        memory.drop_before(view.iteration)
        changed = {}
        stepped = self._stepped if self._last_iteration == view.iteration - 1 else frozenset()
        # Decoded in full last iteration and still in the timeline (estimate not reached): the
        # (base, end) is unchanged. The others are found by set operations, and the residents
        # are read one by one only when some are left (in a server, the step after a finish or
        # a chunk), so a step of decodes costs no Python test per resident.
        unchanged = stepped & memory.request_ids()
        partial = [] if in_full else [r for r in view.running if served.get(r.request_id, 0) < full[r.request_id]]
        todo = full.keys() - unchanged
        if partial:
            todo -= {r.request_id for r in partial}
        if todo:
            for r in view.running:
                rid = r.request_id
                if rid in todo:
                    self.refine(view, r)
                    entry = self._timeline(view, r)
                    if memory.entry(rid) != entry:
                        changed[rid] = entry
        gone = memory.request_ids() - full.keys()
        memory.update([rid for rid in memory.request_ids() if rid in gone] if gone else (), changed)
        for r in partial:
            self.refine(view, r)
            older = [memory.entry(o.request_id)[1] for o in itertools.takewhile(
                lambda o: o.request_id != r.request_id, view.running) if o.request_id in memory]
            memory.update((), {r.request_id: self._timeline(view, r, served.get(r.request_id, 0), older)})
        return partial

    def _guard_overflow(self, view: SchedulerView) -> tuple[int, ...]:
        memory, now = self._memory, view.iteration
        load = memory.load_at(now)
        if load <= view.kv_capacity_blocks:
            return ()
        evict = []
        for r in sorted(view.running, key=victim_key(view, self.evict_victim)):
            base, _ = memory.entry(r.request_id)
            memory.remove(r.request_id)
            load -= view.blocks(base + now)
            evict.append(r.request_id)
            if load <= view.kv_capacity_blocks:
                break
        self.num_policy_evictions += len(evict)
        return tuple(evict)

    def _lookup(self, view: SchedulerView, rid: int) -> RequestView:
        return next(r for r in view.running if r.request_id == rid)

    def _enqueue(self, view: SchedulerView, request: RequestView) -> None:
        key = (*self.priority(view, request), request.request_id)
        bisect.insort(self._queue, key)
        bisect.insort(self._by_size, (request.num_tokens, request.request_id))
        self._queued[request.request_id] = request

    def _dequeue(self, index: int) -> None:
        rid = self._queue.pop(index)[-1]
        request = self._queued.pop(rid)
        del self._by_size[bisect.bisect_left(self._by_size, (request.num_tokens, rid))]
        self._dequeued[rid] = request

    def _sync_waiting(self, view: SchedulerView) -> None:
        """New arrivals are the tail of view.waiting (they arrived after everything queued).

        A request the last decision admitted is resident now in the simulator (which accepts the
        whole decision or raises); an engine that carries out only part of it (the vLLM adapter
        defers admissions past its last seat) leaves it waiting: it goes back into the queue here
        (its priority key is what it was), so a deferred admission costs O(log W), not a rebuild
        of the whole queue."""
        for r in self._dequeued.values():
            if r.status is Status.WAITING:
                self._enqueue(view, r)
        self._dequeued = {}
        num_new = len(view.waiting) - len(self._queued)
        tail = view.waiting[len(view.waiting) - num_new:] if num_new > 0 else ()
        if num_new < 0 or any(r.request_id in self._queued for r in tail):
            self._queue, self._queued, self._by_size = [], {}, []
            tail = view.waiting
        for r in tail:
            self._enqueue(view, r)

    def _admit(self, view: SchedulerView, tokens: dict[int, int], budget: int | None) -> None:
        memory, now = self._memory, view.iteration
        cap = math.floor((1.0 - self.protection) * view.kv_capacity_blocks)
        load_now = memory.load_at(now)
        admitted, seats = [], view.max_num_admissions
        for index, key in enumerate(self._queue):
            if budget == 0 or len(admitted) == seats:
                break
            request = self._queued[key[-1]]
            n = self._first_tokens(view, request, budget)
            if n:
                base, end = self._timeline(view, request, n, memory.ends)
                if load_now + view.blocks(base + now) <= cap and memory.fits(base, end, cap):
                    self._start(request, n, base, end, tokens)
                    admitted.append(index)
                    load_now += view.blocks(base + now)
                    budget = None if budget is None else budget - n
                    continue
            if self.rule == "stop" or load_now + self._smallest_blocks(view, budget) > cap:
                break
        if not admitted and not view.running and self._queue and seats != 0:
            admitted = self._admit_alone(view, tokens, budget)
        for index in reversed(admitted):
            self._dequeue(index)

    def _first_tokens(self, view: SchedulerView, request: RequestView, budget: int | None) -> int:
        """Tokens a candidate is admitted with (0: it waits), by ``chunking``."""
        n = request.num_uncomputed_tokens
        if self.chunking == "budget-left" and budget is not None:
            return min(n, budget)
        return budget_tokens(n, budget, view.max_num_batched_tokens)

    def _smallest_blocks(self, view: SchedulerView, budget: int | None) -> int:
        """A lower bound on the blocks any queued request is predicted to hold after this
        iteration: the smallest one computed in full, or a chunk of the budget left."""
        if not self._by_size:
            return 0
        tokens = self._by_size[0][0] + view.emitted_offset
        return view.blocks(tokens if budget is None else min(tokens, budget))

    def _admit_alone(self, view: SchedulerView, tokens: dict[int, int], budget: int | None) -> list[int]:
        """Liveness: with nothing resident, the queue head runs alone even when its *predicted*
        timeline exceeds the (protected) capacity; the engine only accepts requests whose true peak
        fits, and the overflow guard covers the rest."""
        head = self._queued[self._queue[0][-1]]
        n = self._first_tokens(view, head, budget)
        if not n:
            return []
        self._start(head, n, *self._timeline(view, head, n, self._memory.ends), tokens)
        return [0]

    def _start(self, request, n: int, base: int, end: int, tokens: dict[int, int]) -> None:
        """Admit `request` with `n` tokens now and its predicted KV timeline (base, end)."""
        self._memory.add(request.request_id, base, end)
        tokens[request.request_id] = n
        if n < request.num_uncomputed_tokens:
            self._chunked.add(request.request_id)


def serve_residents(view: SchedulerView, exclude=()) -> dict[int, int]:
    """Tokens of the resident requests (but `exclude`): all their uncomputed tokens, in admission
    order while the engine's token budget lasts (the last one served may get a chunk)."""
    left, tokens = view.max_num_batched_tokens, {}
    for r in view.running:
        n = r.num_uncomputed_tokens if left is None else min(r.num_uncomputed_tokens, left)
        if n and r.request_id not in exclude:
            tokens[r.request_id] = n
            left = None if left is None else left - n
    return tokens


def serve_all_residents(full: Mapping[int, int], budget: int | None) -> dict[int, int] | None:
    """`serve_residents` when the budget holds every resident's uncomputed tokens (the common
    case: decodes), from the residents' uncomputed tokens in admission order (`full`,
    `SchedulerView.residents_uncomputed`): each gets all of them. None when it does not apply
    (use `serve_residents`). Tested against it."""
    values = full.values()
    if (budget is not None and sum(values) > budget) or 0 in values:
        return None
    return dict(full)


def prefill_iterations(num_tokens: int, budget: int, older_ends, start: int) -> int:
    """Iterations from `start` on that compute `num_tokens` more prefill tokens when each request
    served before this one (predicted to be resident in iteration k while k ≤ its end) takes one
    token of the per-iteration budget and this one the rest (at least 1). Between two ends the
    share is constant, so this walks the ends: O(len(older_ends))."""
    ends = sorted(e for e in np.asarray(older_ends, dtype=np.int64).tolist() if e >= start)
    k, count, i = start, 0, 0
    while True:
        share = max(1, budget - (len(ends) - i))
        need = -(-num_tokens // share)
        if i == len(ends) or need <= ends[i] - k + 1:
            return count + need
        length = ends[i] - k + 1
        num_tokens -= share * length
        count += length
        k = ends[i] + 1
        while i < len(ends) and ends[i] < k:
            i += 1

def budget_tokens(n: int, budget_left: int | None, budget: int | None) -> int:
    """Tokens to schedule for a new request needing n: all of them if they fit the budget left,
    a first chunk if they exceed the whole per-iteration budget, else 0 (wait)."""
    if budget_left is None or n <= budget_left:
        return n
    return budget_left if n > budget else 0


def require(value, request: RequestView, policy: str, column: str):
    """A prediction column the policy needs, or a ConfigError naming the predictor to use."""
    if value is None:
        raise ConfigError(f"policy {policy!r} needs {column} for every request (request "
                          f"{request.request_id} has none); pass a predictor, e.g. "
                          "--predictor interval:alpha=0.5")
    return value
