"""Sarathi-Serve policy: hand-worked schedules (ALGORITHMS.md §0, sarathi/core/scheduler/sarathi_scheduler.py).

Each iteration is written out as (start time, {request id: tokens}, evicted ids, KV used after the
iteration); UnitTime, block size 1, the COMPUTED convention. ``watermark=0`` unless the test is
about the watermark. Sarathi reserves the blocks of a request's whole prompt when it admits it,
so a partial prefill holds its computed KV plus a reservation for the rest.
"""

from __future__ import annotations

import numpy as np
import pytest

from sim_helpers import digest, run

from kvsched.policies import make
from kvsched.policies.sarathi import SarathiPolicy


def test_defaults_match_sarathi_serve():
    policy = SarathiPolicy()
    assert (policy.chunk_size, policy.max_num_seqs, policy.watermark) == (512, 128, 0.01)


def test_decodes_first_then_prefill_chunks_fill_the_budget():
    rows = [(0, 2, 3), (1, 7, 1), (1, 3, 1)]
    result = run(make("sarathi", chunk_size=4, watermark=0.0), rows, capacity=100)
    assert digest(result) == [
        (0.0, {0: 2}, (), 2),
        (1.0, {0: 1, 1: 3}, (), 6),    # r0's decode takes 1 of the 4 tokens, r1's chunk the rest
        (2.0, {0: 1, 1: 3}, (), 10),   # r0 finishes; r2 waits for budget
        (3.0, {1: 1, 2: 3}, (), 10),   # r1's last prompt token, then r2 in the 3 tokens left
    ]
    np.testing.assert_array_equal(result.first_token_time, [1, 4, 4])
    np.testing.assert_array_equal(result.finish_time, [3, 4, 4])


def test_whole_prompt_reservation_blocks_a_later_request():
    rows = [(0, 8, 1), (1, 5, 1)]
    sarathi = run(make("sarathi", chunk_size=6, watermark=0.0), rows, capacity=12)
    # r0's 8 blocks are reserved at t=0 (6 computed); r1's 5 > 12 - 8 free.
    assert digest(sarathi) == [(0.0, {0: 6}, (), 6), (1.0, {0: 2}, (), 8), (2.0, {1: 5}, (), 5)]
    # vLLM with the older chunk-only rule allocates for the chunk only: r1 starts beside r0 at t=1.
    vllm = run(make("vllm", max_num_batched_tokens=6, full_prompt_must_fit=False), rows, capacity=12)
    assert digest(vllm) == [(0.0, {0: 6}, (), 6), (1.0, {0: 2, 1: 4}, (), 12),
                            (2.0, {1: 1}, (), 5)]


@pytest.mark.parametrize("watermark, expected", [
    (0.0, [(0.0, {0: 10, 1: 9}, (), 19), (1.0, {0: 1}, (), 11)]),
    # 10% of 20 blocks = 2 kept free against admissions.
    (0.1, [(0.0, {0: 10}, (), 10), (1.0, {0: 1}, (), 11), (2.0, {1: 9}, (), 9)]),
])
def test_watermark(watermark, expected):
    result = run(make("sarathi", watermark=watermark), [(0, 10, 2), (0, 9, 1)], capacity=20)
    assert digest(result) == expected


def test_preempts_the_latest_arrived_request_and_its_reservation():
    rows = [(0, 2, 5), (0, 2, 5), (1, 6, 1)]
    result = run(make("sarathi", chunk_size=4, watermark=0.0), rows, capacity=12)
    assert digest(result) == [
        (0.0, {0: 2, 1: 2}, (), 4),
        (1.0, {0: 1, 1: 1, 2: 2}, (), 8),  # r2 reserves 6 blocks, computes 2
        # 0 free (4 reserved for r2): r0's decode preempts r2, the latest arrival, freeing
        # 2 held + 4 reserved blocks. No admission in a preempting iteration.
        (2.0, {0: 1, 1: 1}, (2,), 8),
        (3.0, {0: 1, 1: 1}, (), 10),       # r2 heads the queue; 6 > 2 free
        (4.0, {0: 1, 1: 1}, (), 12),       # r0, r1 finish
        (5.0, {2: 4}, (), 4),
        (6.0, {2: 2}, (), 6),
    ]
    np.testing.assert_array_equal(result.finish_time, [5, 5, 7])
    np.testing.assert_array_equal(result.num_evictions, [0, 0, 1])
    np.testing.assert_array_equal(result.num_recomputed_tokens, [0, 0, 2])
    np.testing.assert_array_equal(result.total_computed_tokens, [6, 6, 6 + 1 - 1 + 2])


def test_preemption_cascade_frees_the_reservation_and_refills_the_front_in_order():
    # r3 holds 2 computed blocks and 4 reserved: preempting it frees 6, enough for all three
    # decodes (its 2 held blocks alone would not be). Later preemptions take the latest-arrived
    # running request; the queue's front becomes [r1, r2, r3].
    rows = [(0, 1, 5), (0, 1, 5), (0, 1, 5), (0, 6, 1)]
    result = run(make("sarathi", chunk_size=5, watermark=0.0), rows, capacity=9)
    assert digest(result) == [
        (0.0, {0: 1, 1: 1, 2: 1, 3: 2}, (), 5),
        (1.0, {0: 1, 1: 1, 2: 1}, (3,), 6),
        (2.0, {0: 1, 1: 1, 2: 1}, (), 9),     # r3 (6 blocks) waits at the front
        (3.0, {0: 1, 1: 1}, (2,), 8),         # r0 needs a block: r2 is the latest arrival
        (4.0, {0: 1}, (1,), 5),               # r1 needs one: it is the latest now, itself
        (5.0, {1: 5}, (), 5),                 # r1 recomputes 1 + 4 and finishes; budget spent
        (6.0, {2: 4}, (), 4),                 # r2: 1 + 3; r3 needs 6 > 5 free
        (7.0, {2: 1}, (), 5),
        (8.0, {3: 5}, (), 5),
        (9.0, {3: 1}, (), 6),
    ]
    np.testing.assert_array_equal(result.finish_time, [5, 6, 8, 10])
    np.testing.assert_array_equal(result.num_evictions, [0, 1, 1, 1])
    np.testing.assert_array_equal(result.num_recomputed_tokens, [0, 4, 3, 2])
    np.testing.assert_array_equal(result.total_computed_tokens, [5, 9, 8, 8])


def test_max_num_seqs():
    rows = [(0, 2, 2), (0, 2, 2), (0, 2, 2)]
    result = run(make("sarathi", max_num_seqs=2), rows, capacity=100)
    assert digest(result) == [
        (0.0, {0: 2, 1: 2}, (), 4),
        (1.0, {0: 1, 1: 1}, (), 6),
        (2.0, {2: 2}, (), 2),
        (3.0, {2: 1}, (), 3),
    ]


def test_engine_budget_caps_the_chunk_size():
    rows = [(0, 2, 3), (1, 7, 1), (1, 3, 1)]
    capped = run(make("sarathi", watermark=0.0), rows, capacity=100, max_num_batched_tokens=4)
    expected = run(make("sarathi", chunk_size=4, watermark=0.0), rows, capacity=100)
    assert digest(capped) == digest(expected)


def test_parameters_are_validated():
    for bad in ({"chunk_size": 0}, {"max_num_seqs": 0}, {"watermark": 1.0}):
        with pytest.raises(ValueError):
            SarathiPolicy(**bad)


def test_watermark_does_not_starve_a_prompt_that_fits_an_empty_cache():
    # 100 of 100 blocks: only the 1-block watermark is in the way, and nothing is running.
    result = run(make("sarathi"), [(0, 100, 1), (0, 1, 1)], capacity=100)
    assert digest(result) == [(0.0, {0: 100}, (), 100), (1.0, {1: 1}, (), 1)]
