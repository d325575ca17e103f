"""What a policy sees when prefix caching is on (``Simulator(prefix_caching=True)``).

- The request views (`kvsched.state.RequestView`, through ``RequestState.prefix_cache``): a
  waiting request's ``num_cached_tokens`` is its hit now, and its ``num_uncomputed_tokens`` what
  is left to compute after it (a decision's n counts from the hit).
- `CachingEngineView`: ``extra_blocks`` of a waiting request is `rules.admission_blocks` (its hit
  blocks others hold cost nothing), ``kv_tokens_after`` counts from its hit;
  ``num_free_blocks`` already counts evictable cached blocks.
- `CachingBatch`: the same bookkeeping over a tentative decision, block by block: an admission
  takes its hit blocks (a free one costs a block once, however many admissions share it), an
  eviction frees only the blocks nobody else in the batch still holds.

The engine's validation (`Simulation.plan`) applies the same rules to the decision it receives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..state import Batch, SchedulerView, Status
from . import rules

_WAITING = Status.WAITING


@dataclass(frozen=True, slots=True)
class CachingEngineView(SchedulerView):
    """The engine's `SchedulerView` with prefix caching on."""

    prefix_cache: object = field(default=None, repr=False)

    def kv_tokens_after(self, request, num_new_tokens: int) -> int:
        """KV tokens the request holds after computing `num_new_tokens` more: a waiting request
        starts from its hit (its shared blocks counted in full: a projection summed over requests
        over-counts them, on the safe side)."""
        s = request._s
        if s.status is not _WAITING:
            return SchedulerView.kv_tokens_after(self, request, num_new_tokens)
        return rules.kv_tokens_after_step(request.num_cached_tokens, s.num_prompt_tokens,
                                          s.num_output_tokens, num_new_tokens, self.kv_convention)

    def extra_blocks(self, request, num_new_tokens: int) -> int:
        s = request._s
        if s.status is not _WAITING:
            return SchedulerView.extra_blocks(self, request, num_new_tokens)
        cache, num_tokens = self.prefix_cache, s.num_prompt_tokens + s.num_output_tokens
        return rules.admission_blocks(cache.hit_tokens(s.request_id, num_tokens),
                                      cache.shared_hit_blocks(s.request_id, num_tokens),
                                      s.num_prompt_tokens, s.num_output_tokens, num_new_tokens,
                                      self.kv_convention, self.block_size)

    def new_batch(self, max_num_batched_tokens: int | None = None) -> Batch:
        plain = SchedulerView.new_batch(self, max_num_batched_tokens)
        return CachingBatch(self, plain.max_num_batched_tokens, self.prefix_cache)


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

    def _blocks_freed_by_eviction(self, request) -> int:
        """Only the blocks no other request of the batch holds become free."""
        freed = 0
        for block in self._cache.tables.get(request.request_id, ()):
            holders = self._holders(block) - 1
            self._refs[block] = holders
            freed += holders == 0
        return freed
