"""vLLM V1's automatic prefix caching, in plain form (``Simulator(prefix_caching=True)``).

Read from vLLM 0.32's public source (``v1/core/block_pool.py``, ``kv_cache_manager.py``,
``single_type_kv_cache_manager.py``, ``kv_cache_utils.py``) and rebuilt here:

- The cache has ``capacity_blocks`` physical blocks of ``block_size`` tokens. A request holds a
  block table: ceil(KV tokens / block_size) blocks, its first ones possibly shared with others.
- A *full* block is identified by its key: a chained hash of the previous block's key and the
  block's token content (`TokenStream`). A request's full blocks are registered under their keys
  as they are computed; a registered block keeps its key after it is freed.
- Blocks are reference-counted. The free queue holds the blocks no request holds, in reuse order:
  at first every block, by id; an allocation takes the front one and, if it has a key, drops it
  from the cache (LRU eviction). A request's blocks are freed tail first; a freed block with a key
  goes to the back (reused last: LRU), one without a key (a partial block) to the front (vLLM
  reuses those first).
- A waiting request (new, or back after an eviction) *hits* its longest run of leading full blocks
  whose keys are cached, held by others or free, capped at ``num_tokens - 1`` tokens (at least one
  token is computed: the model must produce the next token's logits). Taking a hit adds the
  request to each hit block's holders, taking a free one out of the free queue; so free memory
  counts the evictable cached blocks as free, and shared blocks count once.

Two choices of ours, where vLLM's order of operations inside one scheduling step has no
counterpart in a simulator that validates a whole decision at once:

- A block becomes hittable when the iteration that computes it ends (vLLM registers it when it is
  allocated, so a request admitted later *in the same step* can hit it). The two differ only when
  two requests sharing a prefix nobody has cached yet are admitted in the same iteration: here the
  second computes the shared blocks too (a duplicate, as vLLM has when they are admitted in
  different steps before either is cached).
- A decision's hits are those seen at its boundary (``RequestView.num_cached_tokens``); the engine
  takes all of them before it allocates the decision's new blocks, so an allocation never evicts a
  block another request of the same decision was told it hits.
- Requests that finish in an iteration free their blocks when it ends, oldest admission first (vLLM
  frees them in its running order as it processes the step's output); the order decides which
  freed blocks the LRU reuses first, so the reference loop and the fast path both keep it.

Keys are Python's 64-bit hashes of (previous key, pieces) tuples of integers (deterministic: no
string hashing). Two different blocks collide with probability about n² / 2⁶⁵ for n distinct
blocks (3·10⁻⁶ at 10⁷ blocks); vLLM's ``builtin`` hash mode takes the same risk.
"""

from __future__ import annotations

from collections import OrderedDict

from .rules import blocks as ceil_blocks

ROOT_KEY = 0                 # the "previous key" of a request's first block
UNBOUNDED = 1 << 62          # length of a request's output stream (it has no end of its own)
DISTINCT_PROMPTS = 1 << 62   # prompt segment ids of requests with no token identity: 2⁶² + id


class TokenStream:
    """The token content of one request, as the keys of its full blocks (computed lazily).

    ``pieces``: the prompt as (segment id, length) pieces (`kvsched.workload.segments`), then the
    request's own output tokens, the stream ``-(request_id + 1)``. A block's content is the list
    of (segment id, start, end) ranges it covers.
    """

    __slots__ = ("pieces", "block_size", "keys", "_piece", "_offset")

    def __init__(self, prompt_pieces, request_id: int, block_size: int) -> None:
        self.pieces = [(int(i), int(n)) for i, n in prompt_pieces] + [(-(request_id + 1), UNBOUNDED)]
        self.block_size = block_size
        self.keys: list[int] = []
        self._piece = self._offset = 0       # where the next block starts

    def key(self, index: int) -> int:
        """The key of full block `index` (0-based)."""
        keys = self.keys
        while len(keys) <= index:
            keys.append(hash((keys[-1] if keys else ROOT_KEY, *self._next_block())))
        return keys[index]

    def _next_block(self) -> list[int]:
        ranges, need = [], self.block_size
        while need:
            segment, length = self.pieces[self._piece]
            take = min(need, length - self._offset)
            ranges += (segment, self._offset, self._offset + take)
            need -= take
            self._offset += take
            if self._offset == length:
                self._piece, self._offset = self._piece + 1, 0
        return ranges


class BlockPool:
    """Physical blocks: reference counts, keys, the free queue and the key → blocks map."""

    __slots__ = ("ref", "key", "free", "cached", "version")

    def __init__(self, num_blocks: int) -> None:
        self.ref = [0] * num_blocks
        self.key: list[int | None] = [None] * num_blocks
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # front: reused first
        self.cached: dict[int, dict[int, None]] = {}   # key -> its blocks, oldest first (a hit takes it)
        self.version = 0                              # bumped whenever `cached` changes

    def first(self, key: int) -> int | None:
        """The block a hit on `key` takes (the oldest registered), or None."""
        holders = self.cached.get(key)
        return next(iter(holders)) if holders else None

    def touch(self, block: int) -> None:
        """One more holder (a hit); a free block leaves the free queue."""
        if self.ref[block] == 0:
            del self.free[block]
        self.ref[block] += 1

    def allocate(self) -> int:
        """The front free block, evicted from the cache if it had a key."""
        block, _ = self.free.popitem(last=False)
        key = self.key[block]
        if key is not None:
            holders = self.cached[key]
            del holders[block]
            if not holders:
                del self.cached[key]
            self.key[block] = None
            self.version += 1
        self.ref[block] = 1
        return block

    def register(self, block: int, key: int) -> None:
        self.key[block] = key
        self.cached.setdefault(key, {})[block] = None
        self.version += 1

    def release(self, blocks) -> None:
        """One holder fewer for each of `blocks` (in eviction priority order: the first is reused
        first among those with keys)."""
        unkeyed = []
        for block in blocks:
            self.ref[block] -= 1
            if self.ref[block] == 0:
                if self.key[block] is None:
                    unkeyed.append(block)
                else:
                    self.free[block] = None              # to the back
        for block in reversed(unkeyed):                  # to the front, keeping their order
            self.free[block] = None
            self.free.move_to_end(block, last=False)


class PrefixCache:
    """The engine's KV cache with prefix caching: `kvsched.engine.memory.KVCache`'s interface
    (capacity, used and free blocks, ``set_tokens``, ``free``) over a `BlockPool`, plus the hits.

    ``set_tokens(rid, t)`` grows the request's table to ceil(t / block_size) blocks and registers
    its full blocks (t is its computed tokens: the COMPUTED convention, which prefix caching needs).
    """

    __slots__ = ("capacity_tokens", "block_size", "capacity_blocks", "pool", "tables", "registered",
                 "streams", "make_stream", "_hits")

    def __init__(self, capacity_tokens: int, block_size: int = 1, make_stream=None) -> None:
        if capacity_tokens < 1 or block_size < 1:
            raise ValueError("capacity_tokens and block_size must be >= 1")
        self.capacity_tokens, self.block_size = int(capacity_tokens), int(block_size)
        self.capacity_blocks = self.capacity_tokens // self.block_size
        self.pool = BlockPool(self.capacity_blocks)
        self.tables: dict[int, list[int]] = {}       # request id -> its blocks, in token order
        self.registered: dict[int, int] = {}         # request id -> how many of them have keys
        self.streams: dict[int, TokenStream] = {}    # made on first use, by `make_stream(request_id)`
        self.make_stream = make_stream
        self._hits: dict[int, tuple] = {}            # request id -> (version, num_tokens, blocks)

    # ------------------------------------------------------------------ KVCache's interface
    def blocks(self, tokens: int) -> int:
        return ceil_blocks(tokens, self.block_size)

    @property
    def usable_tokens(self) -> int:
        return self.capacity_blocks * self.block_size

    @property
    def used_blocks(self) -> int:
        """Blocks some request holds (shared blocks once)."""
        return self.capacity_blocks - len(self.pool.free)

    @property
    def used_tokens(self) -> int:
        return self.used_blocks * self.block_size

    @property
    def num_free_blocks(self) -> int:
        """Blocks no request holds, cached (evictable) ones included."""
        return len(self.pool.free)

    @property
    def num_free_tokens(self) -> int:
        return self.num_free_blocks * self.block_size

    def held_blocks(self, request_id: int) -> int:
        return len(self.tables.get(request_id, ()))

    def set_tokens(self, request_id: int, tokens: int) -> None:
        """`request_id` has computed `tokens` tokens: allocate the blocks they need, register the
        full ones (0 frees the request)."""
        if tokens == 0:
            self.free(request_id)
            return
        table = self.tables.setdefault(request_id, [])
        pool = self.pool
        for _ in range(self.blocks(tokens) - len(table)):
            table.append(pool.allocate())
        done, full = self.registered.get(request_id, 0), tokens // self.block_size
        if full > done:
            stream = self.stream(request_id)
            for index in range(done, full):
                pool.register(table[index], stream.key(index))
            self.registered[request_id] = full

    def free(self, request_id: int) -> None:
        """Release the request's blocks, tail first; registered ones stay cached."""
        table = self.tables.pop(request_id, None)
        self.registered.pop(request_id, None)
        if table:
            self.pool.release(reversed(table))

    # ------------------------------------------------------------------ hits
    def stream(self, request_id: int) -> TokenStream:
        stream = self.streams.get(request_id)
        if stream is None:
            stream = self.streams[request_id] = self.make_stream(request_id)
        return stream

    def hit_blocks(self, request_id: int, num_tokens: int) -> list[int]:
        """The blocks a waiting request with `num_tokens` known tokens would hit now: its longest
        run of cached leading full blocks, at most (num_tokens - 1) // block_size of them."""
        pool = self.pool
        memo = self._hits.get(request_id)
        if memo is not None and memo[0] == pool.version and memo[1] == num_tokens:
            return memo[2]
        stream, hit = self.stream(request_id), []
        for index in range((num_tokens - 1) // self.block_size):
            block = pool.first(stream.key(index))
            if block is None:
                break
            hit.append(block)
        self._hits[request_id] = (pool.version, num_tokens, hit)
        return hit

    def hit_tokens(self, request_id: int, num_tokens: int) -> int:
        return len(self.hit_blocks(request_id, num_tokens)) * self.block_size

    def take_hit(self, request_id: int, num_tokens: int) -> int:
        """Admit a waiting request holding nothing: it takes its hit blocks; returns the hit in
        tokens (its computed tokens now)."""
        hit = self.hit_blocks(request_id, num_tokens)
        for block in hit:
            self.pool.touch(block)
        self.tables[request_id] = list(hit)
        self.registered[request_id] = len(hit)
        self._hits.pop(request_id, None)
        return len(hit) * self.block_size

    def shared_hit_blocks(self, request_id: int, num_tokens: int, taken=()) -> int:
        """How many of the request's hit blocks are held already (by residents, or in `taken`:
        blocks other admissions of the same decision take): those cost it no free block."""
        ref = self.pool.ref
        return sum(1 for block in self.hit_blocks(request_id, num_tokens) if ref[block] or block in taken)
