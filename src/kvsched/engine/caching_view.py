"""What a policy sees when prefix caching is on (``Simulator(prefix_caching=True)``).

- `CachingRequestView`: a waiting request's ``num_cached_tokens`` is its hit now, and its
  ``num_uncomputed_tokens`` what is left to compute after it (a decision's n counts from the hit).
- `CachingEngineView`: ``extra_blocks`` of a waiting request is `rules.admission_blocks` (its hit
  blocks others hold cost nothing); ``num_free_blocks`` already counts evictable cached blocks.
- `CachingBatch`: the same bookkeeping over a tentative decision, block by block: an admission
  takes its hit blocks (a free one costs a block once, however many admissions share it), an
  eviction frees only the blocks nobody else in the batch still holds.

The engine's validation (`Simulation.plan`) applies the same rules to the decision it receives.
"""

from __future__ import annotations

from ..state import Batch, SchedulerView, Status
from . import rules

_WAITING = Status.WAITING


def hit_tokens(cache, state) -> int:
    """A request's hit now: its cached leading blocks, in tokens (0 unless it is waiting)."""
    if state.status is not _WAITING:
        return 0
    return cache.hit_tokens(state.request_id, state.num_prompt_tokens + state.num_output_tokens)


class CachingViewMixin:
    """`num_cached_tokens` and the uncomputed tokens after it, for the engine's request views."""

    __slots__ = ()

    @property
    def num_cached_tokens(self) -> int:
        """The prefix-cache hit the request would start from if admitted now (tokens; 0 when it is
        resident)."""
        return hit_tokens(self._cache, self._s)

    @property
    def num_uncomputed_tokens(self) -> int:
        s = self._s
        computed = s.num_computed_tokens if s.status is not _WAITING else hit_tokens(self._cache, s)
        return rules.num_uncomputed_tokens(s.num_prompt_tokens, s.num_output_tokens, computed)


class CachingEngineView(SchedulerView):
    """The engine's `SchedulerView` with prefix caching (the cache in ``oracle``'s company is not a
    dataclass field: `Simulation.view` sets ``_cache`` after construction)."""

    __slots__ = ("_cache",)

    def extra_blocks(self, request, num_new_tokens: int) -> int:
        s = request._s
        if s.status is not _WAITING:
            return SchedulerView.extra_blocks(self, request, num_new_tokens)
        cache, num_tokens = self._cache, s.num_prompt_tokens + s.num_output_tokens
        return rules.admission_blocks(cache.hit_tokens(s.request_id, num_tokens),
                                      cache.shared_hit_blocks(s.request_id, num_tokens),
                                      s.num_prompt_tokens, s.num_output_tokens, num_new_tokens,
                                      self.kv_convention, self.block_size)

    def new_batch(self, max_num_batched_tokens: int | None = None) -> Batch:
        plain = SchedulerView.new_batch(self, max_num_batched_tokens)
        return CachingBatch(self, plain.max_num_batched_tokens, self._cache)


class CachingBatch(Batch):
    """`Batch` with shared blocks counted once (module docstring)."""

    __slots__ = ("_cache", "_refs")

    def __init__(self, view, max_num_batched_tokens, cache) -> None:
        super().__init__(view, max_num_batched_tokens)
        self._cache = cache
        self._refs: dict[int, int] = {}     # block -> its holders in the tentative decision
        self._extra_blocks = self._need

    def _holders(self, block: int) -> int:
        refs = self._refs
        return refs[block] if block in refs else self._cache.pool.ref[block]

    def _need(self, request, n: int) -> int:
        s = request._s
        if s.status is not _WAITING:
            return self._view.extra_blocks(request, n)
        num_tokens = s.num_prompt_tokens + s.num_output_tokens
        hit = self._cache.hit_blocks(s.request_id, num_tokens)
        shared = sum(1 for block in hit if self._holders(block))
        return rules.admission_blocks(len(hit) * self._cache.block_size, shared, s.num_prompt_tokens,
                                      s.num_output_tokens, n, self._view.kv_convention,
                                      self._cache.block_size)

    def add(self, request, n: int, *, reserve_blocks: int = 0) -> bool:
        waiting = request.status is _WAITING
        if not super().add(request, n, reserve_blocks=reserve_blocks):
            return False
        if waiting:
            s = request._s
            for block in self._cache.hit_blocks(s.request_id, s.num_prompt_tokens + s.num_output_tokens):
                self._refs[block] = self._holders(block) + 1
        return True

    def evict(self, request) -> None:
        rid = request.request_id
        if not request.is_resident:
            raise ValueError(f"request {rid} is not resident; only resident requests can be evicted")
        if rid in self._tokens:
            raise ValueError(f"request {rid} is in the batch; evict before adding, not after")
        if rid in self._evicted:
            raise ValueError(f"request {rid} is already evicted in this batch")
        self._evicted[rid] = None
        for block in self._cache.tables.get(rid, ()):
            holders = self._holders(block) - 1
            self._refs[block] = holders
            self._free += holders == 0
