"""Fidelity against Vidur: kvsched's vllm and sarathi with the 70B preset on Vidur's 1k ShareGPT run.

The bounds are the ones reached (bench/vidur_fidelity.py prints the full table); a regression in the
cost model or the policies makes them fail. The target (issue "Calibration", item 4) is 10 % on the
means: ``vllm`` meets it with its V0 / Vidur options (Vidur's vLLM is the V0 prefill-first design);
``vllm-v1``, the V1 defaults, is kept as a guard on the default behaviour and misses it on TTFT
(+35 %). Remaining differences are explained in bench/vidur_fidelity.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = REPO_ROOT.parent / "shared" / "data" / "vidur" / "runs" / "sharegpt_llama2-70b_tp2_a100_qps0.5_n1000"
pytestmark = pytest.mark.skipif(not RUN_DIR.is_dir(), reason="../shared/data/vidur/runs absent")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("vidur_fidelity", REPO_ROOT / "bench" / "vidur_fidelity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("vidur_fidelity", module)   # its dataclasses look their module up
    spec.loader.exec_module(module)
    module.check_config(RUN_DIR)
    return module


@pytest.fixture(scope="module")
def workload(bench):
    return bench.load_workload(RUN_DIR)


def test_workload_is_vidurs_request_stream(bench, workload):
    assert len(workload) == 1000
    assert (workload.num_prompt_tokens + workload.true_output_tokens).max() <= 4096


# (metric, stat) -> bound on |ours / vidur − 1|; the means are within the 10 % target
SARATHI_BOUNDS = {("e2e", "mean"): 0.03, ("e2e", "p50"): 0.03, ("e2e", "p99"): 0.03,
                  ("ttft", "mean"): 0.04, ("ttft", "p50"): 0.04, ("ttft", "p99"): 0.04}
VLLM_BOUNDS = {("e2e", "mean"): 0.04, ("e2e", "p50"): 0.04, ("e2e", "p99"): 0.04,
               ("ttft", "mean"): 0.11, ("ttft", "p50"): 0.40, ("ttft", "p99"): 0.10}   # monotone refit: −10.4 %
VLLM_V1_BOUNDS = {("e2e", "mean"): 0.05, ("e2e", "p50"): 0.07, ("e2e", "p99"): 0.08,
                  ("ttft", "mean"): 0.40, ("ttft", "p50"): 0.15, ("ttft", "p99"): 0.60}


@pytest.mark.parametrize("scheduler, bounds", [("sarathi", SARATHI_BOUNDS), ("vllm", VLLM_BOUNDS),
                                               ("vllm-v1", VLLM_V1_BOUNDS)])
def test_within_reached_bounds_of_vidur(bench, workload, scheduler, bounds):
    comparison = bench.compare(scheduler, RUN_DIR, workload=workload)
    for (metric, stat), bound in bounds.items():
        error = comparison.relative_error(metric, stat)
        assert abs(error) <= bound, f"{scheduler} {metric} {stat}: {error:+.1%} (bound ±{bound:.0%})"


def test_vidur_rounding_brings_vllm_closer_and_keeps_sarathi(bench, workload):
    # Measured 2026-12-03: vllm e2e mean −2.8 % → −1.0 %, TTFT mean −10.4 % → −5.3 %; sarathi +0.9 %, 0.0 %.
    plain = bench.compare("vllm", RUN_DIR, workload=workload)
    rounded = bench.compare("vllm", RUN_DIR, workload=workload, vidur_rounding=True)
    for metric in ("e2e", "ttft"):
        assert abs(rounded.relative_error(metric, "mean")) < abs(plain.relative_error(metric, "mean"))
    assert abs(rounded.relative_error("e2e", "mean")) <= 0.02 and abs(rounded.relative_error("ttft", "mean")) <= 0.07
    sarathi = bench.compare("sarathi", RUN_DIR, workload=workload, vidur_rounding=True)
    assert abs(sarathi.relative_error("e2e", "mean")) <= 0.02 and abs(sarathi.relative_error("ttft", "mean")) <= 0.02


def test_the_stream_mode_prints_ours_on_vidurs_own_stream(bench, capsys):
    assert bench.main(["--num-requests", "200", "--scheduler", "sarathi", "--vidur-rounding"]) == 0
    out = capsys.readouterr().out
    assert "200-request ShareGPT stream" in out and "rounding on" in out and out.count("e2e mean") == 1


# --- kvsched's vllm (V0 options) against Vidur's VLLMReplicaScheduler re-expressed rule by rule
# (bench/vidur_vllm_reference.py), on the same cost model: every iteration must be the same.

from hypothesis import given, settings, strategies as st

from kvsched.cost.models import LinearCost
from kvsched.workload.synthetic import Workload

V0 = dict(enable_chunked_prefill=False, prefill_first=True, padded_prefill_budget=True,
          preempt_victim="last_arrived", decode_needs_free_block=True)


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location("vidur_vllm_reference", REPO_ROOT / "bench" / "vidur_vllm_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("vidur_vllm_reference", module)
    spec.loader.exec_module(module)
    return module


def _both(reference, workload, cost, block_size, num_blocks, budget, cap, watermark):
    scheduler = reference.VidurVLLM(num_blocks=num_blocks, block_size=block_size, max_tokens_in_batch=budget,
                                    batch_size_cap=cap, watermark_fraction=watermark)
    requests, log = reference.run_reference(workload, cost, scheduler)
    ours = reference.run_kvsched(workload, cost, num_blocks * block_size, block_size, watermark=watermark,
                                 max_num_batched_tokens=budget, max_num_seqs=cap, **V0)
    return requests, log, ours


def test_reference_stream_is_vidurs_workload_csv(reference, workload):
    ours = reference.vidur_sharegpt_workload(1000)
    assert (ours.arrival_time == workload.arrival_time).all()
    assert (ours.num_prompt_tokens == workload.num_prompt_tokens).all()
    assert (ours.true_output_tokens == workload.true_output_tokens).all()


def test_vllm_v0_equals_vidur_rules_on_the_1k_run(reference, workload):
    from kvsched.cost.presets import get_preset
    requests, log, ours = _both(reference, workload, get_preset(reference.PRESET).cost, 16, 3328, 4096, 128, 0.01)
    assert reference.first_difference(log, ours.iterations) is None
    assert sum(r.restarts for r in requests) == int(ours.num_evictions.sum()) > 0   # preemption is exercised


@settings(max_examples=60, deadline=None)
@given(data=st.data(), block_size=st.sampled_from([1, 4, 16]), num_blocks=st.integers(6, 24),
       cap=st.integers(1, 6), watermark=st.sampled_from([0.0, 0.1]))
def test_vllm_v0_equals_vidur_rules_on_small_memory_bound_runs(reference, data, block_size, num_blocks, cap,
                                                              watermark):
    # Every request fits alone with a block to spare (Vidur's decode asks for a free block; a request
    # that cannot have one livelocks in both) and passes the padded budget when restarted.
    room = (num_blocks - int(watermark * num_blocks) - 1) * block_size
    budget = data.draw(st.integers(room, 2 * room))
    n = data.draw(st.integers(1, 10))
    prompts = data.draw(st.lists(st.integers(1, room - 1), min_size=n, max_size=n))
    outputs = [data.draw(st.integers(1, room - p)) for p in prompts]
    gaps = data.draw(st.lists(st.floats(0.001, 3.0), min_size=n, max_size=n))
    workload = Workload.build(list(np.cumsum(gaps)), np.array(prompts), np.array(outputs))
    requests, log, ours = _both(reference, workload, LinearCost(0.1, 0.01), block_size, num_blocks, budget, cap,
                                watermark)
    assert reference.first_difference(log, ours.iterations) is None
    assert np.allclose([r.finished for r in requests], ours.finish_time)
    assert np.allclose([r.first_token for r in requests], ours.first_token_time)
