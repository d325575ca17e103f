"""SVF and 1-bit SVF (Kong, Qi, Ye, Zhou, arXiv 2606.22327): the volume and hand-worked orders.

The papers' model: UnitTime rounds, EMITTED convention (s + j while emitting token j), block 1.
A = (s 10, o 3): volume 3·10 + 3·4/2 = 36, peak 13. B = (s 1, o 5): volume 5 + 15 = 20, peak 6.
Shortest-first (MC-SF) takes A first, SVF takes B first.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_helpers import finish, instances, paper_sim, run, workload

from kvsched.errors import ConfigError
from kvsched.policies import make
from kvsched.policies.svf import kv_volume

ROWS = [(10, 3), (1, 5)]


def _exact(rows):
    return workload(rows, predicted_output_tokens=[o for _, o in rows])


@given(s=st.integers(0, 50), o=st.integers(0, 50))
def test_exact_volume_is_the_area_under_the_s_plus_j_profile(s, o):
    assert kv_volume(s, o) == sum(s + j for j in range(1, o + 1))
    assert kv_volume(s, o, "rectangle") == o * (s + o) >= kv_volume(s, o)


def test_hand_worked_volumes():
    assert kv_volume(10, 3) == 36 and kv_volume(1, 5) == 20
    assert kv_volume(10, 3, "rectangle") == 39


def test_svf_starts_the_smaller_volume_first():
    # M = 13: A and B do not fit together (at A's last round 13 + 4 > 13).
    result, _ = run(paper_sim(13), _exact(ROWS), make("svf"))
    assert finish(result) == [8, 5]       # B in rounds 0-4, A in rounds 5-7
    result, _ = run(paper_sim(13), _exact(ROWS), make("mcsf"))
    assert finish(result) == [3, 8]       # shortest output first: A, then B


def test_one_bit_svf_checks_memory_with_the_class_length():
    # threshold 4: A is short (õ = 4, peak 14 at round 3), B is long (õ = 16, peak 17 at round 15).
    # M = 18: at round 0 the check fails (round 3: 14 + 5 = 19 > 18); at round 1 B fits
    # (round 3: 14 + 4 = 18; round 16: 17), so B starts one round later than under exact SVF.
    policy = make("svf-1bit", threshold_tokens=4)
    result, _ = run(paper_sim(18), _exact(ROWS), policy)
    assert finish(result) == [3, 6]
    result, _ = run(paper_sim(18), _exact(ROWS), make("svf"))
    assert finish(result) == [3, 5]


@settings(max_examples=60, deadline=None)
@given(instances(max_requests=8))
def test_svf_with_exact_lengths_never_evicts(inst):
    rows, arrivals, capacity = inst
    w = workload(rows, arrivals, predicted_output_tokens=[o for _, o in rows])
    result, memory = run(paper_sim(capacity), w, make("svf"))
    assert result.num_evictions.sum() == 0 and max(memory) <= capacity


def test_bad_parameters():
    with pytest.raises(ConfigError, match="volume"):
        make("svf", volume="cube")
    with pytest.raises(ConfigError, match="threshold_tokens"):
        make("svf-1bit", threshold_tokens=0)
