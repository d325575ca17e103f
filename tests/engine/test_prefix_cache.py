"""Prefix caching (`kvsched.engine.prefix_cache`), by hand: block tables written out.

Block size 4 throughout. A prompt is a list of (segment id, length) pieces; request r's outputs
are the stream -(r + 1).
"""

from __future__ import annotations

import numpy as np
import pytest

from kvsched import Decision, Simulator, UnitTime
from kvsched.engine.prefix_cache import BlockPool, PrefixCache, TokenStream
from kvsched.errors import InfeasibleDecisionError
from kvsched.policies import make
from kvsched.workload.segments import PromptSegments
from kvsched.workload.synthetic import Workload

from sim_helpers import Scripted, tiny

B = 4


def cache_with(prompts: dict[int, list[tuple[int, int]]], num_blocks: int = 8) -> PrefixCache:
    return PrefixCache(num_blocks * B, B, make_stream=lambda rid: TokenStream(prompts[rid], rid, B))


# ---------------------------------------------------------------------------- keys
def test_keys_chain_the_content_of_whole_blocks():
    a = TokenStream([(1, 10)], 0, B)
    same_start = TokenStream([(1, 8), (2, 5)], 1, B)
    assert a.key(0) == same_start.key(0) and a.key(1) == same_start.key(1)   # tokens 0-7 of segment 1
    assert a.key(2) != same_start.key(2)       # 1:8-10 + A's outputs vs 2:0-4
    # the same block content after a different prefix is a different block (the key is chained)
    assert TokenStream([(3, 4), (1, 4)], 2, B).key(1) != TokenStream([(1, 4), (1, 4)], 3, B).key(1)


def test_a_follow_up_turn_shares_its_previous_turns_prompt_and_answer():
    first = TokenStream([(7, 6)], 0, B)                 # 6 prompt tokens, then its outputs
    follow = TokenStream([(7, 6), (-1, 5), (8, 3)], 1, B)   # prompt + request 0's 5 outputs + message
    assert [first.key(i) for i in range(2)] == [follow.key(i) for i in range(2)]   # tokens 0-7
    assert first.key(2) != follow.key(2)       # 7:.. + -1:2..5 vs -1:2..5 + 8:0..1 differ at token 11


# ---------------------------------------------------------------------------- the pool
def test_a_hit_is_the_longest_cached_run_capped_at_num_tokens_minus_one():
    cache = cache_with({0: [(1, 10)], 1: [(1, 8), (2, 5)], 2: [(1, 8)]})
    cache.set_tokens(0, 10)                    # A: blocks 0, 1 full (registered), 2 holds 2 tokens
    assert cache.tables[0] == [0, 1, 2] and cache.registered[0] == 2
    assert cache.hit_blocks(1, 13) == [0, 1]   # B shares tokens 0-7, then differs
    assert cache.hit_tokens(2, 8) == 4         # C's 8 tokens are all cached, but 1 must be computed
    assert cache.hit_tokens(2, 9) == 8         # with one output token more, both blocks


def test_shared_blocks_count_once():
    cache = cache_with({0: [(1, 10)], 1: [(1, 8), (2, 5)]})
    cache.set_tokens(0, 10)
    assert cache.used_blocks == 3
    assert cache.shared_hit_blocks(1, 13) == 2     # held by A: they cost B nothing
    assert cache.take_hit(1, 13) == 8
    cache.set_tokens(1, 13)                    # B: blocks 0, 1 (shared) + 2 new
    assert cache.tables[1][:2] == [0, 1] and len(cache.tables[1]) == 4
    assert cache.used_blocks == 5 and cache.pool.ref[:2] == [2, 2]


def test_freed_blocks_stay_cached_until_the_lru_reuses_them_tail_first():
    cache = cache_with({0: [(1, 10)], 1: [(1, 8), (2, 5)], 9: [(5, 24)]})
    cache.set_tokens(0, 10)
    cache.free(0)                              # tail first: block 2 (no key) to the front,
    assert list(cache.pool.free) == [2, 3, 4, 5, 6, 7, 1, 0]   # then 1, 0 (keys kept) to the back
    assert cache.num_free_blocks == 8 and cache.hit_blocks(1, 13) == [0, 1]
    cache.set_tokens(9, 24)                    # 6 blocks: 2..7, nothing evicted yet
    assert cache.hit_blocks(1, 13) == [0, 1]
    cache.set_tokens(9, 28)                    # a 7th: the LRU front is block 1, A's tail block
    assert cache.tables[9][-1] == 1
    assert cache.hit_blocks(1, 13) == [0]      # block 0 (tokens 0-3) survives


def test_a_hit_on_a_free_block_takes_it_out_of_the_free_queue():
    pool = BlockPool(3)
    block = pool.allocate()
    pool.register(block, 42)
    pool.release([block])
    assert list(pool.free) == [1, 2, 0] and pool.first(42) == 0
    pool.touch(0)
    assert list(pool.free) == [1, 2] and pool.ref[0] == 1


# ---------------------------------------------------------------------------- the engine
class Probe(Scripted):
    """Also records each waiting request's hit (`num_cached_tokens`) as the policy saw it."""

    def schedule(self, view):
        self.hits = getattr(self, "hits", [])
        self.hits.append({r.request_id: r.num_cached_tokens for r in view.waiting})
        return super().schedule(view)


def _sim(**kwargs):
    return Simulator(UnitTime(), 4 * B, block_size=B, record_iterations=True, **kwargs)


def test_a_preempted_request_hits_its_own_freed_blocks():
    """Prompt 9, 3 outputs. Iteration 1 computes the prompt (blocks 0, 1 full and cached; block 2
    holds token 8) and emits output 1. Evicted, it is 10 known tokens; its first 8 are cached, so
    it recomputes 2 (tokens 8 and 9: 8 below its high-water mark of 9), then decodes once."""
    policy = Probe(steps=[{0: 9}, Decision(evict=(0,)), {0: 2}, {0: 1}])
    result = _sim(prefix_caching=True).run(tiny((0, 9, 3)), policy)
    assert policy.hits[0] == {0: 0} and policy.hits[2] == {0: 8}
    assert result.finish_time[0] == 3.0
    assert result.num_cached_tokens[0] == 8 and result.num_lookup_tokens[0] == 9 + 10
    assert result.total_computed_tokens[0] == 9 + 2 + 1
    assert result.num_recomputed_tokens[0] == 1
    assert [it.kv_used_tokens for it in result.iterations] == [12, 12, 12]


def test_without_prefix_caching_the_evicted_request_recomputes_everything():
    policy = Probe(steps=[{0: 9}, Decision(evict=(0,)), {0: 2}, {0: 8}, {0: 1}])
    result = _sim().run(tiny((0, 9, 3)), policy)
    assert policy.hits[2] == {0: 0} and result.num_cached_tokens is None
    assert result.finish_time[0] == 4.0
    assert result.total_computed_tokens[0] == 9 + 10 + 1 and result.num_recomputed_tokens[0] == 9


def test_a_decision_cannot_compute_the_cached_tokens_again():
    policy = Probe(steps=[{0: 9}, Decision(evict=(0,)), {0: 10}])
    with pytest.raises(InfeasibleDecisionError, match="expected an integer in \\[1, 2\\]"):
        _sim(prefix_caching=True).run(tiny((0, 9, 3)), policy)


def test_distinct_prompts_never_share():
    policy = Probe(steps=[{0: 4}, {0: 1, 1: 4}, {1: 1}])
    result = _sim(prefix_caching=True).run(tiny((0, 4, 2), (0, 4, 2)), policy)
    assert policy.hits[1] == {1: 0}
    assert result.num_cached_tokens.tolist() == [0, 0]
    assert [it.kv_used_tokens for it in result.iterations] == [4, 12, 8]


def test_prefix_caching_needs_the_computed_convention():
    from kvsched.errors import ConfigError
    with pytest.raises(ConfigError, match="kv_convention='computed'"):
        Simulator(UnitTime(), 64, kv_convention="emitted", prefix_caching=True)


def test_the_compiled_engine_hands_prefix_caching_runs_to_python():
    from kvsched.engine import compiled
    from kvsched.policies import make
    sim = Simulator(UnitTime(), 64, prefix_caching=True)
    reason = compiled.unsupported(sim, make("vllm"), tiny((0, 4, 2)))
    assert reason is not None and "prefix caching" in reason
    assert np.isnan(Simulator(UnitTime(), 64, prefix_caching=True, compiled=None)
                    .run(tiny((0, 4, 2)), make("vllm")).finish_time).sum() == 0


# ---------------------------------------------------------------------------- closed-loop turns
def _two_turns(think: float = 1.0) -> Workload:
    """Turn 1: 8 prompt tokens (segment 7), 2 outputs. Turn 2, `think` s after turn 1 finishes:
    turn 1's prompt and answer and a 3-token message (13 tokens), 1 output."""
    segments = PromptSegments.from_lists([[(7, 8)], [(7, 8), (-1, 2), (9, 3)]])
    return Workload.build([0.0, 0.0], [8, 13], [2, 1], parent=[-1, 0], think_time=[0.0, think],
                          segments=segments)


def test_a_follow_up_turn_arrives_after_its_previous_turn_and_hits_its_prompt():
    """Turn 1 prefills at 0-1 and decodes output 1 (token 8) at 1-2: finished at 2 with blocks 0-1
    full (cached) and token 8 in block 2. Turn 2 arrives at 2 + 1 = 3; its blocks 0-1 are turn
    1's, block 2 (turn 1's outputs 1-2 and the message) is not cached: it computes 13 - 8 = 5
    tokens at 3-4 and finishes with its only output."""
    result = _sim(prefix_caching=True).run(_two_turns(), make("vllm"))
    assert result.realized_arrival_time.tolist() == [0.0, 3.0]
    assert result.finish_time.tolist() == [2.0, 4.0]
    assert result.num_cached_tokens.tolist() == [0, 8] and result.num_lookup_tokens.tolist() == [8, 13]
    assert result.total_computed_tokens.tolist() == [8 + 1, 5]
    assert [it.kv_used_tokens for it in result.iterations] == [8, 12, 16]
    off = _sim().run(_two_turns(), make("vllm"))
    assert off.finish_time.tolist() == [2.0, 4.0] and off.total_computed_tokens.tolist() == [9, 13]


def test_a_policy_waiting_for_arrivals_is_not_kept_waiting_by_unreleased_turns():
    """Nested WAIT drains when no arrival is to come; turn 2 comes only once turn 1 is served, so
    it must not count as a coming arrival (it did: the run stalled at t = 1)."""
    result = _sim(prefix_caching=True).run(_two_turns(think=0.0), make("nested-wait"))
    assert not result.rejected.any() and result.finish_time[1] > result.finish_time[0]


# ---------------------------------------------------------------------------- same-step hits
def _same_prefix_at_zero() -> Workload:
    """Two prompts sharing 8 tokens (blocks 0-1), both arriving at 0: 10 tokens, 2 outputs; 11
    tokens, 1 output."""
    segments = PromptSegments.from_lists([[(1, 8), (2, 2)], [(1, 8), (3, 3)]])
    return Workload.build([0.0, 0.0], [10, 11], [2, 1], segments=segments)


def test_an_admission_hits_the_blocks_an_earlier_one_computes_in_the_same_step():
    """As vLLM registers blocks at allocation: request 0 computes its 10 tokens (blocks 0-1 full,
    registered in the step); request 1, admitted after it in the same decision, hits blocks 0-1 and
    computes its last 3 tokens. KV: request 0's 3 blocks and request 1's block 2 (16 tokens)."""
    result = Simulator(UnitTime(), 16 * B, block_size=B, record_iterations=True,
                       prefix_caching=True).run(_same_prefix_at_zero(), make("vllm"))
    assert [it.num_tokens for it in result.iterations] == [{0: 10, 1: 3}, {0: 1}]
    assert result.num_cached_tokens.tolist() == [0, 8]
    assert [it.kv_used_tokens for it in result.iterations] == [16, 12]


@pytest.mark.parametrize("n, cached, kv, rest", [(11, 0, 24, {0: 1}), (5, 4, 20, {0: 1, 1: 2}),
                                                 (3, 8, 16, {0: 1})])
def test_a_same_step_hit_takes_as_many_blocks_as_leave_the_scheduled_tokens(n, cached, kv, rest):
    """A decision that asks request 1 for all 11 tokens (the boundary view's count) computes the
    shared blocks again; 5 tokens take block 0 and compute tokens 4-8; 3 take both blocks."""
    policy = Probe(steps=[{0: 10, 1: n}, rest])
    result = Simulator(UnitTime(), 16 * B, block_size=B, record_iterations=True,
                       prefix_caching=True).run(_same_prefix_at_zero(), policy)
    assert result.iterations[0].num_tokens == {0: 10, 1: n}
    assert result.num_cached_tokens[1] == cached
    assert result.iterations[0].kv_used_tokens == kv


class _ArrivalsSeen(type(make("vllm"))):
    """The `vllm` policy, recording the arrival time each waiting request shows the policy."""

    def schedule(self, view):
        self.seen = getattr(self, "seen", {})
        self.seen.update({r.request_id: r.arrival_time for r in view.waiting})
        return super().schedule(view)


@pytest.mark.parametrize("prefix_caching", [True, False], ids=["caching", "no-caching"])
def test_a_follow_up_turn_shows_the_policy_its_realised_arrival(prefix_caching):
    """A follow-up's view reports its realised arrival (its previous turn's finish + think
    time: 2 + 1), not its nominal one (the conversation's start, 0): policies order and pick
    victims by it (`sarathi`'s FCFS; it showed 0 while the engine queued the turn at 3)."""
    policy = _ArrivalsSeen()
    result = _sim(prefix_caching=prefix_caching).run(_two_turns(), policy)
    assert result.realized_arrival_time.tolist() == [0.0, 3.0]
    assert policy.seen == {0: 0.0, 1: 3.0}
