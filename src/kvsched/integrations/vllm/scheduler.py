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

Per-request inputs (`kvsched.integrations.vllm.request_args`): ``SamplingParams.extra_args["kvsched"]``
(a dict, from Python) or flat ``kvsched_<field>`` keys (over HTTP, ``vllm_xargs``): ``request_id``
(int; refused while in use; default: ``int(request_id)`` when it parses and is free, else a
counter that is never reused), ``arrival_time`` (seconds on the policy's clock; default: vLLM's
arrival time minus the scheduler's start), ``predicted_output_tokens``, ``predicted_lo``,
``predicted_hi``, ``type_id``. Malformed ones finish that request with ``FINISHED_ERROR`` (the
reason in a warning); nothing a client sends raises in the engine core. A policy that uses
predictions takes the server's fallback (``kvsched_fallback`` / ``KVSCHED_FALLBACK``:
``max-tokens``, the default, ``naive:lo=L,hi=H`` or ``none``) for the fields a request lacks.
Structured-output requests wait for their grammar and are then offered to the policy.

Limits: the policy's ``max_num_seqs``, ``max_num_batched_tokens``, ``full_prompt_must_fit`` and
``enable_chunked_prefill`` come from ``vllm_config`` (`kvsched.integrations.vllm.limits`) unless
the spec names them. Async scheduling is refused at start (the view would be a step late).
Memory: the per-step trace is off by default (``kvsched_trace_keep``: N keeps a ring of the last N
steps, ``all`` every step, as the in-process driver does); states, and the policy's per-request
entries, are freed when a request finishes.

The policy is chosen by ``additional_config={"kvsched_policy": "mcsf:protection=0.1"}`` or the
environment variable ``KVSCHED_POLICY`` (the same spec syntax as the CLI, parsed by
`kvsched.policies.parse_policy_spec`). ``kvsched_strict`` / ``KVSCHED_STRICT=1`` turns gaps into
errors (tests use it); ``kvsched_trace`` / ``KVSCHED_TRACE=path`` appends one JSON line per step.
``kvsched_seed`` / ``KVSCHED_SEED`` is passed to ``policy.reset``.

What vLLM cannot express, and what the adapter does instead (each one is recorded as a gap):

- Decisions that do not fit (unknown or finished ids, more tokens than uncomputed, over the token
  budget ``max_num_batched_tokens``, over the KV blocks free, more running requests than
  ``max_num_seqs``, evicting and scheduling one request, an admission whose whole input does
  not fit under the ``vllm`` policy's ``full_prompt_must_fit``): the offending entry is dropped
  (later entries still run). The simulator raises `InfeasibleDecisionError` on such a decision
  instead. vLLM's ``scheduler_reserve_full_isl`` is that policy's rule: the adapter applies it
  only for a policy with a ``full_prompt_must_fit`` parameter (its value, the engine's unless the
  spec names it); any other policy admits a chunk that fits, as in the simulator (under the
  rule, a policy that pauses its residents to admit such a request would stall the server).
  A policy without a ``max_num_seqs`` parameter (``mcsf``, ``amin``, …) does not plan with the
  seats: its admissions past the last seat are deferred in its order (the engine's rule, counted
  in ``kvsched_num_seat_deferred``, not a gap; the simulator has no seat limit for it). The view's
  ``max_num_admissions`` tells it the seats left: its `Batch` admits no more (an eviction frees
  one), so the budget goes to requests that run (trail paused its residents for an admission
  vLLM deferred, step after step), and the future-memory policies stop their scan there.
- ``Decision.wake_time``: vLLM's engine loop calls ``schedule()`` again at once; there is no
  timer. A policy that schedules nothing simply spins until something changes (an in-process
  driver, `kvsched.integrations.vllm.driver`, honours it on its virtual clock).
- The view's ``has_future_arrivals`` is unknown to a server: a driver sets
  ``scheduler.kvsched_has_future_arrivals``; otherwise it is True until no request has arrived
  for ``kvsched_drain_after`` / ``KVSCHED_DRAIN_AFTER`` seconds (default 1; ``none``: always
  True), so that WAIT's last requests, short of a batch, run once traffic stops. The oracle of
  clairvoyant policies returns ``max_tokens`` (exact only with ``ignore_eos``).
- Prefix caching: the policy sees each waiting request's hit at the step's boundary
  (`kvsched.integrations.vllm.view`); the admission uses that hit, and admissions of one step
  that share cached blocks count them once (`view.BlockHolders`), as the simulator does. An
  admission also takes the blocks earlier admissions of its step are computing, as many as leave
  the policy's tokens to compute (the simulator's same-step hit, `rules.same_step_hit_blocks`).
- Features whose admission the base loop handles and a policy cannot see: speculative
  decoding, KV connectors (P/D, offloading), LoRA limits, encoder inputs,
  ``long_prefill_token_threshold``.
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
iteration, KV blocks used per iteration, admission order, preemptions per request; with prefix
caching on (multi-turn and shared-system-prompt workloads), vLLM's own scheduler, and ``vllm`` and
``sarathi`` through this adapter, also the cached tokens of every admission. Differences found,
all explained:

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

import bisect
import itertools
import json
import logging
import math
import operator
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from vllm.v1.core.sched.request_queue import create_request_queue
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus

from ...engine.rules import KVConvention, same_step_hit_blocks
from ...state import Decision, ReadOnlyList, RequestState, SchedulerView, Status
from .limits import EngineLimits, describe, full_input_rule, policy_for_engine
from .request_args import (EXTRA_ARGS_KEY, RequestArgs, RequestArgsError, missing_predictions,
                           parse_fallback, parse_request_args)
from .view import BlockHolders, EngineView, ServedRequestView, resident_extra_blocks

logger = logging.getLogger(__name__)

_WAITING = (RequestStatus.WAITING, RequestStatus.PREEMPTED)
# The base scheduler's waiting queues, in the order its loop drains them (vLLM 0.32 has the first
# two; 0.33+ adds async_kv_waiting): the adapter swaps every one that exists.
_WAITING_QUEUES = ("kv_holding_waiting", "async_kv_waiting", "waiting")
_BY_ARRIVAL = operator.attrgetter("arrival_time", "request_id")


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One engine step, as scheduled (request ids are kvsched ids).

    ``num_tokens`` is in the engine's scheduling order (running requests first, then admissions);
    ``preempted`` is sorted; ``kv_used_blocks`` counts the blocks held after this step's
    allocations (the simulator's ``IterationRecord.kv_used_tokens / block_size``).
    ``num_cached_tokens``: for each request admitted this step (new, or resumed after a
    preemption), the tokens it starts from: its prefix-cache hit (0 without prefix caching).
    """

    step: int
    time: float
    num_tokens: dict[int, int]
    preempted: tuple[int, ...]
    kv_used_blocks: int
    num_waiting: int
    num_running: int
    gaps: tuple[str, ...] = ()
    num_cached_tokens: dict[int, int] = field(default_factory=dict)

    def as_json(self) -> str:
        data = asdict(self)
        data["num_tokens"] = [[k, v] for k, v in self.num_tokens.items()]
        data["num_cached_tokens"] = [[k, v] for k, v in self.num_cached_tokens.items()]
        return json.dumps(data)


def _setting(vllm_config, key: str, env: str, default: Any = None) -> Any:
    extra = getattr(vllm_config, "additional_config", None)
    if isinstance(extra, dict) and extra.get(key) is not None:
        return extra[key]
    return os.environ.get(env, default)


def _flag(key: str, value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{key}: expected 1/0, true/false, yes/no or on/off, got {value!r}")


def _trace_file(path: Any) -> str | None:
    """``kvsched_trace``: the JSONL file each step is appended to, checked at start (a path that
    cannot be written would otherwise stop the engine at its first step)."""
    if not path:
        return None
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise ValueError(f"kvsched_trace: cannot write {str(path)!r}: {exc.strerror or exc}") from None
    return str(path)


def _make_trace(keep: Any):
    """The in-memory trace: ``"all"`` keeps every step (the in-process driver and tests), N >= 0
    keeps the last N steps, a ring (default 0: none; a server runs without end, and a step's
    record costs about a twentieth of vLLM's own step at 256 running requests)."""
    if str(keep).strip().lower() == "all":
        return []
    try:
        size = 0 if keep in (None, "") else int(keep)
    except (TypeError, ValueError):
        size = -1
    if size < 0:
        raise ValueError(f"kvsched_trace_keep: expected 'all' or a number of steps >= 0, got {keep!r}")
    return deque(maxlen=size)


def _seed(value: Any) -> int | None:
    """``kvsched_seed``, passed to the policy's ``reset`` (default None)."""
    if value in (None, ""):
        return None
    try:
        seed = int(value)
    except (TypeError, ValueError):
        seed = None
    if seed is None or isinstance(value, bool) or (isinstance(value, float) and value != seed):
        raise ValueError(f"kvsched_seed: expected an integer, got {value!r}")
    return seed


def _drain_after(value: Any) -> float | None:
    """``kvsched_drain_after``: seconds without an arrival after which the view says no more
    requests will come (default 1, also for JSON null; ``"none"``: never)."""
    if value in (None, ""):
        return 1.0
    if str(value).strip().lower() == "none":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not seconds >= 0 or math.isinf(seconds):
        raise ValueError(f"kvsched_drain_after: expected seconds >= 0 or 'none', got {value!r}")
    return seconds


class _MaxTokensOracle:
    """Oracle for clairvoyant policies: ``max_tokens`` (the true length only under ``ignore_eos``)."""

    def __init__(self, states: dict[int, RequestState]) -> None:
        self._states = states

    def true_output_tokens(self, request_id: int) -> int:
        return self._states[request_id].true_output_tokens


@dataclass(slots=True)
class _Residents:
    """``self.running``'s requests as `_kvsched_sync` read them. ``views``: their kvsched views,
    in that order, looked up when first read (the view's running requests). When every one is running (else None):
    ``by_kid``, kvsched id -> uncomputed tokens (the view's ``resident_tokens``); ``by_rid``, the
    same by vLLM id; ``need``, the blocks serving all of them in full takes (the sum of
    `resident_extra_blocks`); ``num_tokens``, the tokens it takes."""

    views: _RunningViews
    by_kid: dict[int, int] | None
    by_rid: dict[str, int] | None
    need: int
    num_tokens: int


class _KVSchedTrace:
    """Mixin: kvsched ids and states for vLLM requests, and the per-step trace."""

    def _kvsched_setup(self, vllm_config) -> None:
        self.kvsched_trace = _make_trace(_setting(vllm_config, "kvsched_trace_keep", "KVSCHED_TRACE_KEEP"))
        self.kvsched_clock: Callable[[], float] | None = None     # None: wall clock since start
        self.kvsched_has_future_arrivals: Callable[[], bool] | None = None
        self.kvsched_policy = None          # set by KVSchedScheduler; None: vLLM's own, recording
        self._kvsched_t0 = time.time()
        self._kvsched_last_arrival = 0.0
        self._kvsched_ids: dict[str, int] = {}
        self._kvsched_states: dict[str, RequestState] = {}
        self._kvsched_by_id: dict[int, RequestState] = {}
        self._kvsched_requests: dict[int, Request] = {}      # kvsched id -> vLLM request
        self._kvsched_touched: set[str] = set()              # to sync at the next step
        # The waiting requests' views in (arrival, id) order, kept across steps (None: rebuild it
        # from the queues): arrivals append; a request that stops waiting (admitted, finished) is
        # noted in _kvsched_left and taken out by bisection; preemptions and grammar promotions
        # rebuild. Spares an O(W log W) sort, or an O(W) filter, of W queued requests per step.
        self._kvsched_waiting_order: list[ServedRequestView] | None = []
        self._kvsched_left: list[RequestState] = []
        self._kvsched_next_id = 0
        # vLLM id -> the order it was added in: the plain waiting queue is in this order (appends)
        # but where vLLM put requests back at its front, so an admission is found in it by
        # bisection (`_remove`).
        self._kvsched_added: dict[str, int] = {}
        self._kvsched_num_added = 0
        self._kvsched_refused: set[str] = set()      # vLLM ids finished with an error by the adapter
        self._kvsched_blocked: set[str] = set()      # vLLM ids waiting for their grammar
        self._kvsched_needs_predictions = False
        self._kvsched_fallback = parse_fallback(
            _setting(vllm_config, "kvsched_fallback", "KVSCHED_FALLBACK"))
        self._kvsched_max_model_len = int(vllm_config.model_config.max_model_len)
        self._kvsched_trace_path = _trace_file(_setting(vllm_config, "kvsched_trace", "KVSCHED_TRACE"))
        # a record is built only when something keeps it (the ring, or the file)
        trace = self.kvsched_trace
        self._kvsched_keeps_trace = bool(self._kvsched_trace_path) or not (isinstance(trace, deque) and trace.maxlen == 0)
        self._kvsched_step = 0
        self._kvsched_iteration = 0
        self._kvsched_admissions = 0
        self._kvsched_capacity_blocks = self.kv_cache_manager.block_pool.num_gpu_blocks - 1
        # Prefix caching: the hits of waiting requests at this step's boundary, looked up when
        # the policy first asks (kvsched id -> (tokens, shared blocks); vLLM id -> the blocks).
        self._kvsched_caching = bool(self.cache_config.enable_prefix_caching)
        self._kvsched_hit_lookup = self._kvsched_hit if self._kvsched_caching else None
        self._kvsched_hits: dict[int, tuple[int, int]] = {}
        self._kvsched_hit_blocks: dict[str, tuple[Any, tuple]] = {}

    def kvsched_now(self) -> float:
        return self.kvsched_clock() if self.kvsched_clock is not None else time.time() - self._kvsched_t0

    def kvsched_id(self, request_id: str) -> int:
        return self._kvsched_ids[request_id]

    def add_request(self, request: Request) -> None:
        super().add_request(request)
        rid = request.request_id
        if rid in self._kvsched_states or rid in self._kvsched_refused:
            return                      # a later chunk of a streaming-input session
        self._kvsched_last_arrival = self.kvsched_now()
        self._kvsched_added[rid] = self._kvsched_num_added
        self._kvsched_num_added += 1
        try:
            self._kvsched_register(request)
        except RequestArgsError as exc:
            self._kvsched_refuse(request, str(exc))
        except Exception as exc:        # never let one request's inputs stop the engine
            logger.exception("kvsched: cannot register request %s", rid)
            self._kvsched_refuse(request, f"{type(exc).__name__}: {exc}")

    def _kvsched_refuse(self, request: Request, reason: str) -> None:
        """Finish this one request with an error (FINISHED_ERROR; over HTTP a per-request error).

        The base scheduler finishes the ids in ``grammar_compile_error_reqs`` with FINISHED_ERROR
        and sends their output at the next ``update_from_output``, which runs after every
        ``schedule()``; the request is never scheduled by the adapter meanwhile (it has no state).
        """
        logger.warning("kvsched: request %s refused: %s", request.request_id, reason)
        self._kvsched_refused.add(request.request_id)
        self.grammar_compile_error_reqs.add(request.request_id)

    def _kvsched_register(self, request: Request) -> None:
        params = request.sampling_params
        if getattr(request, "resumable", False):
            raise RequestArgsError("streaming-input sessions (resumable requests) are not supported "
                                   "by KVSchedScheduler")
        args = parse_request_args(params.extra_args if params is not None else None)
        room = max(1, self._kvsched_max_model_len - request.num_prompt_tokens)
        max_tokens = min(request.max_tokens, room) if request.max_tokens is not None else room
        if self._kvsched_needs_predictions and missing_predictions(args):
            args = self._kvsched_fallback.fill(args, max_tokens)
            if missing_predictions(args):
                raise RequestArgsError(
                    f"the policy needs predictions: send {', '.join('kvsched_' + f for f in missing_predictions(args))} "
                    "in vllm_xargs, or start the server with a fallback (kvsched_fallback)")
        kid = self._kvsched_new_id(request.request_id, args)
        arrival = args.arrival_time
        if arrival is None:
            arrival = request.arrival_time - self._kvsched_t0
        state = RequestState(kid, float(arrival), request.num_prompt_tokens, int(max_tokens),
                             args.predicted_output_tokens, args.predicted_lo, args.predicted_hi, args.type_id)
        # the progress is vLLM's request's, read by the view (`ServedRequestView`); no copy is kept
        state.num_computed_tokens = state.num_output_tokens = state.num_evictions = None
        state.view = ServedRequestView(state, request, self._kvsched_hit_lookup)
        state.status = Status.WAITING
        policy = self.kvsched_policy
        refusal = policy.refusal(state.view) if policy is not None else None
        if refusal is not None:
            raise RequestArgsError(refusal)
        self._kvsched_ids[request.request_id] = kid
        self._kvsched_states[request.request_id] = state
        self._kvsched_by_id[kid] = state
        self._kvsched_requests[kid] = request
        if request.status in _WAITING:
            self._kvsched_note_arrival(state)
        if request.status == RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR:
            self._kvsched_blocked.add(request.request_id)

    def _kvsched_note_arrival(self, state: RequestState) -> None:
        order = self._kvsched_waiting_order
        if order is not None:
            if order and _BY_ARRIVAL(state) < _BY_ARRIVAL(order[-1]):
                self._kvsched_waiting_order = None          # out of order: rebuild once
            else:
                order.append(state.view)

    def _kvsched_set_status(self, state: RequestState, status: Status) -> None:
        """Every status change of a kvsched state goes here (the waiting order follows it)."""
        if state.status is Status.WAITING and status is not Status.WAITING:
            if self._kvsched_waiting_order is not None:     # None: rebuilt anyway, nothing to note
                self._kvsched_left.append(state)
        elif status is Status.WAITING and state.status is not Status.WAITING:
            self._kvsched_waiting_order = None              # back in the queue: rebuild
        state.status = status

    def _kvsched_waiting_views(self) -> list[ServedRequestView]:
        order, left = self._kvsched_waiting_order, self._kvsched_left
        self._kvsched_left = []
        if order is not None:
            for state in left:          # sorted by (arrival, id): find each by bisection
                i = bisect.bisect_left(order, _BY_ARRIVAL(state), key=_BY_ARRIVAL)
                if i < len(order) and order[i] is state.view:
                    del order[i]
                else:
                    order = None        # it was not in the order (waiting for its grammar): rebuild
                    break
        if order is None:
            states = self._kvsched_states
            order = [states[r.request_id].view for queue in self._kvsched_queues()
                     for r in queue if r.status in _WAITING and r.request_id in states]
            order.sort(key=_BY_ARRIVAL)
        self._kvsched_waiting_order = order
        return order

    def _kvsched_new_id(self, request_id: str, args: RequestArgs) -> int:
        """The client's ``request_id`` (refused while in use), else ``int(request_id)`` when it
        parses and is free, else the next free id of a counter that never goes back (ids of
        finished requests are not handed out again while the counter is below them)."""
        if args.request_id is not None:
            if args.request_id in self._kvsched_by_id:
                raise RequestArgsError(f"request_id {args.request_id} is in use by another request")
            return args.request_id
        try:
            kid = int(request_id)
        except ValueError:
            kid = -1
        if kid < 0 or kid in self._kvsched_by_id:
            while self._kvsched_next_id in self._kvsched_by_id:
                self._kvsched_next_id += 1
            kid = self._kvsched_next_id
            self._kvsched_next_id += 1
        return kid

    def _kvsched_promote_blocked(self) -> None:
        """Requests waiting for their structured-output grammar: the base loop promotes them to
        WAITING when the grammar is ready (or finishes them with an error when it failed to
        compile); the adapter's swapped queue hides them from that loop, so it does it here."""
        for rid in list(self._kvsched_blocked):
            request = self.requests.get(rid)
            if request is None or request.status != RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR \
                    or self._handle_blocked_waiting_request(request):
                self._kvsched_blocked.discard(rid)
                self._kvsched_waiting_order = None

    def _kvsched_sync(self) -> _Residents:
        """Bring up to date the status of every kvsched state the engine can have changed since
        the last boundary: those running, and those preempted in the previous step (a request
        that has only waited since its last sync is as it was; finished ones are freed in
        `_free_blocks`). The progress itself needs no copy (the views read vLLM's requests); what
        changes here is the status of the preempted ones (`_kvsched_sync_one`).
        O(running + preempted) per step, not O(requests): 2,000 queued requests cost nothing here.
        The running requests are read straight from ``self.running`` (no set of their ids); a
        request scheduled in the previous step is running now unless it finished (vLLM appends
        every admission to ``self.running``, and `_kvsched_record` marks it running), so
        `_kvsched_record` notes only the preempted.
        Returns the running requests as `_Residents`: the one pass over them reads vLLM's
        requests only (the kvsched states and views are not touched; the view's running
        requests are looked up when the policy reads them, `_RunningViews`)."""
        touched, self._kvsched_touched = self._kvsched_touched, set()
        ids, running, block = self._kvsched_ids, RequestStatus.RUNNING, self.block_size
        by_kid, by_rid, need, num_listed = {}, {}, 0, 0
        for request in self.running:
            rid = request.request_id
            kid = ids.get(rid)
            if kid is None:
                continue
            num_listed += 1
            if request.status == running:
                # the view's num_uncomputed_tokens of a resident request, and its blocks for them
                computed = request.num_computed_tokens
                uncomputed = request.num_tokens - computed
                by_kid[kid] = by_rid[rid] = uncomputed
                need += resident_extra_blocks(computed, uncomputed, block)
            else:
                touched.add(rid)
        for rid in touched:
            self._kvsched_sync_one(rid)
        views = _RunningViews(list(self.running), self._kvsched_states)
        if len(by_kid) < num_listed:     # a listed request is not running: no short cuts
            return _Residents(views, None, None, 0, 0)
        return _Residents(views, by_kid, by_rid, need, sum(by_kid.values()))

    def _kvsched_sync_one(self, request_id: str) -> None:
        """`_kvsched_sync` for one request that is not running (or not as vLLM's running list
        says), by its status."""
        state, request = self._kvsched_states.get(request_id), self.requests.get(request_id)
        if state is None or request is None:
            return
        if request.status == RequestStatus.RUNNING:
            if state.status is not Status.RUNNING:
                self._kvsched_set_status(state, Status.RUNNING)
        elif RequestStatus.is_finished(request.status):
            self._kvsched_set_status(state, Status.FINISHED)
        else:
            self._kvsched_set_status(state, Status.WAITING)
            state.admitted_seq = None

    def _free_blocks(self, request: Request):
        """The base scheduler's last word on a finished request (it leaves ``self.requests``
        here): free its kvsched state too."""
        super()._free_blocks(request)
        self._kvsched_refused.discard(request.request_id)
        self._kvsched_added.pop(request.request_id, None)
        if request.request_id in self._kvsched_states:
            self._kvsched_forget([request.request_id])

    def _kvsched_forget(self, request_ids: list[str]) -> None:
        """Free the states of finished requests, and the policy's per-request entries."""
        kids = []
        for rid in request_ids:
            state = self._kvsched_states.pop(rid)
            self._kvsched_set_status(state, Status.FINISHED)    # drops out of the waiting order
            self._kvsched_by_id.pop(state.request_id, None)
            self._kvsched_ids.pop(rid, None)
            self._kvsched_requests.pop(state.request_id, None)
            self._kvsched_blocked.discard(rid)
            kids.append(state.request_id)
        if self.kvsched_policy is not None:
            self.kvsched_policy.forget(kids)

    def _kvsched_hit(self, kid: int) -> tuple[int, int]:
        """A waiting request's prefix-cache hit at this step's boundary: (tokens, blocks of it
        that resident requests hold, i.e. ref_cnt > 0). vLLM's own lookup
        (``get_computed_blocks``: the longest run of cached full blocks, capped at
        ``num_tokens - 1``), done once per step and before any allocation of the step (the
        policy decides before the adapter preempts or allocates); the blocks are kept for the
        admission (`_get_local_prefix_cache_hit`). One KV cache group (the adapter's pool)."""
        hit = self._kvsched_hits.get(kid)
        if hit is None:
            request = self._kvsched_requests[kid]
            blocks, tokens, _ = self.kv_cache_manager.get_computed_blocks(request)
            group = blocks.blocks[0] if blocks.blocks else ()
            hit = self._kvsched_hits[kid] = (int(tokens), sum(1 for b in group if b.ref_cnt > 0))
            self._kvsched_hit_blocks[request.request_id] = (blocks, tuple(b.block_hash for b in group))
        return hit

    def _kvsched_block_refs(self, kid: int) -> tuple[tuple[int, int], ...]:
        """(block id, ref_cnt) of a waiting request's boundary-time hit blocks (`_kvsched_hit`),
        or of a resident request's blocks (`EngineView.block_refs`)."""
        request = self._kvsched_requests[kid]
        if request.status == RequestStatus.RUNNING:
            group = self.kv_cache_manager.get_blocks(request.request_id).blocks[0]
        else:
            self._kvsched_hit(kid)
            blocks = self._kvsched_hit_blocks[request.request_id][0].blocks
            group = blocks[0] if blocks else ()
        return tuple((b.block_id, b.ref_cnt) for b in group)

    def _kvsched_freed_blocks(self, evict: list[Request]) -> int:
        """Blocks that evicting `evict` frees: each request's own blocks; with prefix caching
        only the blocks no other (not evicted) request holds (ref_cnt = holders among `evict`)."""
        if not self._kvsched_caching:
            return sum(-(-r.num_computed_tokens // self.block_size) for r in evict)
        holders: dict[int, list] = {}
        for request in evict:
            for block in self.kv_cache_manager.get_blocks(request.request_id).blocks[0]:
                holders.setdefault(id(block), [block, 0])[1] += 1
        return sum(1 for block, count in holders.values() if block.ref_cnt == count)

    def _kvsched_queues(self) -> list:
        return [getattr(self, name) for name in _WAITING_QUEUES if hasattr(self, name)]

    def _kvsched_used_blocks(self) -> int:
        return self._kvsched_capacity_blocks - self.kv_cache_manager.block_pool.get_num_free_blocks()

    def _kvsched_record(self, output, gaps: tuple[str, ...] = ()) -> StepRecord | None:
        """The step's bookkeeping (admissions, counters), and its `StepRecord` when the trace
        keeps one (`_make_trace`, ``kvsched_trace``; else None)."""
        now = self.kvsched_now()
        for state in self._kvsched_admitted():      # in admission order
            state.admitted_seq = self._kvsched_admissions
            self._kvsched_admissions += 1
            self._kvsched_set_status(state, Status.RUNNING)
            if state.first_scheduled_time is None:
                state.first_scheduled_time = now
        record = self._kvsched_step_record(output, now, gaps) if self._kvsched_keeps_trace else None
        self._kvsched_step += 1
        if output.total_num_scheduled_tokens > 0:
            self._kvsched_iteration += 1
        # The scheduled requests are running now (`_kvsched_sync` reads them from self.running).
        self._kvsched_touched.update(output.preempted_req_ids or ())
        if record is not None:
            self.kvsched_trace.append(record)
            if self._kvsched_trace_path:
                with open(self._kvsched_trace_path, "a", encoding="utf-8") as fh:
                    fh.write(record.as_json() + "\n")
        return record

    def _kvsched_step_record(self, output, now: float, gaps: tuple[str, ...]) -> StepRecord:
        ids, scheduled = self._kvsched_ids, output.num_scheduled_tokens
        return StepRecord(
            step=self._kvsched_step, time=now,
            num_tokens=dict(zip(map(ids.__getitem__, scheduled), map(int, scheduled.values()))),
            preempted=tuple(sorted(ids[r] for r in (output.preempted_req_ids or ()) if r in ids)),
            kv_used_blocks=self._kvsched_used_blocks(),
            num_waiting=sum(len(queue) for queue in self._kvsched_queues()),
            num_running=len(self.running), gaps=gaps, num_cached_tokens=_admission_hits(output, ids))

    def _kvsched_admitted(self) -> list[RequestState]:
        """The states of the requests admitted in this step (their ``admitted_seq`` is None), in
        ``self.running``'s order: its tail, as vLLM appends each admission there (a resident one
        has its seq since its admission; a preempted one left the list), so the scan stops at the
        first resident instead of reading all of them."""
        states, admitted = self._kvsched_states, []
        for request in reversed(self.running):
            state = states.get(request.request_id)
            if state is None:
                continue
            if state.admitted_seq is not None:
                break
            admitted.append(state)
        admitted.reverse()
        return admitted


def _serves_residents_in_full(entries, residents: _Residents, budget: int, free: int) -> bool:
    """Whether a decision whose ``num_tokens.items()`` are `entries` starts with every resident
    request, in the residents' order, and exactly its uncomputed tokens, plain ints of at least
    1, that together fit the token `budget` and the `free` blocks: then the plan's short path
    takes every one of those entries in turn (each fits what the earlier ones left)."""
    full = residents.by_kid
    if not full or residents.need > free or residents.num_tokens > budget or 0 in full.values():
        return False
    head = dict(itertools.islice(entries, len(full)))
    return head == full and list(head) == list(full) and set(map(type, head.values())) == {int}


class _RunningViews(Sequence):
    """The view's ``running``: the views of vLLM's running requests, in its order, looked up when
    the policy first reads them. A future-memory policy's step of decodes reads none (it reads
    the residents' tokens, `SchedulerView.resident_tokens`), so a step need not touch the
    kvsched state of every resident. Read-only and valid during the policy's `schedule`, like
    the simulator's `ReadOnlyList`."""

    __slots__ = ("_requests", "_states", "_views")

    def __init__(self, requests: list[Request], states: dict[str, RequestState]) -> None:
        self._requests, self._states, self._views = requests, states, None

    def _items(self) -> tuple[ServedRequestView, ...]:
        if self._views is None:
            states = self._states
            self._views = tuple(states[r.request_id].view for r in self._requests if r.request_id in states)
        return self._views

    def __len__(self) -> int:
        return len(self._items())

    def __getitem__(self, index):
        return self._items()[index]         # a slice is a tuple, as `ReadOnlyList` gives

    def __iter__(self):
        return iter(self._items())

    def __reversed__(self):
        return reversed(self._items())

    def __contains__(self, item) -> bool:
        return item in self._items()

    def __repr__(self) -> str:
        return f"RunningViews({list(self._items())!r})"


def _admission_hits(output, ids: dict[str, int]) -> dict[int, int]:
    """Requests admitted in `output` (new ones, and resumed ones after a preemption) -> the
    tokens they start from: what vLLM's prefix cache gave them."""
    hits = {ids[new.req_id]: int(new.num_computed_tokens)
            for new in output.scheduled_new_reqs if new.req_id in ids}
    cached = output.scheduled_cached_reqs
    # vLLM 0.32/0.33 send a resumed request among the cached ones, flagged in resumed_req_ids;
    # 0.34 sends it as a new one (the set is gone), which the line above has read
    resumed = getattr(cached, "resumed_req_ids", None)
    if resumed:
        for req_id, computed in zip(cached.req_ids, cached.num_computed_tokens):
            if req_id in resumed and req_id in ids:
                hits[ids[req_id]] = int(computed)
    return hits


class RecordingScheduler(_KVSchedTrace, Scheduler):
    """vLLM's own V1 scheduler, unchanged, recording a `StepRecord` per step (as
    ``kvsched_trace_keep`` says: the in-process driver keeps every one)."""

    def __init__(self, vllm_config, *args, **kwargs) -> None:
        super().__init__(vllm_config, *args, **kwargs)
        self._kvsched_setup(vllm_config)
        self._kvsched_waiting_order = None      # it has no policy to hand waiting views: keep none

    def schedule(self, *args, **kwargs):
        self._kvsched_sync()            # the previous step's preemptions, before re-admissions
        output = super().schedule(*args, **kwargs)
        self._kvsched_record(output)
        return output


def _refuse_async_scheduling(vllm_config) -> None:
    """Async scheduling plans step k+1 before step k's tokens are known: the policy would decide
    on a view one step old and its decode counts would be off by one, so it is refused."""
    if getattr(vllm_config.scheduler_config, "async_scheduling", False):
        raise ValueError("KVSchedScheduler does not support async scheduling: start vLLM with "
                         "--no-async-scheduling (EngineArgs(async_scheduling=False))")


@dataclass(slots=True)
class _Plan:
    evict: list[Request]
    tokens: dict[str, int]          # vLLM request id -> tokens, in the decision's order
    admit: list[Request]
    gaps: list[str]


class KVSchedScheduler(_KVSchedTrace, Scheduler):
    """A vLLM V1 scheduler that delegates every step's decision to a kvsched policy."""

    def __init__(self, vllm_config, *args, **kwargs) -> None:
        _refuse_async_scheduling(vllm_config)
        super().__init__(vllm_config, *args, **kwargs)
        self._kvsched_setup(vllm_config)
        self._kvsched_check_config(vllm_config)
        spec = _setting(vllm_config, "kvsched_policy", "KVSCHED_POLICY")
        if not spec:
            raise ValueError("KVSchedScheduler needs a policy: set KVSCHED_POLICY or "
                             "additional_config={'kvsched_policy': 'vllm'}")
        self.kvsched_limits = EngineLimits.from_vllm_config(vllm_config)
        self.kvsched_policy, applied, overridden = policy_for_engine(str(spec), self.kvsched_limits)
        for key, (mine, engine) in overridden.items():
            logger.warning("kvsched: the policy spec sets %s=%r, the engine has %r (kept as the spec says)",
                           key, mine, engine)
        self.kvsched_drain_after = _drain_after(_setting(vllm_config, "kvsched_drain_after", "KVSCHED_DRAIN_AFTER"))
        self.kvsched_policy.reset(seed=_seed(_setting(vllm_config, "kvsched_seed", "KVSCHED_SEED")))
        self._kvsched_needs_predictions = bool(self.kvsched_policy.tags.uses_predictions)
        # Under vLLM's full-input rule, a policy that does not have it (`full_input_rule`) would
        # see its admissions of a chunk that fits refused, and one that pauses its residents for
        # such an admission (trail, separate-threshold) would propose it again at every step
        # while nothing runs: the rule is the policy's.
        rule = full_input_rule(self.kvsched_policy)
        if self.scheduler_reserve_full_isl and not rule:
            logger.info("kvsched: vLLM's scheduler_reserve_full_isl is the vllm policy's rule; off under %s "
                        "(a chunk that fits is admitted, as in the simulator)", self.kvsched_policy.name)
        self.scheduler_reserve_full_isl = rule
        # A policy without a max_num_seqs parameter (mcsf, amin, …: the papers have no seat
        # limit) cannot plan with the engine's seats; its admissions past the last seat wait for
        # a later step, in the policy's order, as the engine's own rule (not a gap; counted).
        self._kvsched_seats_by_engine = not hasattr(self.kvsched_policy, "max_num_seqs")
        self.kvsched_num_seat_deferred = 0
        self.kvsched_strict = _flag("kvsched_strict", _setting(vllm_config, "kvsched_strict", "KVSCHED_STRICT", "0"))
        self._kvsched_caps: dict[str, int] | None = None
        self.kvsched_wake_time: float | None = None      # the latest decision's wake_time
        logger.info("kvsched: scheduling with policy %s %s (from the engine: %s; fallback predictions: %s)",
                    self.kvsched_policy.name, describe(self.kvsched_policy), applied,
                    self._kvsched_fallback.kind if self._kvsched_needs_predictions else "not needed")

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

    # ------------------------------------------------------------------ the hooks
    def _reserve_prefill_lookahead(self, request: Request, num_computed_tokens: int,
                                   num_new_tokens: int) -> int:
        # The base rule only acts for multi-token MTP drafters (lookahead > 1), i.e. speculative
        # decoding, which the adapter refuses; skipping its call saves a frame per request.
        if self.num_prefill_lookahead > 1:
            num_new_tokens = super()._reserve_prefill_lookahead(request, num_computed_tokens, num_new_tokens)
        caps = self._kvsched_caps
        if caps is not None:
            cap = caps.get(request.request_id, 0)
            if cap < num_new_tokens:
                return cap
        return num_new_tokens

    def _get_local_prefix_cache_hit(self, request: Request, *limit):
        """The admission's cache hit is the one the policy was told (looked up at the step's
        boundary, `_kvsched_hit`), then the simulator's same-step hit: the blocks after it that
        admissions earlier in this step registered, as many as leave the policy's tokens to
        compute (`_kvsched_same_step_blocks`). A block of the boundary hit that an earlier
        allocation of this step took from the free queue (LRU eviction) ends the hit there; the
        difference shows up as a gap. vLLM 0.33+ passes a ``max_cache_hit_length`` (`limit`;
        None unless an auxiliary output connector caps hits): a cap takes the base rule."""
        found = self._kvsched_hit_blocks.get(request.request_id) if self._kvsched_caps is not None else None
        if found is None or (limit and limit[0] is not None):
            return super()._get_local_prefix_cache_hit(request, *limit)
        blocks, hashes = found
        group = blocks.blocks[0]
        kept = next((i for i, (b, h) in enumerate(zip(group, hashes)) if b.block_hash != h), len(group))
        if kept < len(group):
            blocks = self.kv_cache_manager.create_kv_cache_blocks((group[:kept],))
            self._kvsched_hit_shrunk[request.request_id] = kept * self.block_size
        else:
            more = self._kvsched_same_step_blocks(request, group)
            if more:
                kept += len(more)
                blocks = self.kv_cache_manager.create_kv_cache_blocks((list(group) + more,))
        return blocks, kept * self.block_size, 0, False

    def _kvsched_same_step_blocks(self, request: Request, group) -> list:
        """vLLM registers a block when it allocates it, so a fresh lookup also finds the blocks
        admissions earlier in this step are computing. The simulator's rule
        (`rules.same_step_hit_blocks`) takes them only where the policy's tokens still fit after
        them: a policy that asked for all that is left recomputes them instead. Blocks the fresh
        run finds free (cached before this step, but not in the boundary hit) end the run, as the
        simulator counts only the blocks its decision registered."""
        # `available`: the request's full blocks after the hit, a bound on what the fresh lookup
        # below finds (it runs only when the policy's tokens leave room for one of them)
        bs, hit = self.block_size, len(group) * self.block_size
        room = same_step_hit_blocks(request.num_tokens // bs - len(group), request.num_tokens, hit,
                                    self._kvsched_caps.get(request.request_id, 0), bs)
        if not room:
            return []
        fresh = super()._get_local_prefix_cache_hit(request)[0].blocks[0]
        if len(fresh) <= len(group) or any(a is not b for a, b in zip(fresh, group)):
            return []
        more = []
        for block in fresh[len(group):len(group) + room]:
            if not block.ref_cnt:
                break
            more.append(block)
        return more

    # ------------------------------------------------------------------ one step
    def schedule(self, *args, **kwargs):
        if self._kvsched_blocked:
            self._kvsched_promote_blocked()
        residents = self._kvsched_sync()
        if self._kvsched_hits:
            self._kvsched_hits, self._kvsched_hit_blocks = {}, {}
        self._kvsched_hit_shrunk: dict[str, int] = {}
        view = self._kvsched_view(residents)
        decision = self.kvsched_policy.schedule(view)
        self.kvsched_wake_time = decision.wake_time
        plan = self._kvsched_plan(decision, view, residents)
        if plan.gaps and self.kvsched_strict:
            raise RuntimeError("kvsched: the engine cannot carry out the decision: " + "; ".join(plan.gaps))
        output = self._kvsched_execute(plan, args, kwargs)
        # Equal dicts (one comparison in C) leave nothing for the per-request checks to find.
        if output.num_scheduled_tokens != plan.tokens:
            self._kvsched_token_gaps(plan, output)
        for rid, tokens in self._kvsched_hit_shrunk.items():
            plan.gaps.append(f"request {self._kvsched_ids[rid]}: its cache hit shrank to {tokens} tokens "
                             "(an earlier allocation of this step evicted a cached block of it)")
        self._kvsched_record(output, tuple(plan.gaps))
        if plan.gaps:
            logger.warning("kvsched step %d: %s", self._kvsched_step - 1, "; ".join(plan.gaps))
            if self.kvsched_strict:
                raise RuntimeError("kvsched: vLLM did not do what the policy decided: " + "; ".join(plan.gaps))
        return output

    def _kvsched_token_gaps(self, plan: _Plan, output) -> None:
        """The differences between the tokens the plan decided and those vLLM scheduled."""
        for rid, n in plan.tokens.items():
            got = output.num_scheduled_tokens.get(rid, 0)
            if got != n:
                plan.gaps.append(f"request {self._kvsched_ids[rid]}: vLLM scheduled {got} tokens, "
                                 f"the policy decided {n}")
        for rid in output.num_scheduled_tokens:
            if rid not in plan.tokens:
                plan.gaps.append(f"request {self._kvsched_ids[rid]}: scheduled by vLLM, not by the policy")

    def _kvsched_has_future_arrivals(self) -> bool:
        """A driver knows (`kvsched_has_future_arrivals`); a server guesses: more will come
        unless none has for ``kvsched_drain_after`` seconds (WAIT then runs its last, short
        batches instead of holding them until the next arrival)."""
        future = self.kvsched_has_future_arrivals
        if future is not None:
            return bool(future())
        drain = self.kvsched_drain_after
        return drain is None or self.kvsched_now() - self._kvsched_last_arrival < drain

    def _kvsched_view(self, residents: _Residents) -> EngineView:
        """The policy's view of this step; `residents`: `_kvsched_sync`'s."""
        oracle = _MaxTokensOracle(self._kvsched_by_id) if self.kvsched_policy.tags.clairvoyant else None
        # A policy without seats has its admissions past the last one deferred (`_kvsched_plan`):
        # the view says how many the engine admits, so it may stop its scan there.
        seats = self.max_num_active_reqs - len(self.running) if self._kvsched_seats_by_engine else None
        return EngineView(
            now=self.kvsched_now(), iteration=self._kvsched_iteration,
            waiting=ReadOnlyList(self._kvsched_waiting_views()), running=residents.views,
            kv_capacity_tokens=self._kvsched_capacity_blocks * self.block_size,
            kv_used_tokens=self._kvsched_used_blocks() * self.block_size, block_size=self.block_size,
            kv_convention=KVConvention.COMPUTED, max_num_batched_tokens=self.max_num_scheduled_tokens,
            separate_batching=False, has_future_arrivals=self._kvsched_has_future_arrivals(),
            oracle=oracle, max_num_admissions=seats, resident_tokens=residents.by_kid,
            block_refs=self._kvsched_block_refs if self._kvsched_caching else None)

    def _kvsched_plan(self, decision: Decision, view: EngineView, residents: _Residents | None = None) -> _Plan:
        """The part of the decision vLLM can carry out; the rest becomes gaps.

        A resident request's entry that fits takes the short path (the block arithmetic of
        `resident_extra_blocks` on vLLM's own counts): a step schedules up to max_num_seqs of
        them. Everything else, and every refusal (for its message), takes the general path.
        When the decision starts with every resident and all its uncomputed tokens, and they fit
        (`_serves_residents_in_full`: the common step of decodes), the short path would take each
        of them: they are taken at once from `residents` (None: entry by entry). A test ties the
        two."""
        by_kid = self._kvsched_requests
        plan = _Plan([], {}, [], [])
        free = view.num_free_blocks
        for kid in decision.evict:
            request = by_kid.get(kid)
            if request is None or request.status != RequestStatus.RUNNING or request in plan.evict:
                plan.gaps.append(f"evict {kid}: not a running request")
                continue
            plan.evict.append(request)
        holders = BlockHolders(view.block_refs, self.block_size) if view.block_refs is not None else None
        if holders is None:
            free += self._kvsched_freed_blocks(plan.evict)
        else:       # an admission of this step may share blocks with an evicted request
            free += sum(holders.evict(self._kvsched_states[r.request_id].view) for r in plan.evict)
        evicted = {r.request_id for r in plan.evict}
        budget = self.max_num_scheduled_tokens
        seats = self.max_num_active_reqs - (len(self.running) - len(plan.evict))
        tokens, running, block = plan.tokens, RequestStatus.RUNNING, self.block_size
        entries = decision.num_tokens.items()
        if residents is not None and not plan.evict and _serves_residents_in_full(entries, residents, budget, free):
            tokens.update(residents.by_rid)
            budget -= residents.num_tokens
            free -= residents.need
            entries = itertools.islice(entries, len(residents.by_rid), None)
        for kid, n in entries:
            request = by_kid.get(kid)
            if request is not None and request.status is running and type(n) is int and 1 <= n <= budget:
                rid, computed = request.request_id, request.num_computed_tokens
                if n <= request.num_tokens - computed and not (evicted and rid in evicted):
                    need = resident_extra_blocks(computed, n, block)
                    if need <= free:
                        tokens[rid] = n
                        budget -= n
                        free -= need
                        continue
            if request is None or request.request_id in evicted or not (
                    request.status == RequestStatus.RUNNING or request.status in _WAITING):
                plan.gaps.append(f"request {kid}: not schedulable")
                continue
            rv = self._kvsched_states[request.request_id].view
            waiting = request.status != RequestStatus.RUNNING
            need = (0 if not (type(n) is int and n >= 1) else
                    holders.waiting_need(rv, n) if waiting and holders is not None
                    else view.extra_blocks(rv, n))
            problem = (f"{n!r} tokens, expected 1..{rv.num_uncomputed_tokens}"
                       if not (isinstance(n, int) and 1 <= n <= rv.num_uncomputed_tokens) else
                       f"{n} tokens over the budget left ({budget})" if n > budget else
                       f"needs {need} blocks, {free} free" if need > free else None)
            if problem is None and waiting and self.scheduler_reserve_full_isl:
                problem = self._kvsched_full_input_problem(request, rv, view, free, holders)
            if problem is None and waiting and seats <= 0:
                if self._kvsched_seats_by_engine:       # the engine's rule, in the policy's order
                    self.kvsched_num_seat_deferred += 1
                    continue
                problem = f"no seat left (max_num_seqs={self.max_num_active_reqs})"
            if problem:
                plan.gaps.append(f"request {kid}: {problem}")
                continue
            plan.tokens[request.request_id] = n
            budget -= n
            free -= need
            if waiting:
                plan.admit.append(request)
                seats -= 1
                if holders is not None:
                    holders.admit(rv)
        return plan

    def _kvsched_full_input_problem(self, request: Request, rv: ServedRequestView, view: EngineView,
                                    free: int, holders: BlockHolders | None = None) -> str | None:
        """vLLM's ``scheduler_reserve_full_isl``, under a policy that has it (`full_input_rule`:
        the ``vllm`` policy, on by default): a waiting request is admitted only if its whole
        input fits in the free blocks, whatever the chunk (less the blocks of its cache hit that
        resident requests, or an earlier admission of this step, hold). vLLM would refuse it and
        stop admitting for this step (its loop breaks), so the plan drops it here and the
        admissions after it still run. (The watermark of vLLM 0.32's allocation is 0.)"""
        full = min(request.num_tokens, self._kvsched_max_model_len)
        blocks = (view.blocks(full) - rv.cache_hit()[1] if holders is None
                  else holders.full_input_blocks(rv, full))
        if blocks > free:
            return (f"its whole input ({full} tokens, {blocks} blocks) must fit "
                    f"(scheduler_reserve_full_isl), {free} blocks free")
        return None

    def _kvsched_execute(self, plan: _Plan, args, kwargs):
        """Preempt, then run the base schedule() restricted to the plan."""
        now = time.monotonic()
        for request in plan.evict:
            self.running.remove(request)
            self._preempt_request(request, now)
        names = [name for name in _WAITING_QUEUES if hasattr(self, name)]
        queues = [getattr(self, name) for name in names]
        if plan.admit:
            self._kvsched_take(names, plan.admit)
        # The admissions go to the plain waiting queue, the others are left empty; the base
        # loop then admits exactly the plan's requests, in the plan's order.
        for name in names:
            setattr(self, name, create_request_queue(self.policy))
        for request in plan.admit:
            self.waiting.add_request(request)
        self._kvsched_caps = plan.tokens
        try:
            return super().schedule(*args, **kwargs)
        finally:
            self._kvsched_caps = None
            leftovers = [list(getattr(self, name)) for name in names]
            for name, queue, left in zip(names, queues, leftovers):
                setattr(self, name, queue)
                if left:        # prepend_requests reverses: keep the leftovers' order
                    self._kvsched_home(queue, name, left)

    def _kvsched_take(self, names: list[str], admit: list[Request]) -> None:
        """Take the admissions out of their queues: kv_holding_waiting holds the requests that
        hold KV blocks, waiting the others (the base rule, `_enqueue_waiting_request`); a queue
        of a later vLLM (async_kv_waiting) is scanned."""
        holding = [r for r in admit if self._holds_kv_blocks(r)] if "kv_holding_waiting" in names else []
        plain = [r for r in admit if r not in holding] if holding else admit
        if holding:
            _remove(self.kv_holding_waiting, holding)
        others = [name for name in names if name not in ("waiting", "kv_holding_waiting")]
        if others:
            ids = {r.request_id for r in plain}
            for name in others:
                queue = getattr(self, name)
                found = [r for r in queue if r.request_id in ids]
                if found:
                    _remove(queue, found)
                    ids -= {r.request_id for r in found}
            plain = [r for r in plain if r.request_id in ids]
        if plain:
            added = self._kvsched_added
            _remove(self.waiting, plain, lambda r: added.get(r.request_id, -1))

    def _kvsched_home(self, queue, name: str, left: list) -> None:
        """Requests the base loop left in a swapped queue go back to their queue's front; an
        admission left in the plain queue that holds KV blocks goes back to the queue it came
        from (the base scheduler's own rule, `_enqueue_waiting_request`)."""
        if name == "waiting" and hasattr(self, "kv_holding_waiting"):
            holding = [r for r in left if self._holds_kv_blocks(r)]
            if holding:
                self.kv_holding_waiting.prepend_requests(reversed(holding))
                left = [r for r in left if not self._holds_kv_blocks(r)]
        if left:
            queue.prepend_requests(reversed(left))


def _remove(queue, requests: list[Request], position: Callable[[Request], int] | None = None) -> None:
    """Take `requests` out of a waiting queue. vLLM's FCFS queue is a deque, whose own removals
    compare each request through rich comparison in Python (``remove``, about 70 ns a request
    passed) or rebuild the queue in Python (``remove_requests``), a few hundred µs with 2,000
    queued: here the requests at the head are popped (FCFS admissions), the others found by
    bisection on `position` (the order requests were added in, which the queue keeps unless vLLM
    put some back at its front: each find is checked, by identity) or else by identity in C
    (``list.index`` over the ids). Other queues (vLLM's priority heap) use their own
    ``remove_requests``."""
    if not isinstance(queue, deque):
        queue.remove_requests(requests)
        return
    targets = {id(r) for r in requests}
    while targets and queue and id(queue[0]) in targets:
        targets.discard(id(queue.popleft()))
    if not targets:
        return
    found = None
    if position is not None:
        found = []
        for request in requests:
            if id(request) in targets:
                i = bisect.bisect_left(queue, position(request), key=position)
                if i == len(queue) or queue[i] is not request:
                    found = None            # the queue is out of order here: find them by identity
                    break
                found.append(i)
    if found is None:
        ids = list(map(id, queue))
        found = [ids.index(t) for t in targets]
    for i in sorted(found, reverse=True):
        del queue[i]
