"""Past-Future (Gong et al., LightLLM, ASPLOS 2025; artifact WuSiYu/lightllm-ae behavior-analysis/).

Hand-worked in the papers' model: UnitTime rounds, EMITTED convention, block 1. A window whose
lengths are all equal makes the first admission step deterministic (every draw is that length).
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from policy_helpers import paper_sim, workload

from kvsched.errors import ConfigError
from kvsched.policies import make
from kvsched.policies.past_future import future_peak_tokens, sample_final_length


def test_future_peak_hand_worked():
    # (current 10, 2 more) and (current 5, 6 more): after 2 rounds 12 + 7 = 19; after 6 rounds 11.
    assert future_peak_tokens([10, 5], [2, 6]) == 19
    assert future_peak_tokens([], []) == 0
    assert future_peak_tokens([4], [0]) == 4


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=8))
def test_future_peak_is_the_maximum_over_future_rounds(requests):
    current, remaining = zip(*requests)
    brute = max(sum(c + t for c, m in requests if m >= t) for t in range(0, max(remaining) + 1))
    assert future_peak_tokens(current, remaining) == brute


class _FixedRandom:
    def __init__(self, u):
        self.u = u

    def random(self):
        return self.u


def test_sampling_interpolates_the_conditional_empirical_distribution():
    # finished [10, 20, 30], generated 15, cap 40: support [15, 20, 30, 40], position 3u.
    history = [10, 20, 30]
    assert sample_final_length(history, 15, 40, _FixedRandom(0.0)) == 15
    assert sample_final_length(history, 15, 40, _FixedRandom(0.5)) == 25
    assert sample_final_length(history, 15, 40, _FixedRandom(0.99)) == 40
    assert sample_final_length(history, 35, 40, _FixedRandom(0.5)) == 38   # support [35, 40]


@pytest.mark.parametrize("capacity, admitted", [(40, 4), (41, 5)])
def test_first_admission_step_stops_below_the_predicted_peak(capacity, admitted):
    # six (s 3, o 5) at 0; every draw is 5 (window of 5s): k admitted → peak 5k + 3k = 8k < M.
    sim = paper_sim(capacity)
    w = workload([(3, 5)] * 6)
    policy = make("past-future", initial_output_tokens=5, reserve=0.0)
    result = sim.run(w, policy, seed=0)
    assert len(result.iterations[0].num_tokens) == admitted


def test_finished_lengths_enter_the_window():
    # window 10 → five 7s; outputs 1, 3, 6 all start at round 0 and finish at 1, 3, 6; the last
    # finishes with the run, after the last decision.
    policy = make("past-future", window_size=10, initial_output_tokens=7)
    paper_sim(100).run(workload([(1, 1), (1, 3), (1, 6)]), policy, seed=0)
    assert list(policy._history) == [7] * 5 + [1, 3]


def test_same_seed_gives_the_same_schedule():
    w = workload([(2, o) for o in (3, 9, 4, 12, 7, 5, 8, 2)], arrivals=[0, 0, 1, 2, 3, 3, 4, 5])
    runs = [paper_sim(40).run(w, make("past-future", initial_output_tokens=6), seed=s).finish_time.tolist()
            for s in (1, 1)]
    assert runs[0] == runs[1]


def test_bad_parameters():
    with pytest.raises(ConfigError, match="window_size"):
        make("past-future", window_size=0)
    with pytest.raises(ConfigError, match="reserve"):
        make("past-future", reserve=1.0)
