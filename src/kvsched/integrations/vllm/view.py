"""The views `KVSchedScheduler` hands its policy: vLLM's numbers in kvsched's view classes (no
vLLM import).

A served request's progress (``num_computed_tokens``, ``num_output_tokens``, ``num_tokens``) is
read from vLLM's request when the policy asks (`ServedRequestView`): the adapter copies none of it
per step, and the kvsched state's progress fields are None.

Two differences from the simulator's views, both vLLM's rules:

- Prefix caching: a waiting request's ``num_cached_tokens`` is vLLM's cache hit for it at this
  step's boundary (``kv_cache_manager.get_computed_blocks``: its longest run of cached full
  blocks, capped at ``num_tokens - 1``; 0 when caching is off or the request is resident), and
  it computes only the rest: ``num_uncomputed_tokens = num_tokens - num_cached_tokens``. The
  hit is looked up when the policy first asks (a `HitLookup`), before any allocation of the step.
- The KV convention is vLLM's (`KVConvention.COMPUTED`: a request holds KV for the tokens it has
  computed), so the block arithmetic is inlined for it (`EngineView.extra_blocks`, tested against
  `kvsched.engine.rules.extra_blocks`): the policy calls it for every request at every step.

Units: tokens, and blocks of ``block_size`` tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

from ...engine import rules
from ...engine.rules import KVConvention
from ...state import Batch, RequestState, RequestView, SchedulerView, Status

_RUNNING, _WAITING = Status.RUNNING, Status.WAITING

#: kvsched request id -> (hit tokens, blocks of the hit held by resident requests) for a waiting
#: request, at this step's boundary.
HitLookup = Callable[[int], "tuple[int, int]"]

_NO_HIT = (0, 0)

#: kvsched request id -> ((block id, ref_cnt), ...) at this step's boundary: a waiting request's
#: hit blocks, a resident request's blocks (one KV cache group).
BlockLookup = Callable[[int], "tuple[tuple[int, int], ...]"]


class ServedRequestView(RequestView):
    """`RequestView` of a request served by vLLM, with its prefix-cache hit (see the module).

    Its progress (computed, generated and known tokens, evictions) is read from vLLM's own
    request, the one place it is kept: nothing copies it into the kvsched state at each step,
    whose progress fields are None for a served request (a read of them fails loudly). The rest
    (ids, arrival, predictions, status, admission order) is the state's."""

    __slots__ = ("_lookup", "_r")

    def __init__(self, state: RequestState, request, lookup: HitLookup | None = None) -> None:
        super().__init__(state)
        object.__setattr__(self, "_r", request)
        object.__setattr__(self, "_lookup", lookup)

    def __repr__(self) -> str:
        s, r = self._s, self._r
        return (f"ServedRequestView(id={s.request_id}, status={s.status.value}, prompt={s.num_prompt_tokens},"
                f" computed={r.num_computed_tokens}, generated={r.num_output_tokens})")

    # vLLM's names: num_tokens = prompt + generated, num_preemptions = evictions
    num_computed_tokens = property(attrgetter("_r.num_computed_tokens"))
    num_output_tokens = property(attrgetter("_r.num_output_tokens"), doc="Tokens generated so far.")
    num_tokens = property(attrgetter("_r.num_tokens"), doc="Known tokens: prompt + generated.")
    num_evictions = property(attrgetter("_r.num_preemptions"))

    @property
    def is_decode(self) -> bool:
        r = self._r
        return rules.is_decode(r.num_prompt_tokens, r.num_output_tokens, r.num_computed_tokens)

    def cache_hit(self) -> tuple[int, int]:
        """(hit tokens, blocks of the hit that resident requests hold) now; (0, 0) when resident
        or when caching is off."""
        s = self._s
        if self._lookup is None or s.status is not _WAITING:
            return _NO_HIT
        return self._lookup(s.request_id)

    @property
    def num_cached_tokens(self) -> int:
        """Tokens of this waiting request served from the prefix cache if admitted now."""
        return self.cache_hit()[0]

    @property
    def num_uncomputed_tokens(self) -> int:
        s, r = self._s, self._r
        n = r.num_tokens - r.num_computed_tokens
        if self._lookup is not None and s.status is _WAITING:
            n -= self._lookup(s.request_id)[0]
        return n


def resident_extra_blocks(computed: int, num_new_tokens: int, block_size: int) -> int:
    """Blocks a resident request holding `computed` tokens needs to compute `num_new_tokens`
    more, under `KVConvention.COMPUTED`: ⌈(computed + n)/B⌉ − ⌈computed/B⌉."""
    return -(-(computed + num_new_tokens) // block_size) - -(-computed // block_size)


def waiting_extra_blocks(hit: int, shared: int, num_new_tokens: int, block_size: int) -> int:
    """Blocks a waiting request with a cache hit of `hit` tokens, `shared` of whose blocks
    resident requests hold, needs to compute `num_new_tokens` beyond the hit: ⌈(hit + n)/B⌉ −
    shared (vLLM's ``allocate_slots``: the hit's blocks no one holds leave the free queue, so
    they count as allocated)."""
    return -(-(hit + num_new_tokens) // block_size) - shared


@dataclass(frozen=True, slots=True)
class EngineView(SchedulerView):
    """`SchedulerView` of vLLM's engine: the COMPUTED convention, hits from `ServedRequestView`.

    ``kv_used_tokens`` is the block pool's used blocks (evictable cached blocks count as free, as
    vLLM counts them), so ``num_free_blocks`` is vLLM's ``get_num_free_blocks()``.
    """

    block_refs: BlockLookup | None = None

    def __post_init__(self) -> None:
        if self.kv_convention is not KVConvention.COMPUTED:
            raise ValueError("EngineView follows vLLM: kv_convention must be COMPUTED")

    def kv_tokens_after(self, request: RequestView, num_new_tokens: int) -> int:
        if request.status is _RUNNING:
            return request.num_computed_tokens + num_new_tokens
        return _hit(request)[0] + num_new_tokens

    def extra_blocks(self, request: RequestView, num_new_tokens: int) -> int:
        if request.status is _RUNNING:
            return resident_extra_blocks(request.num_computed_tokens, num_new_tokens, self.block_size)
        hit, shared = _hit(request)
        return waiting_extra_blocks(hit, shared, num_new_tokens, self.block_size)

    def new_batch(self, max_num_batched_tokens: int | None = None) -> Batch:
        plain = SchedulerView.new_batch(self, max_num_batched_tokens)
        if self.block_refs is None:
            return plain
        return EngineCachingBatch(self, plain.max_num_batched_tokens)


class BlockHolders:
    """Holders of vLLM's blocks over a tentative decision (prefix caching on): a block's count
    starts at its ``ref_cnt`` at the step's boundary; an admission takes its hit blocks (one
    nobody holds costs a block once, however many admissions of the step share it: vLLM's
    ``allocate_slots`` touches it out of the free queue for the first), an eviction frees only
    the blocks nobody else holds. The simulator's `kvsched.engine.caching_view.CachingBatch`
    rule, on vLLM's block ids."""

    __slots__ = ("_lookup", "_refs", "_block_size")

    def __init__(self, lookup: BlockLookup, block_size: int) -> None:
        self._lookup, self._refs, self._block_size = lookup, {}, block_size

    def waiting_need(self, request: RequestView, num_new_tokens: int) -> int:
        refs = self._refs
        blocks = self._lookup(request.request_id)
        shared = sum(1 for block, ref in blocks if refs.get(block, ref) > 0)
        return waiting_extra_blocks(len(blocks) * self._block_size, shared, num_new_tokens, self._block_size)

    def full_input_blocks(self, request: RequestView, num_tokens: int) -> int:
        """Blocks the whole input of `num_tokens` needs less the hit blocks others hold."""
        refs = self._refs
        shared = sum(1 for block, ref in self._lookup(request.request_id) if refs.get(block, ref) > 0)
        return -(-num_tokens // self._block_size) - shared

    def admit(self, request: RequestView) -> None:
        refs = self._refs
        for block, ref in self._lookup(request.request_id):
            refs[block] = refs.get(block, ref) + 1

    def evict(self, request: RequestView) -> int:
        """Drop `request`'s hold on its blocks; the blocks that become free."""
        refs, freed = self._refs, 0
        for block, ref in self._lookup(request.request_id):
            holders = refs[block] = refs.get(block, ref) - 1
            freed += holders == 0
        return freed


class EngineCachingBatch(Batch):
    """`Batch` over an `EngineView` with prefix caching on: shared blocks counted once
    (`BlockHolders`)."""

    __slots__ = ("_holders",)

    def __init__(self, view: EngineView, max_num_batched_tokens: int | None) -> None:
        super().__init__(view, max_num_batched_tokens)
        self._holders = BlockHolders(view.block_refs, view.block_size)
        self._extra_blocks = self._need

    def _need(self, request: RequestView, n: int) -> int:
        if request.status is not _WAITING:
            return self._view.extra_blocks(request, n)
        return self._holders.waiting_need(request, n)

    def add(self, request: RequestView, n: int, *, reserve_blocks: int = 0) -> bool:
        if not super().add(request, n, reserve_blocks=reserve_blocks):
            return False
        if request.status is _WAITING:
            self._holders.admit(request)
        return True

    def _blocks_freed_by_eviction(self, request: RequestView) -> int:
        return self._holders.evict(request)


def _hit(request: RequestView) -> tuple[int, int]:
    lookup = getattr(request, "cache_hit", None)
    return lookup() if lookup is not None else _NO_HIT
