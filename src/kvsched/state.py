"""Request state (engine-owned), the read-only views policies see, and the policy's `Decision`.

Token bookkeeping follows vLLM V1: a request knows ``num_tokens = prompt + generated`` tokens and
has computed ``num_computed_tokens`` of them. Scheduling it for n tokens computes n more; when all
known tokens are computed, the iteration emits one new output token. So a prefill (or the
recomputation after an eviction) is any n up to the remaining known tokens, and a decode is n = 1.

A policy builds its decision in a `Batch` (`SchedulerView.new_batch`): ``add(request, n)`` is
granted or refused by the engine's own block and token-budget arithmetic, so the free-block
bookkeeping lives here once instead of in every policy.
"""

from __future__ import annotations

from operator import attrgetter

from collections.abc import KeysView, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from numbers import Integral
from types import MappingProxyType

from .engine import rules
from .engine.rules import KVConvention


class Status(str, Enum):
    FUTURE = "future"        # not yet arrived
    WAITING = "waiting"      # arrived, holds no KV
    RUNNING = "running"      # resident: holds KV (computed or paused this iteration)
    FINISHED = "finished"
    REJECTED = "rejected"    # can never fit, even alone


_WAITING, _RUNNING = Status.WAITING, Status.RUNNING     # (constants: a global is read faster)


class RequestState:
    """Mutable per-request state. Only the engine writes it."""

    __slots__ = (
        "request_id", "arrival_time", "num_prompt_tokens", "true_output_tokens",
        "predicted_output_tokens", "predicted_lo", "predicted_hi", "type_id",
        "status", "num_computed_tokens", "num_output_tokens", "num_evictions",
        "total_cached_tokens", "total_lookup_tokens",
        "num_recomputed_tokens", "num_restarted_tokens", "high_water_tokens", "total_computed_tokens",
        "first_scheduled_time", "first_token_time", "finish_time", "admitted_seq",
        "reject_reason", "view", "last_token_time", "prefix_cache",
    )

    def __init__(self, request_id: int, arrival_time: float, num_prompt_tokens: int,
                 true_output_tokens: int, predicted_output_tokens: float | None = None,
                 predicted_lo: int | None = None, predicted_hi: int | None = None,
                 type_id: int | None = None) -> None:
        self.request_id = request_id
        self.arrival_time = arrival_time
        self.num_prompt_tokens = num_prompt_tokens
        self.true_output_tokens = true_output_tokens
        self.predicted_output_tokens = predicted_output_tokens
        self.predicted_lo = predicted_lo
        self.predicted_hi = predicted_hi
        self.type_id = type_id
        self.status = Status.FUTURE
        self.num_computed_tokens = 0
        self.num_output_tokens = 0
        self.num_evictions = 0
        self.total_cached_tokens = 0    # prefix-cache hits, summed over its admissions (tokens)
        self.total_lookup_tokens = 0    # its num_tokens at each admission, summed
        self.num_recomputed_tokens = 0
        self.num_restarted_tokens = 0   # generated tokens discarded by restarts (Eviction.RESTART)
        self.high_water_tokens = 0      # the most tokens ever computed: tokens below it are recomputation
        self.total_computed_tokens = 0
        self.first_scheduled_time: float | None = None
        self.first_token_time: float | None = None
        self.finish_time: float | None = None
        self.admitted_seq: int | None = None   # order of the latest admission (resident since)
        self.reject_reason: str | None = None
        self.last_token_time: float | None = None   # when it emitted its latest output token
        self.prefix_cache = None        # the engine's `PrefixCache` when prefix caching is on
        self.view = RequestView(self)

    @property
    def num_tokens(self) -> int:
        return self.num_prompt_tokens + self.num_output_tokens


class RequestView:
    """Read-only window on one request: what a real scheduler could know.

    It never exposes the true output length (clairvoyant policies use `SchedulerView.oracle`).
    The view is live: its values are those of the current iteration boundary.
    """

    __slots__ = ("_s",)

    def __init__(self, state: RequestState) -> None:
        object.__setattr__(self, "_s", state)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("RequestView is read-only")

    def __repr__(self) -> str:
        s = self._s
        return (f"RequestView(id={s.request_id}, status={s.status.value}, prompt={s.num_prompt_tokens},"
                f" computed={s.num_computed_tokens}, generated={s.num_output_tokens})")

    # attrgetter: a C call, no Python frame (policies read these for every request at every boundary)
    request_id = property(attrgetter("_s.request_id"))
    arrival_time = property(attrgetter("_s.arrival_time"))
    num_prompt_tokens = property(attrgetter("_s.num_prompt_tokens"))
    num_computed_tokens = property(attrgetter("_s.num_computed_tokens"))
    num_output_tokens = property(attrgetter("_s.num_output_tokens"), doc="Tokens generated so far.")
    num_evictions = property(attrgetter("_s.num_evictions"))
    predicted_output_tokens = property(attrgetter("_s.predicted_output_tokens"))
    predicted_lo = property(attrgetter("_s.predicted_lo"))
    predicted_hi = property(attrgetter("_s.predicted_hi"))
    type_id = property(attrgetter("_s.type_id"))
    status = property(attrgetter("_s.status"))
    first_scheduled_time = property(attrgetter("_s.first_scheduled_time"))
    admitted_seq = property(attrgetter("_s.admitted_seq"))

    @property
    def num_tokens(self) -> int:
        """Known tokens: prompt + generated."""
        return self._s.num_prompt_tokens + self._s.num_output_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        """Tokens still to compute before the next output token (1 for a decode); for a waiting
        request, all its known tokens but its prefix-cache hit (`num_cached_tokens`)."""
        s = self._s
        computed = s.num_computed_tokens if s.prefix_cache is None else self.num_cached_tokens or s.num_computed_tokens
        return rules.num_uncomputed_tokens(s.num_prompt_tokens, s.num_output_tokens, computed)

    @property
    def is_decode(self) -> bool:
        """True when the next step is a plain decode (1 token computed, 1 emitted)."""
        s = self._s
        return rules.is_decode(s.num_prompt_tokens, s.num_output_tokens, s.num_computed_tokens)

    @property
    def is_resident(self) -> bool:
        return self._s.status is Status.RUNNING

    @property
    def num_cached_tokens(self) -> int:
        """The prefix-cache hit a waiting request would start from if admitted now (tokens; a
        decision's n counts from it); 0 when it is resident or prefix caching is off."""
        s = self._s
        if s.prefix_cache is None or s.status is not _WAITING:
            return 0
        return s.prefix_cache.hit_tokens(s.request_id, s.num_prompt_tokens + s.num_output_tokens)


def _empty_mapping() -> Mapping[int, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's answer for one iteration.

    ``num_tokens``: request id → tokens to compute now (waiting requests are admitted; resident
    requests absent from it are paused and keep their KV). ``evict``: resident requests whose KV
    is dropped before the iteration (they return to waiting and recompute everything).
    ``wake_time``: when nothing is scheduled, the policy may ask to be called again at this time
    even if nothing arrives (otherwise the engine waits for the next arrival).
    """

    num_tokens: Mapping[int, int] = field(default_factory=_empty_mapping)
    evict: tuple[int, ...] = ()
    wake_time: float | None = None


class Oracle:
    """True output lengths, handed only to policies tagged `clairvoyant` (hindsight baselines)."""

    __slots__ = ("_states",)

    def __init__(self, states: Sequence[RequestState]) -> None:
        self._states = states

    def true_output_tokens(self, request_id: int) -> int:
        return self._states[request_id].true_output_tokens


class ReadOnlyList(Sequence):
    """A read-only window on one of an engine's lists, as `SchedulerView` hands ``waiting`` and
    ``running``: no copy, live (valid during the policy's `schedule`)."""

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
class SchedulerView:
    """Everything a policy sees at an iteration boundary (frozen; request views are read-only).

    ``waiting``: arrived requests holding no KV, ordered by (arrival time, request id).
    ``running``: resident requests in admission order (oldest first).
    Both are read-only sequences, valid during the policy's `schedule` (copy one to keep it):
    the simulator's are `ReadOnlyList` live windows on its own lists; the vLLM adapter's
    ``waiting`` is a `ReadOnlyList` too, its ``running`` a snapshot of vLLM's running requests
    whose views are looked up when first read (`_RunningViews`).
    KV figures are in tokens; with ``block_size > 1`` usage is counted in whole blocks.
    ``max_num_admissions``: the most waiting requests the engine admits in this iteration (None:
    no limit, the simulator). A real engine with a seat limit (vLLM's ``max_num_seqs``, less the
    requests running before this decision's evictions) carries out a decision's admissions in
    its order up to that many and defers the rest to a later iteration, so a policy may stop its
    admission scan there: the engine does the same either way (`FutureMemoryPolicy` does). A
    `Batch` refuses admissions past it (one more per eviction).
    ``resident_tokens``: request id → ``num_uncomputed_tokens`` of every resident request, in
    ``running``'s order, when the engine has them at hand (the vLLM adapter reads them in its one
    pass over vLLM's running requests); None: read them from the views. Use `residents_uncomputed`.
    """

    now: float
    iteration: int
    waiting: Sequence[RequestView]
    running: Sequence[RequestView]
    kv_capacity_tokens: int
    kv_used_tokens: int
    block_size: int
    kv_convention: KVConvention
    max_num_batched_tokens: int | None
    separate_batching: bool = False
    has_future_arrivals: bool = True
    oracle: Oracle | None = None
    max_num_admissions: int | None = None
    resident_tokens: Mapping[int, int] | None = None

    def residents_uncomputed(self) -> Mapping[int, int]:
        """Request id → ``num_uncomputed_tokens`` of every resident request, in admission order:
        the engine's ``resident_tokens`` when it hands them, else read from the views."""
        if self.resident_tokens is not None:
            return self.resident_tokens
        return {r.request_id: r.num_uncomputed_tokens for r in self.running}

    @property
    def kv_capacity_blocks(self) -> int:
        return self.kv_capacity_tokens // self.block_size

    @property
    def kv_used_blocks(self) -> int:
        return self.kv_used_tokens // self.block_size

    @property
    def num_free_blocks(self) -> int:
        return self.kv_capacity_blocks - self.kv_used_blocks

    @property
    def num_free_tokens(self) -> int:
        return self.num_free_blocks * self.block_size

    @property
    def emitted_offset(self) -> int:
        """1 under the EMITTED convention (the emitted token holds KV), 0 under COMPUTED."""
        return 1 if self.kv_convention is KVConvention.EMITTED else 0

    def blocks(self, tokens: int) -> int:
        return rules.blocks(tokens, self.block_size)

    def kv_tokens(self, request: RequestView) -> int:
        """KV tokens the request holds now (0 when not resident)."""
        if not request.is_resident:
            return 0
        return rules.kv_tokens_held(request.num_computed_tokens, request.num_prompt_tokens,
                                    request.num_output_tokens, self.kv_convention)

    def kv_tokens_after(self, request: RequestView, num_new_tokens: int) -> int:
        """KV tokens the request holds after computing `num_new_tokens` more (from 0 if waiting)."""
        computed = request.num_computed_tokens if request.is_resident else 0
        return rules.kv_tokens_after_step(computed, request.num_prompt_tokens, request.num_output_tokens,
                                          num_new_tokens, self.kv_convention)

    def extra_blocks(self, request: RequestView, num_new_tokens: int) -> int:
        """Blocks the request needs beyond what it holds to compute `num_new_tokens` more."""
        computed = request.num_computed_tokens if request.is_resident else 0
        return rules.extra_blocks(computed, request.num_prompt_tokens, request.num_output_tokens,
                                  num_new_tokens, self.kv_convention, self.block_size)

    def new_batch(self, max_num_batched_tokens: int | None = None) -> Batch:
        """An empty tentative batch for this iteration (`Batch`).

        Its token budget is the engine's ``max_num_batched_tokens``, or `max_num_batched_tokens`
        (the policy's own budget) when that is smaller or the engine has none.
        """
        budget = self.max_num_batched_tokens
        if max_num_batched_tokens is not None:
            budget = max_num_batched_tokens if budget is None else min(budget, max_num_batched_tokens)
        return Batch(self, budget)


class Batch:
    """A tentative batch: the decision a policy is building, with the KV blocks and the token
    budget it leaves free. Made by `SchedulerView.new_batch`; valid while that view is.

    Modelled on vLLM V1's ``KVCacheManager.allocate_slots`` (ask for the blocks a step needs and
    get them or a refusal, nothing half-done) and nano-vllm's block manager (the scheduler asks
    "can I allocate / append?" instead of counting blocks itself). The arithmetic is the view's
    helpers (`SchedulerView.extra_blocks`, `SchedulerView.blocks`, `SchedulerView.kv_tokens`, i.e.
    the rules of `kvsched.engine.rules`), the ones the engine's validation applies, so it follows
    the engine's KV convention and block size.

    Units: blocks of ``view.block_size`` tokens for memory, tokens for the budget.

    Invariants, after any sequence of calls:

    - ``num_free_blocks = view.num_free_blocks − Σ_added view.extra_blocks(r, n)
      + Σ_evicted view.blocks(view.kv_tokens(r)) ≥ 0``;
    - ``num_scheduled_tokens = Σ_added n ≤ max_num_batched_tokens`` and ``token_budget =
      max_num_batched_tokens − num_scheduled_tokens`` (when there is a budget);
    - a request is added at most once and evicted at most once, never both;
    - so `decision` is accepted by the engine's validation (ids, token counts, budget, memory);
      the batch does not enforce ``separate_batching`` (not mixing prefill and decode work stays
      the policy's choice).

    Typical use: ``n = min(r.num_uncomputed_tokens, batch.token_budget)``, then ``while not
    batch.add(r, n): batch.evict(victim)``. ``add(..., reserve_blocks=k)`` also keeps k blocks free
    (a watermark, a policy's own reservation); `need` gives the blocks an `add` would take, for
    checks on more than is allocated (vLLM's whole-prompt admission rule); `add_in_order` adds a
    run of requests in order, each for what the budget allows, up to the first one refused.

    Seats: a view with ``max_num_admissions`` (an engine's seats left, the vLLM adapter's for a
    policy without a seat limit of its own) lets the batch admit that many waiting requests, one
    more for each eviction (an evicted request leaves its seat), as the engine carries out
    admissions; past them `add` refuses a waiting request, so a policy gives the budget to
    requests the engine runs instead of to admissions it would defer. The simulator's views have
    no seat limit (None).

    Edge cases, decided here: `add` refuses (returns False, records nothing) only for lack of
    blocks, budget or a seat; a misuse raises `ValueError` naming the request — adding a request
    twice, adding one evicted in this batch, evicting one added (the engine refuses to evict and
    schedule a request in one decision; evict before you add), evicting one not resident or
    twice, n < 1 or n over the request's uncomputed tokens, a finished request.
    """

    __slots__ = ("_view", "_tokens", "_evicted", "_free", "_budget", "_left", "_extra_blocks", "_seats")

    def __init__(self, view: SchedulerView, max_num_batched_tokens: int | None) -> None:
        self._view = view
        self._tokens: dict[int, int] = {}
        self._evicted: dict[int, None] = {}     # an ordered set
        self._free = view.num_free_blocks
        self._budget = self._left = max_num_batched_tokens
        self._extra_blocks = view.extra_blocks
        self._seats = view.max_num_admissions

    def __repr__(self) -> str:
        return (f"Batch(num_tokens={self._tokens}, evicted={tuple(self._evicted)}, "
                f"num_free_blocks={self._free}, token_budget={self._left})")

    @property
    def num_free_blocks(self) -> int:
        """KV blocks still free after the requests added and evicted so far."""
        return self._free

    @property
    def num_scheduled_tokens(self) -> int:
        """Tokens added so far (the batch's share of the token budget)."""
        return sum(self._tokens.values())

    @property
    def max_num_batched_tokens(self) -> int | None:
        """The batch's token budget (None: no budget)."""
        return self._budget

    @property
    def admissions_left(self) -> int | None:
        """Waiting requests the batch may still admit (None: no seat limit): the view's
        ``max_num_admissions``, less the admissions, plus the evictions so far."""
        return self._seats

    @property
    def token_budget(self) -> int | None:
        """Tokens the budget still allows (None: no budget), as vLLM's scheduler's ``token_budget``."""
        return self._left

    def tokens_within_budget(self, request: RequestView) -> int:
        """The tokens `request` would compute next, capped by the `token_budget` (if any)."""
        left = self._left
        n = request.num_uncomputed_tokens
        return n if left is None or n <= left else left

    @property
    def num_tokens(self) -> Mapping[int, int]:
        """Request id → tokens added (read-only)."""
        return MappingProxyType(self._tokens)

    @property
    def evicted(self) -> KeysView[int]:
        """Ids of the requests evicted so far, in order (a live read-only set)."""
        return self._evicted.keys()

    def _misuse(self, request: RequestView, n: int) -> None:
        """Raise the `ValueError` for an `add` or `need` that is not allowed (return if it is)."""
        rid, uncomputed = request.request_id, request.num_uncomputed_tokens
        if rid in self._tokens:
            raise ValueError(f"request {rid} is already in the batch")
        if rid in self._evicted:
            raise ValueError(f"request {rid} was evicted in this batch; it cannot be scheduled too")
        if request.status is not Status.WAITING and request.status is not Status.RUNNING:
            raise ValueError(f"request {rid} is {request.status.value}, not schedulable")
        if isinstance(n, bool) or not isinstance(n, Integral) or not 1 <= n <= uncomputed:
            raise ValueError(f"request {rid}: {n!r} tokens, expected 1 to its {uncomputed} "
                             "uncomputed tokens")

    def need(self, request: RequestView, n: int) -> int:
        """Blocks `request` needs beyond those it holds to compute `n` more tokens: what `add`
        takes (0 for a resident request whose last block has room for them)."""
        if type(n) is not int or not 1 <= n <= request.num_uncomputed_tokens:
            self._misuse(request, n)
        return self._extra_blocks(request, n)

    def add(self, request: RequestView, n: int, *, reserve_blocks: int = 0) -> bool:
        """Schedule `n` tokens of `request` (admitting it if it is waiting) if they fit: True and
        recorded iff `n` fits in the `token_budget` and its new blocks (`need`) in the free
        blocks less `reserve_blocks` (blocks the policy keeps free: a watermark, a reservation);
        False and nothing recorded otherwise. Misuse raises `ValueError` (see the class)."""
        # (A waiting or resident request always has a token to compute, so n = 1, the common
        # case, needs no look at its uncomputed tokens.)
        rid, status = request.request_id, request.status
        if (type(n) is not int or n < 1 or rid in self._tokens or rid in self._evicted
                or (status is not _RUNNING and status is not _WAITING)
                or (n != 1 and n > request.num_uncomputed_tokens)):
            self._misuse(request, n)
        left = self._left
        if left is not None and n > left:
            return False
        seats = self._seats
        if seats is not None and status is _WAITING and seats <= 0:
            return False
        need = self._extra_blocks(request, n)
        if need > self._free - reserve_blocks:
            return False
        self._tokens[rid] = n
        self._free -= need
        if left is not None:
            self._left = left - n
        if seats is not None and status is _WAITING:
            self._seats = seats - 1
        return True

    def num_uncomputed_tokens(self, request: RequestView) -> int:
        """Tokens the request has left to compute if added now (with prefix caching, a waiting
        request also hits the blocks requests added before it are computing in this step)."""
        return request.num_uncomputed_tokens

    def add_in_order(self, requests: Sequence[RequestView], start: int = 0, stop: int | None = None, *,
                     min_free_blocks: int = 0, reserve_blocks: int = 0) -> int:
        """Add ``requests[start:stop]`` one after another, each for `tokens_within_budget` of it
        (its uncomputed tokens, capped by the budget left), until one is not added: the token
        budget is spent (``token_budget <= 0``), fewer than `min_free_blocks` blocks are free, or
        `add` (with `reserve_blocks`) refuses it. Returns that request's index (`stop`, or
        ``len(requests)``, when all were added). The loop of a policy that schedules its
        residents in order (vllm, sarathi), in one call; it is exactly that loop of `add` calls,
        so a misuse raises `add`'s error with the requests before it added."""
        stop = len(requests) if stop is None else stop
        for i in range(start, stop):
            request = requests[i]
            left = self._left
            if left is not None and left <= 0 or self._free < min_free_blocks:
                return i
            if not self.add(request, self.tokens_within_budget(request), reserve_blocks=reserve_blocks):
                return i
        return max(start, stop)

    def evict(self, request: RequestView) -> None:
        """Evict a resident request not added to this batch: its blocks become free now."""
        rid = request.request_id
        if not request.is_resident:
            raise ValueError(f"request {rid} is not resident; only resident requests can be evicted")
        if rid in self._tokens:
            raise ValueError(f"request {rid} is in the batch; evict before adding, not after")
        if rid in self._evicted:
            raise ValueError(f"request {rid} is already evicted in this batch")
        self._evicted[rid] = None
        self._free += self._blocks_freed_by_eviction(request)
        if self._seats is not None:
            self._seats += 1

    def _blocks_freed_by_eviction(self, request: RequestView) -> int:
        return self._view.blocks(self._view.kv_tokens(request))

    def decision(self, wake_time: float | None = None) -> Decision:
        """The batch as a `Decision` (a copy: later calls do not change it)."""
        return Decision(num_tokens=dict(self._tokens), evict=tuple(self._evicted), wake_time=wake_time)
