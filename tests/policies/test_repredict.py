"""`repredict`: any policy with log-t re-predictions of the remaining length."""

import numpy as np
import pytest
from policy_helpers import paper_sim, workload

from kvsched.engine import Simulation
from kvsched.errors import ConfigError
from kvsched.policies import make
from kvsched.workload.predictors import StudentTTable, conditional_quantile


def test_the_inner_policy_sees_predictions_conditioned_on_generated_tokens():
    # One request, median 4, true length 12: after 6 rounds it has generated 6 tokens, and the
    # prediction the inner policy reads is the conditional median given O > 6.
    policy = make("repredict", policy="trail", scale=1.0, nu=1.0)
    w = workload([(2, 12)], predicted_output_tokens=[4.0])
    run = Simulation(paper_sim(40), w, policy)
    run.run(until=6)
    request = run.view().running[0]
    assert request.num_output_tokens == 6
    seen = policy._wrap(request)
    expected = conditional_quantile([4.0], [6], 1.0, StudentTTable(1.0), 0.5)[0]
    assert seen.predicted_output_tokens == expected > 7
    assert request.predicted_output_tokens == 4.0                 # the stored column is untouched


def test_repredicted_srpt_lets_a_fresh_request_pass_one_that_outlived_its_median():
    # M = 14. A = (s 2, o 10) at 0 with median 2; B = (s 9, o 2) at 3 with median 3. At round 3 A
    # has generated 3 > its median: plain TRAIL (age limit 100) predicts A needs max(2, 4) − 3 = 1
    # more token (shorter than B's 3) and keeps it; re-predicted, A's heavy tail makes it longer
    # than B (9 − 3 = 6 > 3), which then preempts A (A would hold 6 after the round, B needs 10).
    w = workload([(2, 10), (9, 2)], arrivals=[0, 3], predicted_output_tokens=[2.0, 3.0])
    plain = paper_sim(14).run(w, make("trail", age_limit=100), seed=0)
    again = paper_sim(14).run(w, make("repredict", policy="trail:age_limit=100", scale=1.0, nu=1.0), seed=0)
    assert plain.num_evictions.tolist() == [0, 0]
    assert again.num_evictions.tolist() == [1, 0]
    assert again.finish_time[1] < plain.finish_time[1]


def test_bad_parameters():
    with pytest.raises(ConfigError, match="clairvoyant"):
        make("repredict", policy="hsf")
    with pytest.raises(ConfigError, match="quantile"):
        make("repredict", quantile=1.0)
    with pytest.raises(ConfigError, match="unknown policy"):
        make("repredict", policy="nope")
    with pytest.raises(ConfigError, match="wrap itself"):
        make("repredict", policy="repredict")


def test_needs_a_median_column():
    w = workload([(2, 3)])
    with pytest.raises(ConfigError, match="logt"):
        paper_sim(20).run(w, make("repredict"), seed=0)


def test_the_wrapped_view_reads_progress_and_the_cache_hit_from_the_view_it_wraps():
    # A served request's progress lives in vLLM's request, not in the kvsched state (whose
    # progress fields are None): the re-predicted view must read it, and the cache hit, through
    # the view it wraps. Here the state says 0 generated and the engine's request says 9.
    from types import SimpleNamespace

    from kvsched.integrations.vllm.view import ServedRequestView
    from kvsched.state import RequestState, Status

    state = RequestState(5, 0.0, 40, 0, predicted_output_tokens=4.0)
    state.status = Status.WAITING
    state.num_computed_tokens = state.num_output_tokens = None
    engine_request = SimpleNamespace(num_computed_tokens=0, num_output_tokens=9, num_tokens=49,
                                     num_preemptions=1, num_prompt_tokens=40)
    served = ServedRequestView(state, engine_request, lookup=lambda rid: (32, 1))
    policy = make("repredict", policy="trail", scale=1.0, nu=1.0)
    policy.reset(seed=0)
    seen = policy._wrap(served)
    assert (seen.num_output_tokens, seen.num_computed_tokens, seen.num_tokens) == (9, 0, 49)
    assert seen.num_evictions == 1 and not seen.is_decode
    assert seen.cache_hit() == (32, 1) and seen.num_cached_tokens == 32
    assert seen.num_uncomputed_tokens == 49 - 32
    expected = conditional_quantile([4.0], [9], 1.0, StudentTTable(1.0), 0.5)[0]
    assert seen.predicted_output_tokens == expected
    with pytest.raises(AttributeError):
        seen.no_such_field
    assert policy._wrap(served) is seen                     # one wrapper per live view
    policy.forget([5])
    assert policy._wrap(served) is not seen
