"""KV accounting: the two conventions and the paged cache (memory.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsched.engine.memory import KVCache
from kvsched.engine.rules import KVConvention, kv_tokens_after_step, kv_tokens_held, peak_kv_tokens

C, E = KVConvention.COMPUTED, KVConvention.EMITTED


@pytest.mark.parametrize("computed, prompt, generated, convention, expected", [
    (3, 8, 0, C, 3), (3, 8, 0, E, 3),          # mid-prefill: computed tokens only
    (8, 8, 1, C, 8), (8, 8, 1, E, 9),          # prefill done, token 1 emitted: s vs s + 1
    (10, 8, 3, C, 10), (10, 8, 3, E, 11),      # after emitting token 3: s + 2 vs s + 3
    (5, 8, 3, E, 5),                           # recomputing after an eviction: not caught up
])
def test_kv_tokens_held(computed, prompt, generated, convention, expected):
    assert kv_tokens_held(computed, prompt, generated, convention) == expected


def test_kv_after_a_step_emits_when_it_catches_up():
    # prompt 8, token 3 generated, 10 computed: a decode computes token 3 and emits token 4.
    assert kv_tokens_after_step(10, 8, 3, 1, C) == 11
    assert kv_tokens_after_step(10, 8, 3, 1, E) == 12
    # A prefill chunk that does not finish the prompt emits nothing under either convention.
    assert kv_tokens_after_step(0, 8, 0, 5, E) == 5
    # The chunk that finishes it emits token 1.
    assert kv_tokens_after_step(5, 8, 0, 3, E) == 9


def test_peak():
    assert peak_kv_tokens(8, 4, C) == 11
    assert peak_kv_tokens(8, 4, E) == 12


def test_cache_counts_whole_blocks():
    cache = KVCache(50, block_size=16)
    assert cache.capacity_blocks == 3                # 50 tokens hold 3 whole blocks
    cache.set_tokens(0, 17)
    cache.set_tokens(1, 1)
    assert (cache.used_blocks, cache.used_tokens, cache.num_free_blocks, cache.num_free_tokens) == (3, 48, 0, 0)
    assert cache.held_blocks(0) == 2 and cache.held_blocks(7) == 0
    assert cache.can_fit(0) and not cache.can_fit(1)
    cache.set_tokens(0, 32)                           # still 2 blocks
    assert cache.used_blocks == 3
    cache.free(0)
    assert (cache.used_blocks, cache.held_blocks(0)) == (1, 0)
    cache.set_tokens(1, 0)
    assert cache.used_blocks == 0


def test_cache_rejects_bad_sizes():
    with pytest.raises(ValueError):
        KVCache(0)
    with pytest.raises(ValueError):
        KVCache(10, block_size=0)


@settings(max_examples=60, deadline=None)
@given(block_size=st.integers(1, 16),
       ops=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 100)), max_size=40))
def test_used_blocks_is_the_sum_of_held_blocks(block_size, ops):
    """`KVCache.set_tokens` (its block count inlined) holds `rules.blocks` of the tokens."""
    from kvsched.engine.rules import blocks
    cache, held = KVCache(10_000, block_size), {}
    for rid, tokens in ops:
        cache.set_tokens(rid, tokens)
        held[rid] = blocks(tokens, block_size)
        assert cache.used_blocks == sum(held.values())
        assert cache.held_blocks(rid) == held[rid]
