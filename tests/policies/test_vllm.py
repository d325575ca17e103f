"""vLLM V1 policy: hand-worked schedules (ALGORITHMS.md §0, vllm/v1/core/sched/scheduler.py).

Every test writes out each iteration as (start time, {request id: tokens}, evicted ids, KV used
after the iteration). UnitTime, block size 1 and the COMPUTED convention unless stated: a request
with prompt s holds s tokens after its prefill and s + j - 1 after the decode that emits token j;
finishing requests still count in the iteration that finishes them.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim_helpers import digest, run

from kvsched import Simulator, UnitTime
from kvsched.errors import StalledError
from kvsched.policies import make
from kvsched.policies.vllm import VLLMPolicy


@pytest.mark.parametrize("prefill_first", [False, True])
def test_head_of_line_blocking(prefill_first):
    # r0 runs; r1 (8 tokens) does not fit beside it and blocks r2 (2 tokens) behind it.
    # Prefill-first changes nothing here: no admission is possible, so r0 decodes.
    rows = [(0, 5, 4), (1, 8, 2), (1, 2, 1)]
    result = run(make("vllm", prefill_first=prefill_first), rows, capacity=10)
    assert digest(result) == [
        (0.0, {0: 5}, (), 5),        # r0 prefill, emits token 1 at t=1
        (1.0, {0: 1}, (), 6),        # free 4 after r0's block: r1 needs 8 -> blocked, r2 waits
        (2.0, {0: 1}, (), 7),
        (3.0, {0: 1}, (), 8),        # r0 emits its 4th token, finishes at 4
        (4.0, {1: 8, 2: 2}, (), 10),
        (5.0, {1: 1}, (), 9),
    ]
    np.testing.assert_array_equal(result.first_token_time, [1, 5, 5])
    np.testing.assert_array_equal(result.finish_time, [4, 6, 5])


def test_continue_on_block_skips_the_blocked_head():
    rows = [(0, 5, 4), (1, 8, 2), (1, 2, 1)]
    result = run(make("vllm", continue_on_block=True), rows, capacity=10)
    assert digest(result) == [
        (0.0, {0: 5}, (), 5),
        (1.0, {0: 1, 2: 2}, (), 8),  # r1 skipped (8 > 4 free), r2 admitted behind it
        (2.0, {0: 1}, (), 7),        # r1 still needs 8 > 3
        (3.0, {0: 1}, (), 8),
        (4.0, {1: 8}, (), 8),
        (5.0, {1: 1}, (), 9),
    ]
    np.testing.assert_array_equal(result.finish_time, [4, 6, 2])


def test_lifo_preemption_and_no_admission_in_a_preempting_iteration():
    rows = [(0, 3, 5), (0, 3, 5), (2, 2, 1)]
    result = run(make("vllm"), rows, capacity=10)
    assert digest(result) == [
        (0.0, {0: 3, 1: 3}, (), 6),
        (1.0, {0: 1, 1: 1}, (), 8),
        (2.0, {0: 1, 1: 1}, (), 10),  # r2 arrived, needs 2 > 0 free
        # r0 needs a block: r1 (admitted last) is preempted, freeing 5. r2 would fit in the
        # 4 blocks left, but nothing is admitted in an iteration that preempted.
        (3.0, {0: 1}, (1,), 6),
        # r1 heads the queue: it recomputes 3 prompt + 3 generated = 6 > 3 free, blocking r2.
        (4.0, {0: 1}, (), 7),
        (5.0, {1: 6, 2: 2}, (), 8),   # r1 catches up and emits token 4; r2 finishes
        (6.0, {1: 1}, (), 7),         # r1 emits token 5 and finishes
    ]
    np.testing.assert_array_equal(result.finish_time, [5, 7, 6])
    np.testing.assert_array_equal(result.first_token_time, [1, 1, 6])
    np.testing.assert_array_equal(result.num_evictions, [0, 1, 0])
    # r1 had computed 5 tokens; its recomputation of 6 re-does those 5.
    np.testing.assert_array_equal(result.num_recomputed_tokens, [0, 5, 0])
    np.testing.assert_array_equal(result.total_computed_tokens, [3 + 5 - 1, 3 + 5 - 1 + 5, 2])


def test_preempted_request_goes_to_the_front_of_the_waiting_queue():
    # continue_on_block lets r2 (id 2) run before r1 (id 1, same arrival). When r2 is
    # preempted it goes to the FRONT of waiting, ahead of r1 which arrived before it.
    rows = [(0, 4, 4), (0, 7, 1), (0, 2, 4)]
    result = run(make("vllm", continue_on_block=True), rows, capacity=10)
    assert digest(result) == [
        (0.0, {0: 4, 2: 2}, (), 6),   # r1 needs 7 > 6 free: skipped
        (1.0, {0: 1, 2: 1}, (), 8),
        (2.0, {0: 1, 2: 1}, (), 10),
        (3.0, {0: 1}, (2,), 7),       # r0 needs a block: r2 (last admitted) preempted
        (4.0, {2: 5}, (), 5),         # queue is [r2, r1]: r2 recomputes 2 + 3 and finishes;
        (5.0, {1: 7}, (), 7),         # r1 (7 > 5 free) skipped until now
    ]
    np.testing.assert_array_equal(result.finish_time, [4, 6, 5])
    np.testing.assert_array_equal(result.num_recomputed_tokens, [0, 0, 4])


def test_victim_is_the_most_recently_admitted_and_may_be_the_request_itself():
    # r1 arrives before r2 (same time, lower id) but is admitted after it; when r1 needs a
    # block, r1 is the most recently admitted, so it preempts itself (Sarathi would pick r2,
    # the latest arrival).
    rows = [(0, 6, 2), (0, 5, 4), (0, 2, 6)]
    result = run(make("vllm", continue_on_block=True), rows, capacity=10)
    assert digest(result) == [
        (0.0, {0: 6, 2: 2}, (), 8),
        (1.0, {0: 1, 2: 1}, (), 10),  # r0 finishes
        (2.0, {2: 1, 1: 5}, (), 9),   # r1 admitted (5 <= 6 free)
        (3.0, {2: 1}, (1,), 5),       # r2 takes the last block; r1 needs one: self-preempted
        (4.0, {2: 1}, (), 6),         # r1 needs 5 + 1 = 6 > 4
        (5.0, {2: 1}, (), 7),
        (6.0, {1: 6}, (), 6),
        (7.0, {1: 1}, (), 7),
        (8.0, {1: 1}, (), 8),
    ]
    np.testing.assert_array_equal(result.finish_time, [2, 9, 6])
    np.testing.assert_array_equal(result.num_evictions, [0, 1, 0])


@pytest.mark.parametrize("watermark, expected", [
    (0.0, [(0.0, {0: 7, 1: 2}, (), 9), (1.0, {0: 1}, (), 8), (2.0, {0: 1}, (), 9)]),
    # 2 of 10 blocks are kept free against admissions (not against running requests' growth).
    (0.2, [(0.0, {0: 7}, (), 7), (1.0, {0: 1}, (), 8), (2.0, {0: 1}, (), 9),
           (3.0, {1: 2}, (), 2)]),
])
def test_watermark(watermark, expected):
    result = run(make("vllm", watermark=watermark), [(0, 7, 3), (0, 2, 1)], capacity=10)
    assert digest(result) == expected


CHUNK_ROWS = [(0, 3, 4), (0, 8, 1)]


def test_chunked_prefill_under_a_small_budget_and_preempting_a_partial_prefill():
    result = run(make("vllm", max_num_batched_tokens=4, full_prompt_must_fit=False), CHUNK_ROWS, capacity=10)
    assert digest(result) == [
        (0.0, {0: 3, 1: 1}, (), 4),    # r1 gets the one token of budget left
        (1.0, {0: 1, 1: 3}, (), 8),
        (2.0, {0: 1}, (1,), 5),        # r1's next chunk (3) does not fit: it preempts itself
        (3.0, {0: 1, 1: 3}, (), 9),    # r0 finishes; r1 restarts from its first token
        (4.0, {1: 4}, (), 7),
        (5.0, {1: 1}, (), 8),
    ]
    np.testing.assert_array_equal(result.finish_time, [4, 6])
    np.testing.assert_array_equal(result.num_recomputed_tokens, [0, 4])
    np.testing.assert_array_equal(result.total_computed_tokens, [6, 8 + 1 - 1 + 4])


def test_engine_budget_caps_the_policy_budget():
    result = run(make("vllm"), CHUNK_ROWS, capacity=10, max_num_batched_tokens=4)
    expected = run(make("vllm", max_num_batched_tokens=4), CHUNK_ROWS, capacity=10)
    assert digest(result) == digest(expected)


def test_full_prompt_must_fit():
    result = run(make("vllm", max_num_batched_tokens=4, full_prompt_must_fit=True), CHUNK_ROWS,
                 capacity=10)
    assert digest(result) == [
        (0.0, {0: 3}, (), 3),          # r1's whole prompt (8) does not fit in the 7 free
        (1.0, {0: 1}, (), 4),
        (2.0, {0: 1}, (), 5),
        (3.0, {0: 1}, (), 6),
        (4.0, {1: 4}, (), 4),
        (5.0, {1: 4}, (), 8),
    ]
    assert result.num_evictions.sum() == 0


def test_chunked_prefill_disabled_admits_whole_prompts_only():
    rows = [(0, 3, 2), (0, 4, 1)]
    chunked = run(make("vllm", max_num_batched_tokens=4), rows, capacity=20)
    assert digest(chunked) == [(0.0, {0: 3, 1: 1}, (), 4), (1.0, {0: 1, 1: 3}, (), 8)]
    whole = run(make("vllm", max_num_batched_tokens=4, enable_chunked_prefill=False), rows,
                capacity=20)
    assert digest(whole) == [(0.0, {0: 3}, (), 3), (1.0, {0: 1}, (), 4), (2.0, {1: 4}, (), 4)]


def test_continue_on_block_does_not_skip_a_prompt_over_the_budget():
    # With chunked prefill off, r1 (4 tokens) does not fit the 1 token of budget left; upstream
    # stops admission there (the HOL fix only skips requests whose KV blocks do not fit).
    rows = [(0, 3, 2), (0, 4, 1), (0, 1, 1)]
    policy = make("vllm", max_num_batched_tokens=4, enable_chunked_prefill=False,
                  continue_on_block=True)
    result = run(policy, rows, capacity=20)
    assert digest(result) == [(0.0, {0: 3}, (), 3), (1.0, {0: 1}, (), 4),
                              (2.0, {1: 4}, (), 4), (3.0, {2: 1}, (), 1)]


def test_chunked_prefill_disabled_with_a_prompt_over_the_budget_stalls_loudly():
    with pytest.raises(StalledError):
        run(make("vllm", max_num_batched_tokens=4, enable_chunked_prefill=False), [(0, 5, 1)],
            capacity=20)


def test_max_num_seqs_counts_resident_requests():
    rows = [(0, 2, 2), (0, 2, 2), (0, 2, 2)]
    result = run(make("vllm", max_num_seqs=2), rows, capacity=100)
    assert digest(result) == [
        (0.0, {0: 2, 1: 2}, (), 4),
        (1.0, {0: 1, 1: 1}, (), 6),
        (2.0, {2: 2}, (), 2),
        (3.0, {2: 1}, (), 3),
    ]


def test_paged_blocks_of_16():
    # Two 16-token prompts fill 2 of 3 blocks; the first decode of each needs a third block,
    # so r1 (admitted last) is preempted when r0 takes it.
    rows = [(0, 16, 3), (0, 16, 3)]
    result = run(make("vllm"), rows, capacity=48, block_size=16)
    assert digest(result) == [
        (0.0, {0: 16, 1: 16}, (), 32),
        (1.0, {0: 1}, (1,), 32),       # r0: 17 tokens = 2 blocks; r1 evicted
        (2.0, {0: 1}, (), 32),         # r0 finishes; r1 needs 16 + 1 tokens = 2 blocks > 1 free
        (3.0, {1: 17}, (), 32),
        (4.0, {1: 1}, (), 32),
    ]
    np.testing.assert_array_equal(result.finish_time, [3, 5])


def test_parameters_are_validated():
    for bad in ({"max_num_seqs": 0}, {"max_num_batched_tokens": 0}, {"watermark": 1.0},
                {"watermark": -0.1}):
        with pytest.raises(ValueError):
            VLLMPolicy(**bad)


def test_runs_are_deterministic():
    from kvsched.workload.synthetic import Poisson, Uniform, synthesize
    workload = synthesize(60, Poisson(4.0), Uniform(1, 64), Uniform(1, 64), np.random.default_rng(3))
    sim = Simulator(UnitTime(), 200, block_size=4, record_iterations=True)
    a = sim.run(workload, make("vllm", max_num_batched_tokens=32))
    b = sim.run(workload, make("vllm", max_num_batched_tokens=32))
    assert digest(a) == digest(b)
    np.testing.assert_array_equal(a.finish_time, b.finish_time)
    assert a.num_evictions.sum() > 0      # the workload exercises preemption


def test_watermark_does_not_starve_a_prompt_that_fits_an_empty_cache():
    result = run(make("vllm", watermark=0.05), [(0, 100, 1), (0, 1, 1)], capacity=100)
    assert digest(result) == [(0.0, {0: 100}, (), 100), (1.0, {1: 1}, (), 1)]


# ---------------------------------------------------------------- V0 / Vidur options

PREFILL_ROWS = [(0, 3, 4), (1, 2, 2), (2, 2, 1)]


def test_v1_mixes_prefills_into_decoding_iterations():
    result = run(make("vllm"), PREFILL_ROWS, capacity=20)
    assert digest(result) == [
        (0.0, {0: 3}, (), 3),
        (1.0, {0: 1, 1: 2}, (), 6),
        (2.0, {0: 1, 1: 1, 2: 2}, (), 10),   # r0 5, r1 3, r2 2; r1 and r2 finish at 3
        (3.0, {0: 1}, (), 6),
    ]
    np.testing.assert_array_equal(result.finish_time, [4, 3, 3])


def test_prefill_first_runs_prefills_alone():
    result = run(make("vllm", prefill_first=True), PREFILL_ROWS, capacity=20)
    assert digest(result) == [
        (0.0, {0: 3}, (), 3),                # r0 emits token 1 at t=1
        (1.0, {1: 2}, (), 5),                # r1 arrived: admitted alone, r0 waits
        (2.0, {2: 2}, (), 7),                # r2 arrived: admitted alone; finishes at 3
        (3.0, {0: 1, 1: 1}, (), 7),          # nothing to admit: decodes (r0 4, r1 3); r1 done
        (4.0, {0: 1}, (), 5),
        (5.0, {0: 1}, (), 6),                # r0 emits token 4
    ]
    np.testing.assert_array_equal(result.first_token_time, [1, 2, 3])
    np.testing.assert_array_equal(result.finish_time, [6, 4, 3])


PADDED_ROWS = [(0, 5, 2), (0, 2, 1), (0, 4, 1)]


def test_summed_prefill_budget():
    policy = make("vllm", max_num_batched_tokens=8, enable_chunked_prefill=False)
    result = run(policy, PADDED_ROWS, capacity=20)
    assert digest(result) == [
        (0.0, {0: 5, 1: 2}, (), 7),          # 5 + 2 = 7; r2 (4) > 1 left
        (1.0, {0: 1, 2: 4}, (), 10),         # r0's decode leaves 7: r2 fits
    ]


def test_padded_prefill_budget_counts_prompts_times_the_longest():
    policy = make("vllm", max_num_batched_tokens=8, enable_chunked_prefill=False,
                  padded_prefill_budget=True)
    result = run(policy, PADDED_ROWS, capacity=20)
    assert digest(result) == [
        (0.0, {0: 5}, (), 5),                # r1: 2 prompts x 5 = 10 > 8
        # r0's decode leaves 7: r1 alone counts 1 x 2; with r2, 2 x 4 = 8 > 7
        (1.0, {0: 1, 1: 2}, (), 8),
        (2.0, {2: 4}, (), 4),
    ]
    np.testing.assert_array_equal(result.finish_time, [2, 2, 3])


VICTIM_ROWS = [(0, 5, 2), (0, 5, 4), (0, 2, 6)]


def test_victim_last_admitted_versus_last_arrived_prefix():
    # Shared start (capacity 9, continue_on_block): r1 (5) is skipped at t=0 and admitted at
    # t=2, after r2 although it arrived first. At t=3 no block is free and both need one.
    result = run(make("vllm", continue_on_block=True), VICTIM_ROWS, capacity=9)
    assert digest(result)[:4] == [
        (0.0, {0: 5, 2: 2}, (), 7),          # r1 needs 5 > 2 free: skipped
        (1.0, {0: 1, 2: 1}, (), 9),          # r0 finishes at 2
        (2.0, {2: 1, 1: 5}, (), 9),          # r2 4, r1 5: no block left
        (3.0, {2: 1}, (1,), 5),              # admission order [r2, r1]: r2 first, r1 is evicted
    ]


def test_preempt_victim_last_arrived():
    policy = make("vllm", continue_on_block=True, preempt_victim="last_arrived")
    result = run(policy, VICTIM_ROWS, capacity=9)
    assert digest(result) == [
        (0.0, {0: 5, 2: 2}, (), 7),
        (1.0, {0: 1, 2: 1}, (), 9),
        (2.0, {2: 1, 1: 5}, (), 9),
        # arrival order [r1, r2]: r1 is served first and needs a block; the latest arrival not
        # yet served, r2 (3 tokens emitted), is evicted and r1 decodes.
        (3.0, {1: 1}, (2,), 6),
        (4.0, {1: 1}, (), 7),                # r2 needs 2 + 3 = 5 > 2 free
        (5.0, {1: 1}, (), 8),                # r1 emits token 4 and finishes at 6
        (6.0, {2: 5}, (), 5),                # r2 recomputes and emits token 4
        (7.0, {2: 1}, (), 6),
        (8.0, {2: 1}, (), 7),
    ]
    np.testing.assert_array_equal(result.finish_time, [2, 6, 9])
    np.testing.assert_array_equal(result.num_evictions, [0, 0, 1])
    np.testing.assert_array_equal(result.num_recomputed_tokens, [0, 0, 4])


@pytest.mark.parametrize("quirk, expected", [
    # KV used is counted in whole blocks. Both 4-token blocks are taken after the prompts, but
    # each decode's 4th token fits its block.
    (False, [(0.0, {0: 3, 1: 3}, (), 8), (1.0, {0: 1, 1: 1}, (), 8)]),
    # V0 / Vidur ask for a free block anyway: r0 evicts r1 (the last admitted), which recomputes.
    (True, [(0.0, {0: 3, 1: 3}, (), 8), (1.0, {0: 1}, (1,), 4), (2.0, {1: 4}, (), 4)]),
])
def test_decode_needs_free_block(quirk, expected):
    result = run(make("vllm", decode_needs_free_block=quirk), [(0, 3, 2), (0, 3, 2)],
                 capacity=8, block_size=4)
    assert digest(result) == expected


def test_v0_options_are_validated():
    with pytest.raises(ValueError, match="preempt_victim"):
        VLLMPolicy(preempt_victim="oldest")
    with pytest.raises(ValueError, match="enable_chunked_prefill"):
        VLLMPolicy(padded_prefill_budget=True)


V0 = dict(enable_chunked_prefill=False, prefill_first=True, padded_prefill_budget=True,
          preempt_victim="last_arrived", decode_needs_free_block=True)


def test_v0_configuration():
    result = run(make("vllm", max_num_batched_tokens=8, **V0),
                 [(0, 3, 4), (0, 3, 4), (1, 2, 1)], capacity=9)
    assert digest(result) == [
        (0.0, {0: 3, 1: 3}, (), 6),          # 2 prompts x 3 = 6 <= 8
        (1.0, {2: 2}, (), 8),                # r2 arrived: prefilled alone; finishes at 2
        (2.0, {0: 1, 1: 1}, (), 8),          # nothing to admit: decodes, oldest first
        # r0 takes the last free block; r1 finds none and is the latest arrival left: it
        # evicts itself (2 tokens emitted, 5 to recompute)
        (3.0, {0: 1}, (1,), 5),
        (4.0, {0: 1}, (), 6),                # r1 needs 5 > 4 free: decodes; r0 finishes at 5
        (5.0, {1: 5}, (), 5),
        (6.0, {1: 1}, (), 6),
    ]
    np.testing.assert_array_equal(result.first_token_time, [1, 1, 2])
    np.testing.assert_array_equal(result.finish_time, [5, 7, 2])


ROWS = st.lists(st.tuples(st.integers(0, 20), st.integers(2, 24), st.integers(1, 24)),
                min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(rows=ROWS, block_size=st.sampled_from([1, 4]))
def test_v0_iterations_are_prefill_only_or_decode_only_within_the_padded_budget(rows, block_size):
    # Prompts of >= 2 tokens, so a prefill (or a recomputation, prompt + generated) is >= 2 tokens
    # and a decode exactly 1. The budget covers any request's whole length: nothing stalls.
    result = run(make("vllm", max_num_batched_tokens=48, **V0), sorted(rows), capacity=64,
                 block_size=block_size)
    assert np.all(np.isfinite(result.finish_time))
    for it in result.iterations:
        sizes = list(it.num_tokens.values())
        if not sizes:
            continue
        assert all(n == 1 for n in sizes) or all(n >= 2 for n in sizes), it
        if sizes[0] >= 2:
            assert not it.evicted and len(sizes) * max(sizes) <= 48, it
