"""The compiled runs (`kvsched.engine.compiled`, numba) against the reference loop: vllm, sarathi and the
future-memory policies (mcsf, mc-benchmark, amax, amin, hsf).

Equality is exact, as for the Python fast path (tests/test_fastpath.py, whose scenarios these
reuse): every per-request record and run figure, compared with ``==``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsched import LinearCost, Simulator, UnitTime
from kvsched.engine import compiled
from kvsched.errors import ConfigError, StalledError
from kvsched.engine.memory import KVConvention
from kvsched.policies import make
from kvsched.workload.synthetic import LogNormal, Poisson, Workload

from test_fastforward import CASES, VARIANTS, _outcome, _workload, assert_same_outcome

if not compiled.available():
    if os.environ.get("KVSCHED_REQUIRE_NUMBA") == "1":
        raise RuntimeError("KVSCHED_REQUIRE_NUMBA=1 but numba is not installed")
    pytest.skip("numba is not installed (the `fast` extra)", allow_module_level=True)

POLICIES = {"vllm": ("vllm", {}), "sarathi": ("sarathi", {}), **VARIANTS,
            "sarathi-budget-watermark": ("sarathi", dict(chunk_size=40, max_num_seqs=9, watermark=0.05)),
            "vllm-last-arrived-chunk-only": ("vllm", dict(preempt_victim="last_arrived",
                                                          full_prompt_must_fit=False, max_num_batched_tokens=24)),
            "mcsf": ("mcsf", {}),
            "mcsf-skip-largest-protected": ("mcsf", dict(rule="skip", evict_victim="largest", protection=0.1)),
            "mc-benchmark-newest": ("mc-benchmark", dict(evict_victim="newest")),
            "amax": ("amax", {}),
            "amin": ("amin", {}),
            "amin-double-most-progress": ("amin", dict(refine_rule="double", evict_victim="most-progress")),
            "amin-multiply-skip": ("amin", dict(refine_rule="multiply", refine_factor=0.3, rule="skip")),
            "hsf": ("hsf", {})}
FUTURE = {"mcsf", "mc-benchmark", "amax", "amin", "hsf"}


def _compiled_result(settings_, workload, name, params):
    result = compiled.run(Simulator(**settings_), workload, make(name, **params))
    assert result is not None, "the kernel handed the run back to the Python engine"
    return result


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("variant", sorted(POLICIES))
def test_compiled_equals_reference(variant, case):
    name, params = POLICIES[variant]
    build, settings_ = CASES[case]
    workload = build()
    reference = _outcome(Simulator(**settings_, fast=False), workload, name, params)
    if settings_.get("eviction") == "restart":             # the kernels evict by recompute only
        assert "recompute" in compiled.unsupported(Simulator(**settings_), make(name, **params), workload)
        assert_same_outcome(reference, _outcome(Simulator(**settings_), workload, name, params))
        return
    if name in FUTURE and settings_.get("max_num_batched_tokens") is not None:   # Python engine's
        assert "token budget" in compiled.unsupported(Simulator(**settings_), make(name, **params), workload)
        assert_same_outcome(reference, _outcome(Simulator(**settings_), workload, name, params))
        return
    if reference[0] == "raised":         # the kernel hands such runs back; the engine raises
        assert compiled.run(Simulator(**settings_), workload, make(name, **params)) is None
        assert _outcome(Simulator(**settings_), workload, name, params) == reference
        return
    _compiled_result(settings_, workload, name, params)
    assert_same_outcome(reference, _outcome(Simulator(**settings_, compiled=True), workload, name, params))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), variant=st.sampled_from(sorted(POLICIES)),
       block_size=st.sampled_from([1, 2, 16]), emitted=st.booleans(), unit=st.booleans(),
       capacity=st.integers(100, 1500), rate=st.floats(0.05, 20.0),
       engine_budget=st.sampled_from([None, 600]))
def test_compiled_equals_reference_property(seed, variant, block_size, emitted, unit, capacity, rate,
                                            engine_budget):
    name, params = POLICIES[variant]
    workload = _workload(Poisson(rate), 30, seed, output=LogNormal(mean=30, sigma=1.0, low=1, high=90))
    settings_ = dict(cost=UnitTime() if unit else LinearCost(0.013, 3e-4), kv_capacity_tokens=capacity,
                     block_size=block_size, max_num_batched_tokens=engine_budget,
                     kv_convention=KVConvention.EMITTED if emitted else KVConvention.COMPUTED)
    assert_same_outcome(_outcome(Simulator(**settings_, fast=False), workload, name, params),
                        _outcome(Simulator(**settings_), workload, name, params))


def test_evictions_and_rejections_are_exercised_and_equal():
    """A tight cache: preemptions (front queue, recomputation) and a request too large to fit."""
    build, settings_ = CASES["tight-poisson-unit-b1-emitted"]
    workload = build()
    big = Workload.build([0.5], [400], [200])
    workload = Workload.build(np.concatenate([workload.arrival_time, big.arrival_time]),
                              np.concatenate([workload.num_prompt_tokens, big.num_prompt_tokens]),
                              np.concatenate([workload.true_output_tokens, big.true_output_tokens]))
    for name in ("vllm", "sarathi"):
        result = _compiled_result(settings_, workload, name, {})
        reference = Simulator(**settings_, fast=False).run(workload, make(name))
        assert result.num_evictions.sum() > 0 and result.num_recomputed_tokens.sum() > 0
        assert result.rejected.sum() == 1 and result.reject_reasons == reference.reject_reasons
        for field in ("finish_time", "first_token_time", "num_evictions", "num_recomputed_tokens"):
            np.testing.assert_array_equal(getattr(result, field), getattr(reference, field), strict=True)


def test_calibrated_preset_equals_reference():
    from kvsched.cost.presets import get_preset
    preset = get_preset("llama2-70b-a100-tp2")
    workload = _workload(Poisson(6.0), 150, 21)
    settings_ = dict(cost=preset.cost, kv_capacity_tokens=3000, block_size=preset.block_size)
    for name in ("vllm", "sarathi"):
        _compiled_result(settings_, workload, name, {})
        assert_same_outcome(_outcome(Simulator(**settings_, fast=False), workload, name),
                            _outcome(Simulator(**settings_), workload, name))


def test_progress_is_reported_between_chunks(monkeypatch):
    monkeypatch.setattr(compiled, "CHUNK_ITERATIONS", 50)
    build, settings_ = CASES["loose-poisson-linear-b16-computed"]
    workload = build()
    calls = []
    result = Simulator(**settings_).run(workload, make("vllm"), progress=lambda done, n: calls.append((done, n)))
    assert len(calls) >= result.num_iterations // 50
    assert calls[-1] == (len(workload), len(workload))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_stalled_run_falls_back_and_raises_like_the_engine():
    """A prompt over the budget with chunked prefill off never runs: the engine's StalledError."""
    workload = Workload.build([0.0], [100], [5])
    policy = make("vllm", enable_chunked_prefill=False, max_num_batched_tokens=50)
    assert compiled.run(Simulator(UnitTime(), 1000), workload, policy) is None
    with pytest.raises(StalledError):
        Simulator(UnitTime(), 1000, compiled=True).run(workload, policy)


def test_long_queue_skip_rule_equals_reference():
    """Hundreds waiting at once (the queue's insertion, admission and compaction paths)."""
    from kvsched.workload.predictors import apply_predictor
    from kvsched.workload.synthetic import AllAtZero, Fixed, Uniform, synthesize
    workload = apply_predictor(synthesize(400, AllAtZero(), Uniform(5, 30), Fixed(8), np.random.default_rng(3)),
                               "exact")
    settings_ = dict(cost=UnitTime(), kv_capacity_tokens=256, block_size=16)
    for name, params in (("mcsf", dict(rule="skip")), ("amin", {}), ("mc-benchmark", {}), ("vllm", {})):
        _compiled_result(settings_, workload, name, params)
        assert_same_outcome(_outcome(Simulator(**settings_, fast=False), workload, name, params),
                            _outcome(Simulator(**settings_), workload, name, params))


def test_compiled_true_refuses_what_it_cannot_run():
    workload = Workload.build([0.0], [10], [5])
    with pytest.raises(ConfigError, match="lacks the predictions"):
        Simulator(UnitTime(), 1000, compiled=True).run(workload, make("mcsf"))
    with pytest.raises(ConfigError, match="no compiled kernel"):
        Simulator(UnitTime(), 1000, compiled=True).run(workload, make("alpha-protection"))
    with pytest.raises(ConfigError, match="iteration records"):
        Simulator(UnitTime(), 1000, compiled=True, record_iterations=True).run(workload, make("vllm"))
    # a subclass may override anything: it runs in the Python engine
    assert compiled.unsupported(Simulator(UnitTime(), 1000), type("Mine", (type(make("vllm")),), {})())


# ---------------------------------------------------------------- kernels coupled to the dataclass fields

def _field_variants():
    """(policy id, field, value) for every field of every compiled policy, from the kernel's own
    declaration (`compiled.declared_fields`): each declared test value, the others at their defaults."""
    import dataclasses
    for name, cls in sorted(compiled.compiled_classes().items()):
        for f in dataclasses.fields(cls):
            _, values = compiled.declared_fields(name).get(f.name, (None, None))
            if f.name == "evict_victim":
                from kvsched.policies._future_memory import VICTIM_ORDERS
                values = VICTIM_ORDERS
            for value in values or (f.default,):
                yield name, f.name, value, REQUIRES.get((name, f.name, value), {})


#: Fields whose other values need a companion setting (the policy refuses the combination).
REQUIRES = {("vllm", "padded_prefill_budget", True): {"enable_chunked_prefill": False}}


def test_every_field_of_every_compiled_policy_is_declared_by_its_kernel():
    """Adding an option to a compiled policy's Python class alone fails here (and its runs go to
    Python, next test): the kernel must declare it, with its packing, to run compiled."""
    import dataclasses
    for name, cls in compiled.compiled_classes().items():
        fields = {f.name for f in dataclasses.fields(cls)}
        declared = set(compiled.declared_fields(name))
        assert fields == declared, (name, fields ^ declared)


def test_a_field_the_kernel_does_not_declare_sends_the_run_to_python(monkeypatch):
    declared = dict(compiled.declared_fields("vllm"))
    del declared["decode_needs_free_block"]
    monkeypatch.setattr(compiled.family("vllm"), "FIELDS", declared)
    sim = Simulator(UnitTime(), 200)
    reason = compiled.unsupported(sim, make("vllm"))
    assert "decode_needs_free_block" in reason
    with pytest.raises(ConfigError, match="decode_needs_free_block"):
        Simulator(UnitTime(), 200, compiled=True).run(_workload(Poisson(3.0), 30, seed=1), make("vllm"))
    result = sim.run(_workload(Poisson(3.0), 30, seed=1), make("vllm"))          # compiled=None: Python
    assert np.isfinite(result.finish_time).all()


def test_a_value_outside_the_kernels_set_sends_the_run_to_python(monkeypatch):
    declared = dict(compiled.declared_fields("vllm"))
    declared["preempt_victim"] = (("last_admitted",), ("last_admitted",))
    monkeypatch.setattr(compiled.family("vllm"), "FIELDS", declared)
    reason = compiled.unsupported(Simulator(UnitTime(), 200), make("vllm", preempt_victim="last_arrived"))
    assert "preempt_victim" in reason and "'last_arrived'" in reason


@pytest.mark.parametrize("case", ["tight-poisson-unit-b1-emitted", "tight-bursts-linear-b16-emitted"])
@pytest.mark.parametrize("name, field, value, companions", list(_field_variants()))
def test_each_declared_field_value_runs_compiled_exactly(name, field, value, companions, case):
    build, settings_ = CASES[case]
    workload = build()
    params = {field: value, **companions}
    reference = _outcome(Simulator(**settings_, compiled=False), workload, name, params)
    if reference[0] == "raised":
        return_value = compiled.run(Simulator(**settings_), workload, make(name, **params))
        assert return_value is None           # the kernel hands the run back; Python raises
        return
    assert compiled.unsupported(Simulator(**settings_), make(name, **params), workload) is None
    assert_same_outcome(reference, _outcome(Simulator(**settings_, compiled=True), workload, name, params))


def test_a_run_the_kernels_cannot_take_never_imports_numba():
    """The vLLM driver runs its simulator twin with iteration records in the engine's process;
    numba's LLVM loaded there first breaks the next in-process vLLM engine (its Triton
    dispatcher), so such runs must not import numba at all."""
    import subprocess
    import sys
    code = ("import sys; from kvsched import Simulator, UnitTime; from kvsched.policies import make; "
            "from kvsched.workload.synthetic import default_workload; "
            "Simulator(UnitTime(), 2000, record_iterations=True).run(default_workload(num_requests=20), make('vllm')); "
            "Simulator(UnitTime(), 2000, eviction='restart').run(default_workload(num_requests=20), make('sarathi')); "
            "print('numba' in sys.modules, 'llvmlite' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
