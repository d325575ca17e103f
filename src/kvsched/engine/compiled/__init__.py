"""Compiled runs of the built-in policies with numba, when it is installed.

`Simulator.run` uses them by default (``Simulator(compiled=None)``) for a policy whose type is
exactly one of `vllm`, `sarathi` (any parameters) or `mcsf`, `mc-benchmark`, `amax`, `amin`, `hsf`
(any parameters, but no engine token budget: their chunked-prefill timeline stays in Python) — not
a subclass, which may override anything — under `UnitTime`, `LinearCost` or `CalibratedCost`, when
no iteration records, stability verification or separate batching are asked for. The kernels (`kvsched.engine.compiled.kernels`) repeat the
engine's, the policies' and the cost models' operations in the same order, so every per-request
record and run figure equals the reference loop's bit for bit (tests/engine/test_compiled.py); anything
unusual (a run the Python engine would stop with an error) falls back to the Python engine, which
then reports it. numba comes with the ``fast`` extra, or with the vLLM CPU build; the simulation
core itself never needs it.

The first run in a fresh environment compiles the kernels (tens of seconds, once; numba caches
them on disk).
"""

from __future__ import annotations

import dataclasses
import math
import time
from importlib.util import find_spec

import numpy as np

from ...cost.calibrated import MS, CalibratedCost
from ...cost.models import LinearCost, UnitTime
from ..memory import KVConvention

#: Iterations per kernel call between progress reports.
CHUNK_ITERATIONS = 200_000


def available() -> bool:
    """Whether numba is installed (the kernels are compiled on first use)."""
    return find_spec("numba") is not None


def _future_policies() -> tuple[type, ...]:
    from ...policies.amin import HSF, AMax, AMin
    from ...policies.mcsf import MCSF, MCBenchmark
    return (MCSF, MCBenchmark, AMax, AMin, HSF)


#: The coupling of each compiled policy to its kernel: every dataclass field the kernel implements
#: (`_policy_arguments` packs them), with the values it covers (None: any value of the field's
#: type) and the values the generated equality tests try (tests/engine/test_compiled.py). A policy
#: whose type has a field missing here, or a value outside its set, runs in Python: a new option
#: added to a policy's Python class alone can never be silently ignored by its kernel.
_QUEUE_FIELDS = {"max_num_seqs": (None, (1, 3, 256)), "watermark": (None, (0.0, 0.05))}
_FUTURE_FIELDS = {
    "rule": (("stop", "skip"), ("stop", "skip")),
    "protection": (None, (0.0, 0.2)),
    "evict_victim": (None, None),              # every order in VICTIM_ORDERS (checked by the policy)
    "chunking": (None, ("budget-left", "over-budget")),   # used only under a token budget: Python
}
KERNEL_FIELDS = {
    "vllm": {**_QUEUE_FIELDS, "max_num_batched_tokens": (None, (8, 64, 8192)),
             "full_prompt_must_fit": (None, (True, False)), "continue_on_block": (None, (False, True)),
             "enable_chunked_prefill": (None, (True, False)), "prefill_first": (None, (False, True)),
             "padded_prefill_budget": (None, (False, True)),
             "preempt_victim": (("last_admitted", "last_arrived"), ("last_admitted", "last_arrived")),
             "decode_needs_free_block": (None, (False, True))},
    "sarathi": {**_QUEUE_FIELDS, "chunk_size": (None, (16, 512))},
    "mcsf": _FUTURE_FIELDS, "mc-benchmark": _FUTURE_FIELDS, "amax": _FUTURE_FIELDS, "hsf": _FUTURE_FIELDS,
    "amin": {**_FUTURE_FIELDS, "refine_rule": (("generated+1", "double", "multiply"),
                                               ("generated+1", "double", "multiply")),
             "refine_factor": (None, (1.0, 1.5))},
}


def compiled_classes() -> dict[str, type]:
    """Policy id → the exact class that has a kernel."""
    from ...policies.sarathi import SarathiPolicy
    from ...policies.vllm import VLLMPolicy
    return {cls.name: cls for cls in (VLLMPolicy, SarathiPolicy, *_future_policies())}


def uncovered_field(policy) -> str | None:
    """Why the kernel of `policy`'s family does not cover it: a field it does not implement, or a
    value outside what it implements (None when it covers every field and value)."""
    declared = KERNEL_FIELDS[policy.name]
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
    if not available():
        return "numba is not installed (pip install 'kvsched[fast]')"
    if compiled_classes().get(getattr(policy, "name", None)) is not type(policy):
        return (f"policy {getattr(policy, 'name', type(policy).__name__)!r} has no compiled kernel "
                "(vllm, sarathi, mcsf, mc-benchmark, amax, amin and hsf do)")
    reason = uncovered_field(policy)
    if reason is not None:
        return reason
    if type(policy) in _future_policies():
        if sim.max_num_batched_tokens is not None:
            return f"policy {policy.name!r} runs compiled only without an engine token budget"
        if workload is not None and _estimates(policy, workload) is None:
            return f"the workload lacks the predictions policy {policy.name!r} needs"
    if type(sim.cost) not in (UnitTime, LinearCost, CalibratedCost):
        return f"cost model {type(sim.cost).__name__} has no compiled form"
    if not sim.fast or sim.record_iterations or sim.verify_stable or sim.separate_batching:
        return "the run asks for the reference loop, iteration records, verification or separate batching"
    return None


def run(sim, workload, policy, progress=None):
    """The `RunResult` of `sim.run(workload, policy)`, or None when the Python engine must run it
    (the run stalls or a decision is refused: the engine then raises the error itself)."""
    from . import kernels as K
    from ..simulator import RunResult
    started = time.perf_counter()
    n = len(workload)
    bs = sim.block_size
    cap_blocks = sim.kv_capacity_tokens // bs
    emitted = int(sim.kv_convention is KVConvention.EMITTED)
    engine_budget = -1 if sim.max_num_batched_tokens is None else int(sim.max_num_batched_tokens)
    arrival = np.ascontiguousarray(workload.arrival_time, dtype=np.float64)
    prompt = np.ascontiguousarray(workload.num_prompt_tokens, dtype=np.int64)
    output = np.ascontiguousarray(workload.true_output_tokens, dtype=np.int64)
    kind, c, tables, dec = _cost_arguments(sim.cost)
    p, pf = _policy_arguments(policy, cap_blocks)
    ints = np.zeros((n, K.NUM_R), dtype=np.int64)
    if p[K.P_KIND] == K.FUTURE:
        ints[:, K.R_EST] = _estimates(policy, workload)
    times = np.full((n, 3), np.nan)
    running = np.zeros(n + 1, dtype=np.int64)
    front = np.zeros(n + 1, dtype=np.int64)
    queue = np.zeros(n + 1, dtype=np.int64)
    alive = np.zeros(n + 1, dtype=np.bool_)
    pq = np.zeros(n + 1, dtype=np.int64)
    entries = np.zeros(n + 1, dtype=np.int64)
    peaks = np.zeros(n + 1, dtype=np.int64)
    scal_i = np.zeros(K.NUM_S, dtype=np.int64)
    scal_f = np.zeros(3, dtype=np.float64)
    while True:
        code = K.simulate(arrival, prompt, output, p, pf, cap_blocks, bs, emitted, engine_budget, kind, c,
                          tables, dec, ints, times, running, front, queue, alive, pq, entries, peaks, scal_i,
                          scal_f, CHUNK_ITERATIONS)
        if code in (K.STALLED, K.INVALID):
            return None
        if progress is not None:
            progress(int(scal_i[K.S_DONE]), n)
        if code == K.DONE:
            break
    rejected = ints[:, K.R_STATUS] == K.REJECTED
    usable = cap_blocks * bs
    peaks = prompt + output - 1 + emitted
    return RunResult(
        policy=policy.name, workload=workload, kv_capacity_tokens=usable,
        first_scheduled_time=times[:, K.T_SCHEDULED].copy(), first_token_time=times[:, K.T_FIRST_TOKEN].copy(),
        finish_time=times[:, K.T_FINISH].copy(), num_evictions=ints[:, K.R_EVICTIONS].copy(),
        num_recomputed_tokens=ints[:, K.R_RECOMPUTED].copy(), total_computed_tokens=ints[:, K.R_TOTAL].copy(),
        rejected=rejected,
        reject_reasons={int(r): f"needs {int(peaks[r])} KV tokens at its last token; the KV capacity is "
                                f"{usable} tokens" for r in np.flatnonzero(rejected)},
        num_iterations=int(scal_i[K.S_ITERATION]), busy_time=float(scal_f[K.F_BUSY]),
        kv_peak_tokens=int(scal_i[K.S_PEAK]), kv_token_seconds=float(scal_f[K.F_TOKEN_SECONDS]),
        wall_time=time.perf_counter() - started)


def _policy_arguments(policy, cap_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """(integer parameters, float parameters) of the kernel's policy."""
    from . import kernels as K
    from ...policies._future_memory import VICTIM_ORDERS
    from ...policies.amin import AMin
    from ...policies.mcsf import MCBenchmark
    from ...policies.vllm import VLLMPolicy
    p, pf = np.zeros(K.NUM_P, dtype=np.int64), np.zeros(1)
    if type(policy) in _future_policies():
        p[K.P_KIND] = K.FUTURE
        p[K.P_FCFS] = type(policy) is MCBenchmark
        p[K.P_SKIP] = policy.rule == "skip"
        p[K.P_CAP] = math.floor((1.0 - policy.protection) * cap_blocks)     # as FutureMemoryPolicy._admit
        p[K.P_VICTIM] = VICTIM_ORDERS.index(policy.evict_victim)
        if type(policy) is AMin:
            p[K.P_REFINE] = 1 + ("generated+1", "double", "multiply").index(policy.refine_rule)
            pf[0] = policy.refine_factor
        return p, pf
    p[K.P_RESERVE] = int(policy.watermark * cap_blocks)        # _waiting_queue.admission_reserve
    p[K.P_MAX_SEQS] = policy.max_num_seqs
    if type(policy) is VLLMPolicy:
        p[K.P_KIND] = K.VLLM
        p[K.P_BUDGET] = policy.max_num_batched_tokens
        p[K.P_FULL_PROMPT] = policy.full_prompt_must_fit
        p[K.P_CONTINUE] = policy.continue_on_block
        p[K.P_CHUNKED] = policy.enable_chunked_prefill
        p[K.P_PREFILL_FIRST] = policy.prefill_first
        p[K.P_PADDED] = policy.padded_prefill_budget
        p[K.P_LAST_ARRIVED] = policy.preempt_victim == "last_arrived"
        p[K.P_FLOOR] = policy.decode_needs_free_block
    else:
        p[K.P_KIND] = K.SARATHI
        p[K.P_BUDGET] = policy.chunk_size
    return p, pf


def _estimates(policy, workload) -> np.ndarray | None:
    """Each request's first estimate õ, as the policy's `estimate` gives it (None: a prediction
    the policy needs is missing, and the Python engine reports that)."""
    from ...policies.amin import HSF, AMax, AMin
    if type(policy) is HSF:
        return np.asarray(workload.true_output_tokens, dtype=np.int64)
    column = {AMax: workload.predicted_hi, AMin: workload.predicted_lo}.get(
        type(policy), workload.predicted_output_tokens)
    if column is None or not np.all(np.isfinite(np.asarray(column, dtype=np.float64))):
        return None
    if type(policy) in (AMax, AMin):          # max(1, int(value))
        return np.maximum(1, np.asarray(column).astype(np.int64))
    return np.maximum(1, np.ceil(np.asarray(column, dtype=np.float64))).astype(np.int64)   # point_estimate


def _cost_arguments(cost):
    """(kind, scalars, tables, decode table) for `_kernels._iteration_time`; unused ones are dummies
    of the same types, so one compiled signature serves every model."""
    from . import kernels as K
    dummy = np.array([0.0, 1.0])
    tables = (dummy,) * 8
    dec = np.zeros((2, 2))
    if type(cost) is UnitTime:
        return K.UNIT, np.zeros(12), tables, dec
    if type(cost) is LinearCost:
        return K.LINEAR, np.array([cost.d0, cost.d1] + [0.0] * 10), tables, dec
    ar = cost.all_reduce
    a, b, c_, d = cost.prefill_coef
    scalars = np.array([1.0 if ar is not None else 0.0, cost.hidden_size, cost.all_reduce_launch_time / MS,
                        cost.all_reduces_per_layer, a, b, c_, d, cost.attention_batching_overhead,
                        cost.decode_context_scale, cost.num_layers, cost.iteration_overhead_time], dtype=np.float64)
    arrays = [cost.linear.knots, cost.linear.values, cost.elementwise.knots, cost.elementwise.values,
              ar.knots if ar is not None else dummy, ar.values if ar is not None else dummy,
              cost.decode.batch_knots, cost.decode.context_knots]
    tables = tuple(np.asarray(x, dtype=np.float64) for x in arrays)
    return K.CALIBRATED, scalars, tables, np.asarray(cost.decode.values, dtype=np.float64)
