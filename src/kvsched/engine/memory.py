"""KV-cache accounting: tokens, or paged blocks of `block_size` tokens.

How many KV tokens a request holds is a rule of `kvsched.engine.rules`; two conventions (DESIGN.md §1):

- ``KVConvention.COMPUTED`` (vLLM): KV exists for every token fed through the model. A request with
  prompt s holds s tokens during the iteration that finishes its prefill and s + j - 1 during the
  decode that emits output token j (the newest token is sampled, not yet fed).
- ``KVConvention.EMITTED`` (the theory papers: MC-SF, the IP, A_min, WAIT's s + j): the token being
  emitted already counts, so s + j while emitting token j (s + 1 in the prefill iteration).

Both are "KV after this iteration's tokens are computed"; an iteration is feasible iff the sum over
resident requests of that amount (rounded up to whole blocks) fits in the capacity.
"""

from __future__ import annotations

import numpy as np

from .rules import KVConvention, blocks  # noqa: F401  (KVConvention: also importable from here)


class KVCache:
    """Capacity in tokens, counted in whole blocks of `block_size` tokens (1 = exact tokens).

    The cache stores how many blocks each resident request holds. It never refuses: the engine
    checks a decision against `num_free_blocks` before it applies it and raises if it does not fit.
    """

    __slots__ = ("capacity_tokens", "block_size", "capacity_blocks", "_held", "used_blocks")

    def __init__(self, capacity_tokens: int, block_size: int = 1) -> None:
        if capacity_tokens < 1 or block_size < 1:
            raise ValueError("capacity_tokens and block_size must be >= 1")
        self.capacity_tokens = int(capacity_tokens)
        self.block_size = int(block_size)
        self.capacity_blocks = self.capacity_tokens // self.block_size
        self._held: dict[int, int] = {}
        self.used_blocks = 0

    def blocks(self, tokens: int) -> int:
        """Blocks needed to hold `tokens` KV tokens."""
        return blocks(tokens, self.block_size)

    @property
    def usable_tokens(self) -> int:
        """The capacity in whole blocks, in tokens (a partial last block is unusable)."""
        return self.capacity_blocks * self.block_size

    @property
    def used_tokens(self) -> int:
        """Used capacity in tokens (whole blocks)."""
        return self.used_blocks * self.block_size

    @property
    def num_free_blocks(self) -> int:
        return self.capacity_blocks - self.used_blocks

    @property
    def num_free_tokens(self) -> int:
        return self.num_free_blocks * self.block_size

    def held_blocks(self, request_id: int) -> int:
        return self._held.get(request_id, 0)

    def can_fit(self, extra_blocks: int) -> bool:
        return extra_blocks <= self.num_free_blocks

    def set_tokens(self, request_id: int, tokens: int) -> None:
        """Record that `request_id` now holds `tokens` KV tokens (0 frees it)."""
        new = -(-tokens // self.block_size)     # rules.blocks, inlined (a call per new block)
        self.used_blocks += new - self._held.get(request_id, 0)
        if new:
            self._held[request_id] = new
        else:
            self._held.pop(request_id, None)

    def free(self, request_id: int) -> None:
        self.set_tokens(request_id, 0)


# Paged growth of a batch of decodes (used by the engine's fast path and by policies that
# predict when a pure decode step stops fitting).

def block_gaps(held_tokens: list[int], block_size: int) -> list[int]:
    """Free token slots in each request's last block, sorted (0 when the block is full)."""
    return sorted((-h) % block_size for h in held_tokens)


def first_overflow_iteration(sorted_gaps: list[int], num_free_blocks: int, block_size: int) -> int:
    """First iteration k (0-based) of a pure decode run whose KV would exceed the free blocks.

    Request i first needs a new block in iteration ``g_i`` (its gap), then every `block_size`
    iterations, so by iteration ``k = m · block_size + r`` (0 <= r < block_size) the batch needs
    ``m · B + #{g_i <= r}`` new blocks. The answer is the smallest k where that exceeds the free
    blocks: the (F + 1)-th smallest crossing time.
    """
    num_seqs = len(sorted_gaps)
    wanted = num_free_blocks + 1
    m = (wanted - 1) // num_seqs
    return m * block_size + sorted_gaps[wanted - m * num_seqs - 1]


def new_blocks_by_iteration(sorted_gaps: list[int], block_size: int, num_iterations: int) -> np.ndarray:
    """New blocks the batch holds after each iteration k < num_iterations (nondecreasing)."""
    k = np.arange(num_iterations, dtype=np.int64)
    m, r = np.divmod(k, block_size)
    return m * len(sorted_gaps) + np.searchsorted(np.asarray(sorted_gaps, dtype=np.int64), r,
                                                  side="right")
