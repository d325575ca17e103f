"""`VidurRoundedCost`: Vidur's predictor rounding (tokens up to a multiple of 8, the mean decode context
up to a multiple of 64), worked by hand on a cost whose parts are easy to add up."""

from __future__ import annotations

import numpy as np
import pytest

from kvsched.cost.calibrated import BilinearTable, CalibratedCost, PiecewiseLinear, VidurRoundedCost, vidur_rounded
from kvsched.cost.models import BatchStats
from kvsched.engine.simulator import Simulator
from kvsched.policies import make
from kvsched.workload.synthetic import Workload


def simple_cost() -> CalibratedCost:
    # One layer: linear(T) = T ms, no elementwise, no prefill attention, decode(n, x) = n·x/1000 ms.
    return CalibratedCost(num_layers=1, hidden_size=1, linear=PiecewiseLinear((0.0, 100.0), (0.0, 100.0)),
                          elementwise=PiecewiseLinear((0.0, 100.0), (0.0, 0.0)), prefill_coef=(0.0, 0.0, 0.0, 0.0),
                          decode=BilinearTable((0.0, 10.0), (0.0, 1000.0), ((0.0, 0.0), (0.0, 10.0))))


def decode_batch(n: int, context: int) -> BatchStats:
    return BatchStats(num_prefill_tokens=0, num_prefill_seqs=0, num_decode_seqs=n, prefill_context_tokens=0,
                      prefill_attention_work=0, decode_context_tokens=context)


def test_three_decodes_by_hand():
    # 3 decodes holding 310 context tokens. Plain: linear 3 ms + decode 3 · (310/3) / 1000 = 0.31 ms.
    # Vidur: T = 3 → 8, mean context int(103.3) = 103 → 128: 8 ms + 3 · 128 / 1000 = 0.384 ms.
    plain, rounded = simple_cost(), vidur_rounded(simple_cost())
    assert plain.iteration_time(decode_batch(3, 310)) == pytest.approx(3.31e-3)
    assert rounded.iteration_time(decode_batch(3, 310)) == pytest.approx(8.384e-3)
    assert rounded.decode_iteration_time(3, 310) == rounded.iteration_time(decode_batch(3, 310))
    # exact multiples stay: 16 decodes of mean context 128 → 16 ms + 16 · 128 / 1000 (10-batch knots
    # extrapolate linearly) = 18.048 ms in both
    assert rounded.iteration_time(decode_batch(16, 16 * 128)) == pytest.approx(plain.iteration_time(decode_batch(16, 16 * 128)))
    assert rounded.iteration_time(decode_batch(16, 16 * 128)) == pytest.approx(18.048e-3)


def test_a_prefill_rounds_its_tokens_only():
    # One 5-token prompt (empty cache) and 2 decodes of context 64 each: T = 7 → 8.
    # Plain: 7 ms + 2 · 64 / 1000 = 7.128 ms; Vidur: 8 ms + 0.128 ms = 8.128 ms.
    b = BatchStats(num_prefill_tokens=5, num_prefill_seqs=1, num_decode_seqs=2, prefill_context_tokens=5,
                   prefill_attention_work=25, decode_context_tokens=128)
    assert simple_cost().iteration_time(b) == pytest.approx(7.128e-3)
    assert vidur_rounded(simple_cost()).iteration_time(b) == pytest.approx(8.128e-3)


def test_a_decode_run_is_its_iterations_one_by_one():
    rounded = vidur_rounded(simple_cost())
    run = rounded.decode_run_durations(3, 310, 40)
    assert list(run) == [rounded.iteration_time(decode_batch(3, 310 + 3 * k)) for k in range(40)]
    assert run[0] < run[-1]        # the context crosses 128 → 192 (mean 103 … 142)


def test_the_engine_runs_it_in_python_with_the_same_result_fast_and_reference():
    from kvsched.engine.compiled import unsupported
    rng = np.random.default_rng(3)
    w = Workload.build(np.sort(rng.uniform(0, 2, 30)), rng.integers(5, 60, 30), rng.integers(2, 40, 30))
    rounded = vidur_rounded(simple_cost())
    fast, ref = Simulator(rounded, 400, block_size=16), Simulator(rounded, 400, block_size=16, fast=False)
    for policy in ("vllm", "sarathi"):
        a, b = fast.run(w, make(policy)), ref.run(w, make(policy))
        assert np.array_equal(a.finish_time, b.finish_time)
        assert unsupported(fast, make(policy), w) is not None
    slower = Simulator(simple_cost(), 400, block_size=16).run(w, make("vllm"))
    assert fast.run(w, make("vllm")).finish_time.max() > slower.finish_time.max()


def test_it_keeps_the_calibrated_parameters_and_checks_its_own():
    base = simple_cost()
    rounded = vidur_rounded(base, token_multiple=4)
    assert isinstance(rounded, VidurRoundedCost) and rounded.linear == base.linear and rounded.token_multiple == 4
    with pytest.raises(ValueError):
        vidur_rounded(base, context_granularity=0)
