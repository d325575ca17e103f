"""Simulator vs the real vLLM V1 engine (CPU build) with prefix caching on in both, step by step.

Prompts carry token identity (`Workload.segments`); the driver turns each segment into the same
token ids in every prompt that names it, and a follow-up turn's previous answer into the tokens
the engine generated for it, so vLLM's block hashes see exactly the sharing the simulator's
cache keys see. Multi-turn workloads are closed loop: a turn is submitted a think time after its
previous turn finished, on the virtual clock, in both. Compared per iteration: batch and tokens,
preemptions, KV blocks held; per request: admission order, evictions, cached tokens (vLLM's hit at
each admission, resumptions included) and the realised arrival times. The same through
`KVSchedScheduler` with the ``vllm`` and ``sarathi`` policies (a subset of the cases).

A later admission of a step hits the blocks an earlier entry of the same step is allocated, in
both (vLLM registers blocks at allocation; `kvsched.engine.prefix_cache`).
"""

from __future__ import annotations

import numpy as np
import pytest

from kvsched.workload.segments import PromptSegments
from kvsched.workload.synthetic import Workload

pytestmark = pytest.mark.engine


def _multiturn(seed: int, conversations: int = 5) -> Workload:
    """Conversations of 1-3 turns; turn k's prompt is turn k-1's prompt and answer plus a new
    message; think times 0-5 s (iterations, under unit time)."""
    rng = np.random.default_rng(seed)
    pieces, output, parent, think, arrival = [], [], [], [], []
    for _ in range(conversations):
        start, previous = float(rng.integers(0, 30)), None
        for _ in range(int(rng.integers(1, 4))):
            i = len(pieces)
            message = (100 + i, int(rng.integers(10, 50)))
            if previous is None:
                pieces.append([message])
            else:
                pieces.append(pieces[previous] + [(-(previous + 1), output[previous]), message])
            output.append(int(rng.integers(4, 24)))
            parent.append(-1 if previous is None else previous)
            think.append(float(rng.integers(0, 6)))
            arrival.append(start)
            previous = i
    prompt = [sum(length for _, length in p) for p in pieces]
    return Workload.build(np.array(arrival), np.array(prompt), np.array(output), parent=np.array(parent),
                          think_time=np.array(think), segments=PromptSegments.from_lists(pieces))


def _system_prompt(seed: int, *, at_zero: bool, n: int = 10) -> Workload:
    """About 70% of the prompts start with one 64-token system prompt (segment 1)."""
    rng = np.random.default_rng(seed)
    pieces = [[(1, 64), (10 + i, int(rng.integers(5, 40)))] if rng.random() < 0.7
              else [(10 + i, int(rng.integers(20, 80)))] for i in range(n)]
    prompt = np.array([sum(length for _, length in p) for p in pieces])
    arrival = np.zeros(n) if at_zero else np.sort(rng.integers(0, 40, n)).astype(float)
    return Workload.build(arrival, prompt, rng.integers(4, 24, n), segments=PromptSegments.from_lists(pieces))


#: name -> (workload, vLLM's num_gpu_blocks (the null block included), token budget, whether
#: memory forces preemptions). With a budget of 64 tokens two requests sharing an uncached prefix
#: are never admitted in one step; with 256 they are, and the second hits the blocks the first is
#: computing in that step.
CASES = {
    "multiturn-0": (_multiturn(0), 12, 64, True), "multiturn-1": (_multiturn(1), 7, 64, True),
    "multiturn-2-roomy": (_multiturn(2), 12, 64, False),
    "multiturn-4-a-turn-rejected": (_multiturn(4), 7, 64, True), "multiturn-4": (_multiturn(4), 12, 64, True),
    "system-prompt": (_system_prompt(1, at_zero=False), 7, 64, True),
    "system-prompt-all-at-zero": (_system_prompt(3, at_zero=True), 7, 64, True),
    "same-step-hits": (_system_prompt(2, at_zero=True), 12, 256, True),
    "same-step-hits-roomy": (_system_prompt(0, at_zero=True), 20, 512, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_vllm_with_prefix_caching_matches_the_simulator_step_by_step(tiny_model, case):
    from kvsched.integrations.vllm import driver
    workload, num_gpu_blocks, budget, preempts = CASES[case]
    settings = driver.EngineSettings(model=tiny_model, num_gpu_blocks=num_gpu_blocks, block_size=32,
                                     max_num_batched_tokens=budget, max_num_seqs=8, prefix_caching=True)
    engine = driver.run_engine(workload, settings, None).result
    sim = driver.simulate_like(workload, settings, None)
    cmp = driver.compare(engine, sim)
    assert cmp.matches, cmp.differences
    assert engine.num_cached_tokens.sum() > 0                 # the cache was used
    assert (engine.num_evictions.sum() > 0) == preempts      # resumed requests hit their own blocks
    np.testing.assert_array_equal(engine.num_cached_tokens, sim.num_cached_tokens)
    np.testing.assert_array_equal(engine.total_computed_tokens, sim.total_computed_tokens)
    if workload.is_closed_loop:
        np.testing.assert_array_equal(engine.realized_arrival_time, sim.realized_arrival_time)
        follow = workload.parent >= 0
        assert np.all(engine.realized_arrival_time[follow] >= engine.finish_time[workload.parent[follow]])


def test_a_prompt_naming_an_unfinished_requests_output_is_refused(tiny_model):
    from kvsched.errors import ConfigError
    from kvsched.integrations.vllm import driver
    segments = PromptSegments.from_lists([[(1, 40)], [(1, 40), (-1, 3)]])
    workload = Workload.build([0.0, 0.0], [40, 43], [5, 5], segments=segments)    # open loop
    settings = driver.EngineSettings(model=tiny_model, num_gpu_blocks=7, prefix_caching=True)
    with pytest.raises(ConfigError, match="request 0's output"):
        driver.run_engine(workload, settings, None)


#: policy spec -> the cases it is run on through `KVSchedScheduler` (an engine run costs seconds:
#: the cases where shared blocks matter most: a shared system prompt all at 0, several
#: admissions of one step hitting the same free cached blocks; multi-turn with preemptions)
_VLLM = "vllm:max_num_batched_tokens=64;max_num_seqs=8;full_prompt_must_fit=true"
#: mcsf takes the engine's budget (the case's); noisy point predictions make it evict, and in
#: "same-step-hits" an admission cut by the budget takes one block another admission of its step
#: is computing (before the adapter took same-step hits, its engine batch diverged at step 1)
ADAPTER_CASES = [
    (_VLLM, "system-prompt-all-at-zero"),
    (_VLLM, "multiturn-4-a-turn-rejected"),
    ("sarathi:chunk_size=64;max_num_seqs=8", "system-prompt"),
    ("sarathi:chunk_size=64;max_num_seqs=8", "multiturn-0"),
    ("mcsf", "system-prompt-all-at-zero"),
    ("mcsf", "same-step-hits"),
]


@pytest.mark.parametrize("spec, case", ADAPTER_CASES,
                         ids=[f"{spec.split(':')[0]}-{case}" for spec, case in ADAPTER_CASES])
def test_the_adapter_with_prefix_caching_matches_the_simulator_step_by_step(tiny_model, spec, case):
    """The same with a kvsched policy scheduling vLLM (`KVSchedScheduler`): the policy sees vLLM's
    hits at the step's boundary, two admissions of a step sharing free cached blocks count them
    once (`kvsched.integrations.vllm.view.BlockHolders`), an admission also takes the blocks
    earlier admissions of its step are computing where its tokens leave room for them, and no
    decision is left undone."""
    from kvsched.integrations.vllm import driver
    from kvsched.workload.predictors import apply_predictor
    workload, num_gpu_blocks, budget, preempts = CASES[case]
    if spec == "mcsf":
        workload = apply_predictor(workload, "point:sigma=0.6", seed=3)
    else:
        budget = 64     # the policy spec sets it
    settings = driver.EngineSettings(model=tiny_model, num_gpu_blocks=num_gpu_blocks, block_size=32,
                                     max_num_batched_tokens=budget, max_num_seqs=8, prefix_caching=True)
    run = driver.run_engine(workload, settings, spec, strict=True)
    engine, sim = run.result, driver.simulate_like(workload, settings, spec)
    cmp = driver.compare(engine, sim)
    assert cmp.matches, cmp.differences
    assert all(not rec.gaps for rec in run.trace)
    assert engine.num_cached_tokens.sum() > 0
    np.testing.assert_array_equal(engine.num_cached_tokens, sim.num_cached_tokens)
    np.testing.assert_array_equal(engine.total_computed_tokens, sim.total_computed_tokens)
    if workload.is_closed_loop:
        np.testing.assert_array_equal(engine.realized_arrival_time, sim.realized_arrival_time)
    if spec == "mcsf":
        assert sim.num_evictions.sum() > 0
