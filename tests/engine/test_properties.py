"""Engine invariants over random workloads and every default-constructible registered policy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kvsched.cost.models import LinearCost, UnitTime
from kvsched.engine import compiled
from kvsched.engine.simulator import Simulator
from kvsched.engine.memory import KVConvention
from kvsched.policies import make
from kvsched.workload.synthetic import Workload

from policy_helpers import conformance_policies, livelocks_under_restart

POLICIES = conformance_policies()
EXAMPLES = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def runs(draw):
    """A tiny workload with (possibly noisy) predictions, engine settings and a policy."""
    n = draw(st.integers(1, 8))
    arrival = draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))
    prompt = np.array(draw(st.lists(st.integers(1, 40), min_size=n, max_size=n)))
    output = np.array(draw(st.lists(st.integers(1, 40), min_size=n, max_size=n)))
    slack = np.array(draw(st.lists(st.integers(0, 10), min_size=n, max_size=n)))
    predicted = np.maximum(1, output + draw(st.sampled_from([0, 1, -1])) * slack)
    workload = Workload.build(np.array(arrival, float) / draw(st.sampled_from([1, 3])), prompt, output,
                              predicted_output_tokens=predicted.astype(float),
                              predicted_lo=np.minimum(predicted, output),
                              predicted_hi=np.maximum(predicted, output),
                              type_id=(output > 20).astype(int))
    block = draw(st.sampled_from([1, 4, 16]))
    capacity = draw(st.integers(max(block, 16), 160))
    cost = draw(st.sampled_from([UnitTime(), LinearCost(0.01, 1e-3)]))
    convention = draw(st.sampled_from(list(KVConvention)))
    budget = draw(st.sampled_from([None, None, 8, 32]))          # an engine token budget, sometimes
    eviction = draw(st.sampled_from(["recompute", "recompute", "restart"]))
    sim = Simulator(cost, capacity, block_size=block, kv_convention=convention,
                    max_num_batched_tokens=budget, record_iterations=True, eviction=eviction)
    policy = draw(st.sampled_from(POLICIES))
    return workload, sim, policy


def _run(data):
    workload, sim, (policy_id, params) = data
    assume(not (sim.eviction.value == "restart" and livelocks_under_restart(policy_id, params)))
    return workload, sim, sim.run(workload, make(policy_id, **params), seed=0)


@EXAMPLES
@given(runs())
def test_kv_use_never_exceeds_capacity(data):
    _, sim, result = _run(data)
    assert all(it.kv_used_tokens <= result.kv_capacity_tokens for it in result.iterations)
    assert result.kv_peak_tokens <= result.kv_capacity_tokens


@EXAMPLES
@given(runs())
def test_every_request_finishes_or_is_rejected_with_a_reason(data):
    _, _, result = _run(data)
    finished = ~np.isnan(result.finish_time)
    assert np.all(finished ^ result.rejected)
    assert set(result.reject_reasons) == set(np.flatnonzero(result.rejected).tolist())
    assert all(reason for reason in result.reject_reasons.values())


@EXAMPLES
@given(runs())
def test_computed_tokens_are_prompt_plus_output_plus_recomputed(data):
    """The last output token is sampled, never fed back: s + o − 1 useful tokens per request."""
    workload, _, result = _run(data)
    done = ~result.rejected
    expected = (workload.num_prompt_tokens + workload.true_output_tokens - 1
                + result.num_recomputed_tokens)
    assert np.array_equal(result.total_computed_tokens[done], expected[done])
    assert np.all(result.num_recomputed_tokens[result.num_evictions == 0] == 0)


@EXAMPLES
@given(runs())
def test_per_request_times_are_ordered(data):
    workload, _, result = _run(data)
    done = ~result.rejected
    a, s = workload.arrival_time[done], result.first_scheduled_time[done]
    f, c = result.first_token_time[done], result.finish_time[done]
    assert np.all(a <= s) and np.all(s < f) and np.all(f <= c)
    outputs = workload.true_output_tokens[done]
    assert np.all((outputs > 1) | (f == c))


@pytest.mark.parametrize("policy_id, params", POLICIES)
def test_same_seed_same_bytes(policy_id, params):
    workload = Workload.build(np.arange(10) * 0.5, np.arange(10) + 5, 20 - np.arange(10),
                              predicted_output_tokens=np.full(10, 15.0), predicted_lo=np.ones(10, int),
                              predicted_hi=np.full(10, 25), type_id=np.zeros(10, int))
    sim = Simulator(LinearCost(0.01, 1e-3), 60, block_size=4)
    a = sim.run(workload, make(policy_id, **params), seed=3)
    b = sim.run(workload, make(policy_id, **params), seed=3)
    assert a.finish_time.tobytes() == b.finish_time.tobytes()
    assert a.num_evictions.tobytes() == b.num_evictions.tobytes()


RECORDS = ("first_scheduled_time", "first_token_time", "finish_time", "num_evictions",
           "num_recomputed_tokens", "total_computed_tokens", "rejected")


KERNEL_POLICIES = [(name, params) for name, params in POLICIES if name in compiled.FAMILIES]


@pytest.mark.skipif(not compiled.available(), reason="numba is not installed (the `fast` extra)")
@EXAMPLES
@given(runs(), st.sampled_from(KERNEL_POLICIES))
def test_the_compiled_engine_gives_the_python_engines_records(data, policy):
    """A policy with a kernel, on settings the kernels take (recompute; no engine budget for the
    future-memory family); only runs the Python engine would refuse are filtered out."""
    workload, sim, _ = data
    policy_id, params = policy
    python_sim = dataclasses.replace(sim, record_iterations=False, compiled=False, eviction="recompute")
    if compiled.FAMILIES[policy_id] == "future":
        python_sim = dataclasses.replace(python_sim, max_num_batched_tokens=None)
    assume(compiled.unsupported(python_sim, make(policy_id, **params), workload) is None)
    python = python_sim.run(workload, make(policy_id, **params), seed=0)
    kernel = dataclasses.replace(python_sim, compiled=True).run(workload, make(policy_id, **params), seed=0)
    for name in RECORDS:
        np.testing.assert_array_equal(getattr(kernel, name), getattr(python, name), err_msg=name)
    assert (kernel.num_iterations, kernel.busy_time, kernel.kv_peak_tokens, kernel.kv_token_seconds) == (
        python.num_iterations, python.busy_time, python.kv_peak_tokens, python.kv_token_seconds)


# ---------------------------------------------------------------- separate batching

def _mixes_prefill_and_decode(workload, result, eviction) -> list[int]:
    """Iterations (by index) whose steps mix prefill and decode work, classified from the
    iteration records by the plain rules alone."""
    from kvsched.engine import rules
    prompt = workload.num_prompt_tokens
    computed = np.zeros(len(workload), np.int64)
    outputs = np.zeros(len(workload), np.int64)
    mixed = []
    for k, it in enumerate(result.iterations):
        for r in it.evicted:
            computed[r] = 0
            outputs[r] = rules.outputs_after_eviction(int(outputs[r]), eviction)
        kinds = set()
        for r, n in it.num_tokens.items():
            kinds.add(rules.is_decode_step(int(prompt[r]), int(outputs[r]), int(computed[r]), n))
            step = rules.advance(int(prompt[r]), int(outputs[r]), int(computed[r]), int(computed[r]), n)
            computed[r], outputs[r] = step.computed, step.outputs
        if len(kinds) > 1:
            mixed.append(k)
    return mixed


@EXAMPLES
@given(runs(), st.integers(1, 6))
def test_separate_batching_never_mixes_and_keeps_every_invariant(data, threshold):
    """`separate-threshold` under ``separate_batching``: no iteration mixes prefill and decode
    work, KV stays within capacity, every request finishes or is rejected, and the fast path
    gives the reference loop's records."""
    workload, sim, _ = data
    sim = dataclasses.replace(sim, separate_batching=True, max_num_batched_tokens=None)
    result = sim.run(workload, make("separate-threshold", threshold=threshold), seed=0)
    assert _mixes_prefill_and_decode(workload, result, sim.eviction) == []
    assert max((it.kv_used_tokens for it in result.iterations), default=0) <= result.kv_capacity_tokens
    assert np.all(~np.isnan(result.finish_time) ^ result.rejected)
    reference = dataclasses.replace(sim, fast=False).run(workload, make("separate-threshold", threshold=threshold))
    for name in RECORDS:
        np.testing.assert_array_equal(getattr(result, name), getattr(reference, name), err_msg=name)


@EXAMPLES
@given(runs())
def test_separate_batching_refuses_every_mixed_decision(data):
    """Any policy under ``separate_batching``: the run completes without a mixed iteration, or
    the engine refuses the first decision that mixes (never accepts one silently)."""
    from kvsched.errors import InfeasibleDecisionError
    workload, sim, (policy_id, params) = data
    assume(not (sim.eviction.value == "restart" and livelocks_under_restart(policy_id, params)))
    sim = dataclasses.replace(sim, separate_batching=True)
    try:
        result = sim.run(workload, make(policy_id, **params), seed=0)
    except InfeasibleDecisionError as exc:
        assert "separate batching" in str(exc)
        return
    assert _mixes_prefill_and_decode(workload, result, sim.eviction) == []
