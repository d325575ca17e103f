"""Sorted-F (Wang, Ye, Zhou, arXiv 2508.06133): the metric F and hand-worked batches.

Hand-worked examples use the papers' model: UnitTime rounds, EMITTED convention (a request
started in round p holds s + (t − p + 1) KV tokens in round t), block size 1, exact predictions.
"""

import pytest
from hypothesis import given, settings
from policy_helpers import finish, instances, paper_sim, run, workload

from kvsched.errors import ConfigError
from kvsched.policies import make
from kvsched.policies.sorted_f import f_metric


def test_f_metric_is_sum_of_outputs_over_size_squared():
    assert f_metric([2, 2]) == 1.0
    assert f_metric([2, 2, 10]) == pytest.approx(14 / 9)
    assert f_metric([7]) == 7.0
    with pytest.raises(ValueError):
        f_metric([])


# A, B = (s 1, o 2), C = (s 1, o 10), M = 20: all three fit together (peak 11 at round 9), so
# MC-SF starts them all at round 0. Sorted-F scans A, B, C (output order): F = 2, 4/4 = 1,
# 14/9 ≈ 1.56, so the batch is {A, B}; C starts when they are done.
ROWS = [(1, 2), (1, 2), (1, 10)]


def _exact(rows):
    return workload(rows, predicted_output_tokens=[o for _, o in rows])


def test_batch_is_the_prefix_with_the_smallest_f():
    result, memory = run(paper_sim(20), _exact(ROWS), make("sorted-f", trigger="drained"))
    assert finish(result) == [2, 2, 12]          # C starts at round 2, emits its 10th token in round 11
    assert memory[:3] == [4, 6, 2]               # rounds 0, 1 hold A and B; round 2 holds C alone


def test_every_iteration_trigger_admits_beside_residents():
    result, _ = run(paper_sim(20), _exact(ROWS), make("sorted-f"))
    assert finish(result) == [2, 2, 11]          # C forms the next batch one round later


def test_mcsf_takes_all_three_at_once():
    result, _ = run(paper_sim(20), _exact(ROWS), make("mcsf"))
    assert finish(result) == [2, 2, 10]


def test_a_request_that_does_not_fit_is_skipped():
    # L = (s 9, o 1) and S1..S3 = (s 1, o 2), M = 12. Output order: L (F 1), S1 (F 3/4); S2 and S3
    # do not fit beside L + S1 in round 0 (10 + 2 + 2 > 12) and are skipped; {L, S1} is the batch.
    # With order="footprint": S1, S2, S3 (peak 9 at round 1), L no longer fits: F = 2, 1, 6/9.
    rows = [(9, 1), (1, 2), (1, 2), (1, 2)]
    result, _ = run(paper_sim(12), _exact(rows), make("sorted-f", trigger="drained"))
    assert finish(result) == [1, 2, 4, 4]        # S2, S3 start at round 2 (after S1 is done)
    result, _ = run(paper_sim(12), _exact(rows), make("sorted-f", order="footprint", trigger="drained"))
    assert finish(result) == [3, 2, 2, 2]


@settings(max_examples=60, deadline=None)
@given(instances(max_requests=8))
def test_exact_predictions_never_evict_and_drained_batches_run_to_completion(inst):
    rows, arrivals, capacity = inst
    w = workload(rows, arrivals, predicted_output_tokens=[o for _, o in rows])
    result, memory = run(paper_sim(capacity), w, make("sorted-f", trigger="drained"))
    assert result.num_evictions.sum() == 0 and max(memory) <= capacity
    resident = set()
    for it in result.iterations:                 # admissions only into an empty batch
        new = set(it.num_tokens) - resident
        assert not new or not resident
        resident = (resident | new) - {r for r in resident | new
                                       if result.finish_time[r] <= it.start_time + it.duration}


def test_bad_parameters_name_the_choice():
    with pytest.raises(ConfigError, match="order"):
        make("sorted-f", order="random")
    with pytest.raises(ConfigError, match="trigger"):
        make("sorted-f", trigger="never")
