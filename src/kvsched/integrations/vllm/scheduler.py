"""Run kvsched policies inside vLLM V1: ``--scheduler-cls kvsched.integrations.vllm.KVSchedScheduler``.

`KVSchedScheduler` subclasses vLLM's V1 ``Scheduler`` and overrides ``schedule()``: at every engine
step it builds a kvsched `SchedulerView` from the engine's waiting and running requests and its KV
block pool, asks the policy for a `Decision`, and has vLLM carry it out:

- ``evict``: the engine's own preemption (``Scheduler._preempt_request``): the KV blocks are freed,
  ``num_computed_tokens`` returns to 0, the generated tokens are kept and recomputed on return
  (vLLM's recompute preemption, the simulator's eviction).
- ``num_tokens`` for a running request: it is scheduled for exactly n tokens (a prefill chunk or
  a decode). A running request absent from ``num_tokens`` is *paused*: it keeps its KV blocks and
  is left out of the batch (vLLM allows this natively: its own scheduler does it when the token
  budget runs out; the model runner keeps the request's cached state).
- ``num_tokens`` for a waiting request: admitted with exactly n tokens (its first prefill chunk, or
  the recomputation of prompt + generated tokens after an eviction), in the decision's order.

How: the base ``schedule()`` builds the `SchedulerOutput` (block tables, cached request data,
connector metadata …), so the adapter reuses it under constraints instead of rebuilding it: the
waiting queue is swapped for a queue holding only the admitted requests in the decision's order,
and every request's token count is capped at the decision's n (0 for paused and not-admitted
requests) through ``Scheduler._reserve_prefill_lookahead``, the hook the base loop calls on every
candidate just before allocating its blocks. After the call the adapter checks that the engine
scheduled exactly what the policy decided and records any difference (a *gap*) in the trace.

Per-request inputs reach the policy through ``SamplingParams.extra_args["kvsched"]`` (a dict):
``request_id`` (int; default: ``int(request_id)`` when it parses, else a counter),
``arrival_time`` (seconds on the policy's clock; default: vLLM's arrival time minus the scheduler's
start), ``predicted_output_tokens``, ``predicted_lo``, ``predicted_hi``, ``type_id``.

The policy is chosen by ``additional_config={"kvsched_policy": "mcsf:protection=0.1"}`` or the
environment variable ``KVSCHED_POLICY`` (the same spec syntax as the CLI, parsed by
`kvsched.policies.parse_policy_spec`). ``kvsched_strict`` / ``KVSCHED_STRICT=1`` turns gaps into
errors (tests use it); ``kvsched_trace`` / ``KVSCHED_TRACE=path`` appends one JSON line per step.
``kvsched_seed`` / ``KVSCHED_SEED`` is passed to ``policy.reset``.

What vLLM cannot express, and what the adapter does instead (each one is recorded as a gap):

- Decisions that do not fit (unknown or finished ids, more tokens than uncomputed, over the token
  budget ``max_num_batched_tokens``, over the KV blocks free, more running requests than
  ``max_num_seqs``, evicting and scheduling one request): the offending entry is dropped (later
  entries still run). The simulator raises `InfeasibleDecisionError` on such a decision instead.
- ``Decision.wake_time``: vLLM's engine loop calls ``schedule()`` again at once; there is no
  timer. A policy that schedules nothing simply spins until something changes (an in-process
  driver, `kvsched.integrations.vllm.driver`, honours it on its virtual clock).
- The view's ``has_future_arrivals`` is unknown to a server: True unless a driver sets
  ``scheduler.kvsched_has_future_arrivals``. The oracle of clairvoyant policies returns
  ``max_tokens`` (exact only with ``ignore_eos``).
- Features whose admission the base loop handles and a policy cannot see: prefix caching (a
  prompt with a cache hit computes fewer tokens than the view says: run with prefix caching off),
  speculative decoding, KV connectors (P/D, offloading), LoRA limits, encoder inputs,
  ``long_prefill_token_threshold`` and async scheduling (the view would lag one step).
  ``KVSchedScheduler`` refuses speculative decoding, KV connectors and pipeline parallelism at
  start; the others show up as gaps when they change a decision.
- The KV convention is vLLM's (`KVConvention.COMPUTED`); the capacity is the block pool less its
  null block; the token budget is ``max_num_scheduled_tokens``.

`RecordingScheduler` is vLLM's own scheduler with the same per-step trace, for the fidelity tests
(``kvsched.integrations.vllm.driver``).

Fidelity (tests/integrations/vllm, vLLM 0.32 CPU build, tiny Llama, KV cache of 3–6 blocks of 32 tokens):
vLLM's own scheduler and kvsched's ``vllm`` policy in the simulator, and ``vllm``, ``sarathi``,
``mcsf``, ``amin``, ``hsf`` and a pausing test policy run through this adapter and in the
simulator, make the same decisions: batch (requests and tokens) per iteration, preemptions per
iteration, KV blocks used per iteration, admission order, preemptions per request. Differences
found, all explained:

- vLLM 0.32 admits a waiting request only if its whole input (prompt + generated tokens) fits
  (``scheduler_reserve_full_isl=True``, the default); kvsched's ``vllm`` policy does this with
  ``full_prompt_must_fit=True`` (its default; False is the older upstream rule, which vLLM gives
  with ``scheduler_reserve_full_isl=False``). With the option matched the traces are identical;
  with it mismatched they diverge at the first re-admission of a preempted request.
- vLLM serves a request only if prompt + output <= ``max_model_len`` <= the KV capacity; the
  simulator accepts one whose peak KV (prompt + output - 1) equals the capacity.
- The CPU attention backend needs a block size that is a multiple of 32 (16 is refused).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from vllm.v1.core.sched.request_queue import create_request_queue
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus

from ...engine.rules import KVConvention
from ...state import Decision, RequestState, SchedulerView, Status

logger = logging.getLogger(__name__)

EXTRA_ARGS_KEY = "kvsched"
_WAITING = (RequestStatus.WAITING, RequestStatus.PREEMPTED)


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One engine step, as scheduled (request ids are kvsched ids).

    ``num_tokens`` is in the engine's scheduling order (running requests first, then admissions);
    ``preempted`` is sorted; ``kv_used_blocks`` counts the blocks held after this step's
    allocations (the simulator's ``IterationRecord.kv_used_tokens / block_size``).
    """

    step: int
    time: float
    num_tokens: dict[int, int]
    preempted: tuple[int, ...]
    kv_used_blocks: int
    num_waiting: int
    num_running: int
    gaps: tuple[str, ...] = ()

    def as_json(self) -> str:
        data = asdict(self)
        data["num_tokens"] = [[k, v] for k, v in self.num_tokens.items()]
        return json.dumps(data)


def _setting(vllm_config, key: str, env: str, default: Any = None) -> Any:
    extra = getattr(vllm_config, "additional_config", None)
    if isinstance(extra, dict) and extra.get(key) is not None:
        return extra[key]
    return os.environ.get(env, default)


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


class _MaxTokensOracle:
    """Oracle for clairvoyant policies: ``max_tokens`` (the true length only under ``ignore_eos``)."""

    def __init__(self, states: dict[int, RequestState]) -> None:
        self._states = states

    def true_output_tokens(self, request_id: int) -> int:
        return self._states[request_id].true_output_tokens


class _KVSchedTrace:
    """Mixin: kvsched ids and states for vLLM requests, and the per-step trace."""

    def _kvsched_setup(self, vllm_config) -> None:
        self.kvsched_trace: list[StepRecord] = []
        self.kvsched_clock: Callable[[], float] | None = None     # None: wall clock since start
        self.kvsched_has_future_arrivals: Callable[[], bool] | None = None
        self._kvsched_t0 = time.time()
        self._kvsched_ids: dict[str, int] = {}
        self._kvsched_states: dict[str, RequestState] = {}
        self._kvsched_by_id: dict[int, RequestState] = {}
        self._kvsched_trace_path = _setting(vllm_config, "kvsched_trace", "KVSCHED_TRACE")
        self._kvsched_step = 0
        self._kvsched_iteration = 0
        self._kvsched_admissions = 0
        self._kvsched_capacity_blocks = self.kv_cache_manager.block_pool.num_gpu_blocks - 1

    def kvsched_now(self) -> float:
        return self.kvsched_clock() if self.kvsched_clock is not None else time.time() - self._kvsched_t0

    def kvsched_id(self, request_id: str) -> int:
        return self._kvsched_ids[request_id]

    def add_request(self, request: Request) -> None:
        super().add_request(request)
        if request.request_id not in self._kvsched_states:
            self._kvsched_register(request)

    def _kvsched_register(self, request: Request) -> None:
        params = request.sampling_params
        meta = ((params.extra_args or {}).get(EXTRA_ARGS_KEY) if params is not None else None) or {}
        kid = meta.get("request_id")
        if kid is None:
            try:
                kid = int(request.request_id)
            except ValueError:
                kid = len(self._kvsched_ids)
            while kid in self._kvsched_by_id:
                kid += 1
        kid = int(kid)
        if kid in self._kvsched_by_id:
            raise ValueError(f"kvsched request id {kid} is used twice (vLLM id {request.request_id!r})")
        arrival = meta.get("arrival_time")
        if arrival is None:
            arrival = request.arrival_time - self._kvsched_t0

        def opt(key, cast):
            return None if meta.get(key) is None else cast(meta[key])

        max_tokens = request.max_tokens if request.max_tokens is not None else 1 << 30
        state = RequestState(kid, float(arrival), request.num_prompt_tokens, int(max_tokens),
                             opt("predicted_output_tokens", float), opt("predicted_lo", int),
                             opt("predicted_hi", int), opt("type_id", int))
        state.status = Status.WAITING
        self._kvsched_ids[request.request_id] = kid
        self._kvsched_states[request.request_id] = state
        self._kvsched_by_id[kid] = state

    def _kvsched_sync(self) -> None:
        """Copy the engine's request progress into the kvsched states; forget finished requests."""
        if len(self._kvsched_states) > len(self.requests):
            for rid in [r for r in self._kvsched_states if r not in self.requests]:
                state = self._kvsched_states.pop(rid)
                self._kvsched_by_id.pop(state.request_id, None)
                self._kvsched_ids.pop(rid, None)
        for request in self.requests.values():
            state = self._kvsched_states.get(request.request_id)
            if state is None:
                continue
            state.num_computed_tokens = request.num_computed_tokens
            state.num_output_tokens = request.num_output_tokens
            state.num_evictions = request.num_preemptions
            if request.status == RequestStatus.RUNNING:
                state.status = Status.RUNNING
            elif RequestStatus.is_finished(request.status):
                state.status = Status.FINISHED
            else:
                state.status = Status.WAITING
                state.admitted_seq = None

    def _kvsched_used_blocks(self) -> int:
        return self._kvsched_capacity_blocks - self.kv_cache_manager.block_pool.get_num_free_blocks()

    def _kvsched_record(self, output, gaps: tuple[str, ...] = ()) -> StepRecord:
        now = self.kvsched_now()
        ids = self._kvsched_ids
        for request in self.running:        # admission order of newly admitted requests
            state = self._kvsched_states.get(request.request_id)
            if state is not None and state.admitted_seq is None:
                state.admitted_seq = self._kvsched_admissions
                self._kvsched_admissions += 1
                state.status = Status.RUNNING
                if state.first_scheduled_time is None:
                    state.first_scheduled_time = now
        record = StepRecord(
            step=self._kvsched_step, time=now,
            num_tokens={ids[r]: int(n) for r, n in output.num_scheduled_tokens.items()},
            preempted=tuple(sorted(ids[r] for r in (output.preempted_req_ids or ()) if r in ids)),
            kv_used_blocks=self._kvsched_used_blocks(),
            num_waiting=len(self.waiting) + len(self.kv_holding_waiting),
            num_running=len(self.running), gaps=gaps)
        self._kvsched_step += 1
        if output.total_num_scheduled_tokens > 0:
            self._kvsched_iteration += 1
        self.kvsched_trace.append(record)
        if self._kvsched_trace_path:
            with open(self._kvsched_trace_path, "a", encoding="utf-8") as fh:
                fh.write(record.as_json() + "\n")
        return record


class RecordingScheduler(_KVSchedTrace, Scheduler):
    """vLLM's own V1 scheduler, unchanged, recording a `StepRecord` per step."""

    def __init__(self, vllm_config, *args, **kwargs) -> None:
        super().__init__(vllm_config, *args, **kwargs)
        self._kvsched_setup(vllm_config)

    def schedule(self, *args, **kwargs):
        output = super().schedule(*args, **kwargs)
        self._kvsched_sync()
        self._kvsched_record(output)
        return output


@dataclass(slots=True)
class _Plan:
    evict: list[Request]
    tokens: dict[str, int]          # vLLM request id -> tokens, in the decision's order
    admit: list[Request]
    gaps: list[str]


class KVSchedScheduler(_KVSchedTrace, Scheduler):
    """A vLLM V1 scheduler that delegates every step's decision to a kvsched policy."""

    def __init__(self, vllm_config, *args, **kwargs) -> None:
        super().__init__(vllm_config, *args, **kwargs)
        self._kvsched_setup(vllm_config)
        self._kvsched_check_config(vllm_config)
        from ...policies import make, parse_policy_spec
        spec = _setting(vllm_config, "kvsched_policy", "KVSCHED_POLICY")
        if not spec:
            raise ValueError("KVSchedScheduler needs a policy: set KVSCHED_POLICY or "
                             "additional_config={'kvsched_policy': 'vllm'}")
        name, params = parse_policy_spec(str(spec))
        self.kvsched_policy = make(name, **params)
        seed = _setting(vllm_config, "kvsched_seed", "KVSCHED_SEED")
        self.kvsched_policy.reset(seed=None if seed in (None, "") else int(seed))
        self.kvsched_strict = _truthy(_setting(vllm_config, "kvsched_strict", "KVSCHED_STRICT", "0"))
        self._kvsched_caps: dict[str, int] | None = None
        self.kvsched_wake_time: float | None = None      # the latest decision's wake_time
        logger.info("kvsched: scheduling with policy %r", self.kvsched_policy)

    def _kvsched_check_config(self, vllm_config) -> None:
        unsupported = []
        if self.num_spec_tokens:
            unsupported.append("speculative decoding")
        if self.connector is not None:
            unsupported.append("a KV connector")
        if self.use_pp:
            unsupported.append("pipeline parallelism")
        if unsupported:
            raise ValueError(f"KVSchedScheduler does not support {', '.join(unsupported)}")
        if self.cache_config.enable_prefix_caching:
            logger.warning("kvsched: prefix caching is on; a cache hit makes vLLM compute fewer "
                           "tokens than the policy decided (recorded as gaps)")

    # ------------------------------------------------------------------ the hook
    def _reserve_prefill_lookahead(self, request: Request, num_computed_tokens: int,
                                   num_new_tokens: int) -> int:
        num_new_tokens = super()._reserve_prefill_lookahead(request, num_computed_tokens, num_new_tokens)
        if self._kvsched_caps is not None:
            num_new_tokens = min(num_new_tokens, self._kvsched_caps.get(request.request_id, 0))
        return num_new_tokens

    # ------------------------------------------------------------------ one step
    def schedule(self, *args, **kwargs):
        self._kvsched_sync()
        view = self._kvsched_view()
        decision = self.kvsched_policy.schedule(view)
        self.kvsched_wake_time = decision.wake_time
        plan = self._kvsched_plan(decision, view)
        if plan.gaps and self.kvsched_strict:
            raise RuntimeError("kvsched: the engine cannot carry out the decision: " + "; ".join(plan.gaps))
        output = self._kvsched_execute(plan, args, kwargs)
        for rid, n in plan.tokens.items():
            got = output.num_scheduled_tokens.get(rid, 0)
            if got != n:
                plan.gaps.append(f"request {self._kvsched_ids[rid]}: vLLM scheduled {got} tokens, "
                                 f"the policy decided {n}")
        for rid in output.num_scheduled_tokens:
            if rid not in plan.tokens:
                plan.gaps.append(f"request {self._kvsched_ids[rid]}: scheduled by vLLM, not by the policy")
        self._kvsched_sync()
        self._kvsched_record(output, tuple(plan.gaps))
        if plan.gaps:
            logger.warning("kvsched step %d: %s", self._kvsched_step - 1, "; ".join(plan.gaps))
            if self.kvsched_strict:
                raise RuntimeError("kvsched: vLLM did not do what the policy decided: " + "; ".join(plan.gaps))
        return output

    def _kvsched_view(self) -> SchedulerView:
        states = self._kvsched_states
        waiting = [states[r.request_id] for queue in (self.kv_holding_waiting, self.waiting)
                   for r in queue if r.status in _WAITING and r.request_id in states]
        waiting.sort(key=lambda s: (s.arrival_time, s.request_id))
        running = [states[r.request_id] for r in self.running if r.request_id in states]
        future = self.kvsched_has_future_arrivals
        oracle = _MaxTokensOracle(self._kvsched_by_id) if self.kvsched_policy.tags.clairvoyant else None
        return SchedulerView(
            now=self.kvsched_now(), iteration=self._kvsched_iteration,
            waiting=tuple(s.view for s in waiting), running=tuple(s.view for s in running),
            kv_capacity_tokens=self._kvsched_capacity_blocks * self.block_size,
            kv_used_tokens=self._kvsched_used_blocks() * self.block_size, block_size=self.block_size,
            kv_convention=KVConvention.COMPUTED, max_num_batched_tokens=self.max_num_scheduled_tokens,
            separate_batching=False, has_future_arrivals=True if future is None else bool(future()),
            oracle=oracle)

    def _kvsched_plan(self, decision: Decision, view: SchedulerView) -> _Plan:
        """The part of the decision vLLM can carry out; the rest becomes gaps."""
        by_kid = {self._kvsched_ids[r.request_id]: r for r in self.requests.values()
                  if r.request_id in self._kvsched_ids}
        plan = _Plan([], {}, [], [])
        free = view.num_free_blocks
        for kid in decision.evict:
            request = by_kid.get(kid)
            if request is None or request.status != RequestStatus.RUNNING or request in plan.evict:
                plan.gaps.append(f"evict {kid}: not a running request")
                continue
            plan.evict.append(request)
            free += view.blocks(view.kv_tokens(self._kvsched_states[request.request_id].view))
        evicted = {r.request_id for r in plan.evict}
        budget = self.max_num_scheduled_tokens
        seats = self.max_num_active_reqs - (len(self.running) - len(plan.evict))
        for kid, n in decision.num_tokens.items():
            request = by_kid.get(kid)
            if request is None or request.request_id in evicted or not (
                    request.status == RequestStatus.RUNNING or request.status in _WAITING):
                plan.gaps.append(f"request {kid}: not schedulable")
                continue
            rv = self._kvsched_states[request.request_id].view
            need = view.extra_blocks(rv, n) if isinstance(n, int) and n >= 1 else 0
            waiting = request.status != RequestStatus.RUNNING
            problem = (f"{n!r} tokens, expected 1..{rv.num_uncomputed_tokens}"
                       if not (isinstance(n, int) and 1 <= n <= rv.num_uncomputed_tokens) else
                       f"{n} tokens over the budget left ({budget})" if n > budget else
                       f"needs {need} blocks, {free} free" if need > free else
                       f"no seat left (max_num_seqs={self.max_num_active_reqs})"
                       if waiting and seats <= 0 else None)
            if problem:
                plan.gaps.append(f"request {kid}: {problem}")
                continue
            plan.tokens[request.request_id] = n
            budget -= n
            free -= need
            if waiting:
                plan.admit.append(request)
                seats -= 1
        return plan

    def _kvsched_execute(self, plan: _Plan, args, kwargs):
        """Preempt, then run the base schedule() restricted to the plan."""
        now = time.monotonic()
        for request in plan.evict:
            self.running.remove(request)
            self._preempt_request(request, now)
        queues = (self.waiting, self.kv_holding_waiting)
        admit_queue, holding_queue = create_request_queue(self.policy), create_request_queue(self.policy)
        for request in plan.admit:
            (self.kv_holding_waiting if request in self.kv_holding_waiting else self.waiting).remove_request(request)
            admit_queue.add_request(request)
        self.waiting, self.kv_holding_waiting = admit_queue, holding_queue
        self._kvsched_caps = plan.tokens
        try:
            return super().schedule(*args, **kwargs)
        finally:
            self._kvsched_caps = None
            leftovers = list(self.waiting), list(self.kv_holding_waiting)
            self.waiting, self.kv_holding_waiting = queues
            for queue, left in zip(queues, leftovers):
                if left:        # prepend_requests reverses: keep the leftovers' order
                    queue.prepend_requests(reversed(left))
