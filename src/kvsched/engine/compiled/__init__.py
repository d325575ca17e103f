"""Compiled runs of the built-in policies with numba, when it is installed.

`Simulator.run` uses them by default (``Simulator(compiled=None)``) for a policy whose type is
exactly one of `vllm`, `sarathi` (any parameters) or `mcsf`, `mc-benchmark`, `amax`, `amin`, `hsf`
(any parameters, but no engine token budget: their chunked-prefill timeline stays in Python) — not
a subclass, which may override anything — under `UnitTime`, `LinearCost` or `CalibratedCost`, when
no iteration records, stability verification or separate batching are asked for. The kernels
repeat the engine's, the policies' and the cost models' operations in the same order, so every
per-request record and run figure equals the reference loop's bit for bit
(tests/engine/test_compiled.py); anything unusual (a run the Python engine would stop with an
error) falls back to the Python engine, which then reports it. numba comes with the ``fast``
extra, or with the vLLM CPU build; the simulation core itself never needs it.

Layout: per policy family (`vllm`, `sarathi`, `future`), a declaration module (numpy only: the
family's `FIELDS`, every dataclass field its kernel implements with the values it covers, and its
packing) beside its kernel module (``<family>_kernel``: numba, the family's ``simulate`` loop);
the kernels share `engine` (arrivals, evictions, the iteration), `common` (request rules,
queues) and `cost` (iteration times), and `layout` holds the state's named fields. A run imports
and loads only its own family's kernel; deciding whether a run can be compiled imports no numba. The first run in a fresh
environment compiles them (tens of seconds, once; numba caches them on disk).
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from importlib.util import find_spec

import numpy as np

from .. import rules
from ..rules import Eviction, KVConvention

#: Iterations per kernel call between progress reports.
CHUNK_ITERATIONS = 200_000

#: Policy id → the module of its family's kernel.
FAMILIES = {"vllm": "vllm", "sarathi": "sarathi", "mcsf": "future", "mc-benchmark": "future",
            "amax": "future", "amin": "future", "hsf": "future"}


def available() -> bool:
    """Whether numba is installed (the kernels are compiled on first use)."""
    return find_spec("numba") is not None


def family(policy_id: str):
    """The declaration of `policy_id`'s family: its fields and packing (numpy only)."""
    return importlib.import_module(f".{FAMILIES[policy_id]}", __name__)


def kernel(policy_id: str):
    """The kernel module of `policy_id`'s family (imports numba, compiling or loading its kernels)."""
    return importlib.import_module(f".{FAMILIES[policy_id]}_kernel", __name__)


def declared_fields(policy_id: str) -> dict:
    """The fields the kernel of `policy_id` implements: name → (covered values or None for any,
    the values the generated equality tests try)."""
    return family(policy_id).fields(policy_id)


def compiled_class(policy_id: str) -> type | None:
    """The exact policy class that has a kernel under this id (None: none has). Imports the
    policies only, not numba (an in-process vLLM must not see numba's LLVM first)."""
    from ...policies.amin import HSF, AMax, AMin
    from ...policies.mcsf import MCSF, MCBenchmark
    from ...policies.sarathi import SarathiPolicy
    from ...policies.vllm import VLLMPolicy
    classes = (VLLMPolicy, SarathiPolicy, MCSF, MCBenchmark, AMax, AMin, HSF)
    return {cls.name: cls for cls in classes}.get(policy_id)


def compiled_classes() -> dict[str, type]:
    """Policy id → the exact class that has a kernel (imports every family)."""
    return {name: compiled_class(name) for name in FAMILIES}


def uncovered_field(policy) -> str | None:
    """Why the kernel of `policy`'s family does not cover it: a field it does not implement, or a
    value outside what it implements (None when it covers every field and value)."""
    declared = declared_fields(policy.name)
    for f in dataclasses.fields(type(policy)):
        if f.name not in declared:
            return f"policy {policy.name!r}: its kernel does not implement the field {f.name!r}"
        allowed, _ = declared[f.name]
        value = getattr(policy, f.name)
        if allowed is not None and value not in allowed:
            return (f"policy {policy.name!r}: its kernel implements {f.name} in {list(allowed)}, "
                    f"not {value!r}")
    return None


def unsupported(sim, policy, workload=None) -> str | None:
    """Why `sim` cannot run `policy` (on `workload`) compiled, or None if it can."""
    from ...cost.calibrated import CalibratedCost
    from ...cost.models import LinearCost, UnitTime
    if not available():
        return "numba is not installed (pip install 'kvsched[fast]')"
    # The engine settings and the policy's type first: they need no numba import (the family
    # modules import it; an in-process vLLM engine must not see numba's LLVM loaded first).
    name = getattr(policy, "name", None)
    if not isinstance(name, str) or compiled_class(name) is not type(policy):
        return (f"policy {name or type(policy).__name__!r} has no compiled kernel "
                "(vllm, sarathi, mcsf, mc-benchmark, amax, amin and hsf do)")
    if not sim.fast or sim.record_iterations or sim.verify_stable or sim.separate_batching:
        return "the run asks for the reference loop, iteration records, verification or separate batching"
    if sim.prefix_caching:
        return "prefix caching runs in the Python engine (the kernels have no prefix cache)"
    if workload is not None and workload.is_closed_loop:
        return "closed-loop follow-up turns (Workload.parent) run in the Python engine"
    if sim.eviction is not Eviction.RECOMPUTE:
        return f"the kernels implement eviction by recompute only, not {sim.eviction.value!r}"
    if type(sim.cost) not in (UnitTime, LinearCost, CalibratedCost):
        return f"cost model {type(sim.cost).__name__} has no compiled form"
    if FAMILIES[name] == "future" and sim.max_num_batched_tokens is not None:
        return f"policy {name!r} runs compiled only without an engine token budget"
    reason = uncovered_field(policy)
    if reason is not None:
        return reason
    if FAMILIES[name] == "future" and workload is not None and family(name).estimates(policy, workload) is None:
        return f"the workload lacks the predictions policy {name!r} needs"
    return None


def run(sim, workload, policy, progress=None):
    """The `RunResult` of `sim.run(workload, policy)`, or None when the Python engine must run it
    (the run stalls or a decision is refused: the engine then raises the error itself)."""
    from . import cost as cost_kernels
    from .layout import DONE, ENGINE, INVALID, REJECTED, SETTINGS, STALLED, requests
    from ..result import RunResult, num_token_gaps
    started = time.perf_counter()
    declaration, kernels = family(policy.name), kernel(policy.name)
    n, bs = len(workload), sim.block_size
    st = np.zeros(1, dtype=SETTINGS)
    st["cap_blocks"] = cap_blocks = sim.kv_capacity_tokens // bs
    st["block_size"], st["emitted"] = bs, sim.kv_convention is KVConvention.EMITTED
    st["engine_budget"] = -1 if sim.max_num_batched_tokens is None else int(sim.max_num_batched_tokens)
    st["record_gaps"] = sim.record_token_gaps
    rq = requests(workload, sim.record_token_gaps)
    if FAMILIES[policy.name] == "future":
        rq["estimate"] = declaration.estimates(policy, workload)
    engine = np.zeros(1, dtype=ENGINE)
    ids = lambda: np.zeros(n + 1, dtype=np.int64)     # noqa: E731  (running, queues, entries)
    running, front, queue, pq, ent, peaks = ids(), ids(), ids(), ids(), ids(), ids()
    alive = np.zeros(n + 1, dtype=np.bool_)
    tokens, evicted = np.zeros((n + 1, 2), dtype=np.int64), ids()
    gaps = np.full(num_token_gaps(workload.true_output_tokens) if sim.record_token_gaps else 0, np.nan)
    arguments = (rq, engine, st, declaration.pack(policy, cap_blocks), cost_kernels.pack(sim.cost), running, front,
                 queue, alive, pq, ent, peaks, tokens, evicted, gaps, CHUNK_ITERATIONS)
    while True:
        code = kernels.simulate(*arguments)
        if code in (STALLED, INVALID):
            return None
        if progress is not None:
            progress(int(engine["done"][0]), n)
        if code == DONE:
            break
    rejected = rq["status"] == REJECTED
    return RunResult(
        policy=policy.name, workload=workload, kv_capacity_tokens=cap_blocks * bs,
        first_scheduled_time=rq["scheduled"].copy(), first_token_time=rq["first_token"].copy(),
        finish_time=rq["finish"].copy(), num_evictions=rq["evictions"].copy(),
        num_recomputed_tokens=rq["recomputed"].copy(), total_computed_tokens=rq["total"].copy(),
        rejected=rejected,
        reject_reasons={int(r): rules.rejection_reason(int(rq["prompt"][r]), int(rq["true_output"][r]),
                                                       sim.kv_convention, cap_blocks, bs)
                        for r in np.flatnonzero(rejected)},
        num_iterations=int(engine["iteration"][0]), busy_time=float(engine["busy"][0]),
        kv_peak_tokens=int(engine["peak"][0]), kv_token_seconds=float(engine["token_seconds"][0]),
        wall_time=time.perf_counter() - started, token_gaps=gaps if sim.record_token_gaps else None)

