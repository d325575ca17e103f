"""`KVSchedScheduler` as a server runs it, at the scheduler level (no model: vLLM's own scheduler
tests' way, `kvsched.integrations.vllm.harness`): malformed client arguments, fallback
predictions, structured-output waits, async scheduling, the engine's limits, bounded memory."""

from __future__ import annotations

import gc
import re
import tracemalloc

import pytest

from kvsched.policies.base import Policy

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def h(tiny_model):
    from kvsched.integrations.vllm import harness
    return harness


def _scheduler(h, tiny_model, policy="vllm", **kw):
    from kvsched.integrations.vllm.scheduler import KVSchedScheduler
    extra = {"kvsched_policy": policy, **kw.pop("extra", {})}
    return h.build_scheduler(h.HarnessConfig(tiny_model, additional_config=extra, **kw), KVSchedScheduler)


def _run(h, scheduler, max_steps=10_000):
    """Step until no request is left; returns {vLLM id: finish reason}."""
    finished = {}
    for _ in range(max_steps):
        if not scheduler.has_requests():
            return finished
        _, outputs = h.step(scheduler)
        for out in (o for batch in outputs.values() for o in batch.outputs):
            if out.finish_reason is not None:
                finished[out.request_id] = str(out.finish_reason)
    raise AssertionError(f"still {len(scheduler.requests)} requests after {max_steps} steps")


MALFORMED = [
    {"kvsched": "a string"}, {"kvsched": 7}, {"kvsched": ["x"]}, {"kvsched": {"bogus": 1}},
    {"kvsched_bogus": 1}, {"kvsched_predicted_output_tokens": "lots"},
    {"kvsched_predicted_output_tokens": -3}, {"kvsched_predicted_output_tokens": float("nan")},
    {"kvsched_predicted_lo": 1.5}, {"kvsched_predicted_lo": 9, "kvsched_predicted_hi": 2},
    {"kvsched_request_id": "abc"}, {"kvsched_type_id": True}, {"kvsched_arrival_time": "inf"},
    {"kvsched": {"predicted_hi": 3}, "kvsched_predicted_hi": 3},
]


@pytest.mark.parametrize("policy", ["vllm", "mcsf"])
def test_malformed_arguments_finish_that_request_with_an_error_and_the_rest_are_served(h, tiny_model, policy):
    scheduler = _scheduler(h, tiny_model, policy)
    good = [h.make_request(40, 6) for _ in range(4)]
    bad = [h.make_request(40, 6, extra_args=args) for args in MALFORMED]
    for request in [good[0], *bad[:7], good[1], *bad[7:], *good[2:]]:
        scheduler.add_request(request)
    finished = _run(h, scheduler)
    assert {r.request_id: finished[r.request_id] for r in bad} == {r.request_id: "error" for r in bad}
    assert {finished[r.request_id] for r in good} == {"length"}
    assert all(r.num_output_tokens == 6 for r in good)
    assert not scheduler._kvsched_refused and not scheduler._kvsched_states


def test_a_request_id_in_use_is_refused_and_one_that_is_free_again_is_taken(h, tiny_model):
    scheduler = _scheduler(h, tiny_model)
    first, clash = (h.make_request(40, 4, extra_args={"kvsched_request_id": 5}) for _ in range(2))
    scheduler.add_request(first)
    scheduler.add_request(clash)
    assert _run(h, scheduler) == {first.request_id: "length", clash.request_id: "error"}
    again = h.make_request(40, 4, extra_args={"kvsched_request_id": 5})
    scheduler.add_request(again)
    assert _run(h, scheduler) == {again.request_id: "length"}


def test_prediction_policies_take_the_fallback_for_requests_without_predictions(h, tiny_model):
    scheduler = _scheduler(h, tiny_model, "amin")
    plain = h.make_request(40, 5)
    given = h.make_request(40, 5, extra_args={"kvsched_predicted_lo": 2, "kvsched_predicted_hi": 9})
    scheduler.add_request(plain)
    scheduler.add_request(given)
    states = {r: scheduler._kvsched_states[r.request_id] for r in (plain, given)}
    assert (states[plain].predicted_lo, states[plain].predicted_hi, states[plain].predicted_output_tokens) \
        == (1, 5, 5.0)
    assert (states[given].predicted_lo, states[given].predicted_hi, states[given].predicted_output_tokens) \
        == (2, 9, 9.0)
    assert _run(h, scheduler) == {plain.request_id: "length", given.request_id: "length"}
    assert scheduler.kvsched_policy._lower == {}        # A_min's estimates freed at finish


def test_without_a_fallback_a_request_without_predictions_is_refused(h, tiny_model):
    scheduler = _scheduler(h, tiny_model, "mcsf", extra={"kvsched_fallback": "none"})
    plain, point = h.make_request(40, 5), h.make_request(40, 5, extra_args={"kvsched_predicted_output_tokens": 5})
    given = h.make_request(40, 5, extra_args={"kvsched_predicted_output_tokens": 5, "kvsched_predicted_lo": 4,
                                              "kvsched_predicted_hi": 6})
    for request in (plain, point, given):
        scheduler.add_request(request)
    assert _run(h, scheduler) == {plain.request_id: "error", point.request_id: "error",
                                  given.request_id: "length"}


def test_a_request_the_policy_cannot_serve_is_refused_as_it_arrives(h, tiny_model, caplog):
    """WAIT needs each request's type: one without, or with a type the thresholds do not have,
    is refused with the reason (it would raise in the policy at every step and stop the engine)."""
    scheduler = _scheduler(h, tiny_model, "wait:thresholds=1/1")
    scheduler.kvsched_has_future_arrivals = lambda: False           # WAIT flushes its last batch
    untyped, typed = h.make_request(40, 3), h.make_request(40, 3, extra_args={"kvsched_type_id": 1})
    unknown = h.make_request(40, 3, extra_args={"kvsched_type_id": 2})
    for request in (untyped, typed, unknown):
        scheduler.add_request(request)
    assert _run(h, scheduler) == {untyped.request_id: "error", typed.request_id: "length",
                                  unknown.request_id: "error"}
    assert "has type_id None; expected a type id 0..1" in caplog.text
    assert "has type_id 2; expected a type id 0..1" in caplog.text


def test_async_scheduling_is_refused_at_start_with_how_to_turn_it_off(h, tiny_model):
    with pytest.raises(ValueError, match="does not support async scheduling: start vLLM with --no-async-scheduling"):
        _scheduler(h, tiny_model, async_scheduling=True)


def test_the_policy_plans_with_the_engine_limits(h, tiny_model):
    scheduler = _scheduler(h, tiny_model, "vllm", max_num_seqs=3, max_num_batched_tokens=64,
                           extra={"kvsched_trace_keep": 4})
    policy = scheduler.kvsched_policy
    assert (policy.max_num_seqs, policy.max_num_batched_tokens, policy.full_prompt_must_fit) == (3, 64, True)
    for _ in range(10):
        scheduler.add_request(h.make_request(30, 8))
    seen = []
    while scheduler.has_requests():
        output, _ = h.step(scheduler)
        assert not scheduler.kvsched_trace[-1].gaps          # nothing the engine had to cut
        seen.append(len(output.num_scheduled_tokens))
    assert max(seen) == 3


class _ReadyGrammar:
    """A compiled grammar that accepts every token (the scheduler only asks it these)."""

    def accept_tokens(self, request_id, tokens):
        return True

    def is_terminated(self):
        return False

    def validate_tokens(self, tokens):
        return tokens


def _structured(h):
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams
    params = SamplingParams(max_tokens=4, ignore_eos=True,
                            structured_outputs=StructuredOutputsParams(choice=["yes", "no"]))
    return h.make_request(20, 4, sampling_params=params)


def test_structured_output_requests_wait_for_their_grammar_then_run_or_fail(h, tiny_model):
    from vllm.v1.request import RequestStatus
    scheduler = _scheduler(h, tiny_model)
    ready, broken, plain = _structured(h), _structured(h), h.make_request(20, 4)
    for request in (ready, broken, plain):
        scheduler.add_request(request)
    assert ready.status == RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR
    h.step(scheduler)                                   # grammars still compiling: they wait
    assert ready.num_computed_tokens == 0 and plain.num_computed_tokens == 20
    ready.structured_output_request.grammar = _ReadyGrammar()
    broken.structured_output_request.grammar = RuntimeError("bad grammar")
    assert _run(h, scheduler) == {ready.request_id: "length", broken.request_id: "error",
                                  plain.request_id: "length"}
    assert ready.num_output_tokens == 4


@pytest.mark.parametrize("keep", [None, 256])
def test_serving_memory_stays_flat_over_2000_requests(h, tiny_model, keep):
    """Per-request state is freed at finish, and the trace is off (the default) or a bounded
    ring (``kvsched_trace_keep``)."""
    extra = {} if keep is None else {"kvsched_trace_keep": keep}
    scheduler = _scheduler(h, tiny_model, "amin", num_blocks=256, max_num_seqs=32, extra=extra)

    def serve(n):
        for _ in range(n):
            scheduler.add_request(h.make_request(24, 3))
        _run(h, scheduler)
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    # Equal rounds, so that dicts reach the same high water in each, after the trace ring is
    # full (its records hold request ids): a leak shows as growth from round to round.
    tracemalloc.start()
    try:
        serve(250)
        while len(scheduler.kvsched_trace) < (keep or 0):
            serve(250)
        serve(250)
        memory = [serve(250) for _ in range(8)]         # 2,000 requests
    finally:
        tracemalloc.stop()
    assert len(scheduler.kvsched_trace) == (keep or 0)
    assert not (scheduler._kvsched_states or scheduler._kvsched_by_id or scheduler._kvsched_ids)
    assert scheduler.kvsched_policy._lower == {}
    assert max(memory) - memory[0] < 64 * 1024, memory


def test_the_trace_keeps_what_it_is_told(h, tiny_model, tmp_path):
    """Off by default (no record built); a ring of N keeps the last N steps; ``all`` every one;
    a file gets every step as a JSON line, with or without a ring."""
    import json
    counts = {}
    for name, extra in (("default", {}), ("ring", {"kvsched_trace_keep": 3}), ("all", {"kvsched_trace_keep": "all"}),
                        ("file", {"kvsched_trace": str(tmp_path / "trace.jsonl")})):
        scheduler = _scheduler(h, tiny_model, "vllm", extra=extra)
        for _ in range(4):
            scheduler.add_request(h.make_request(20, 5))
        steps = 0
        while scheduler.has_requests():
            h.step(scheduler)
            steps += 1
        counts[name] = [r.step for r in scheduler.kvsched_trace]
    assert counts == {"default": [], "ring": [steps - 3, steps - 2, steps - 1], "all": list(range(steps)), "file": []}
    lines = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(steps))


def test_a_server_drains_wait_once_no_request_has_arrived_for_a_while(h, tiny_model):
    """WAIT holds a lone request for a batch of its type while more may come: a server says
    none will once ``kvsched_drain_after`` seconds pass without an arrival (``none``: never)."""
    served = {}
    for drain in (5, "none"):
        clock = [0.0]
        scheduler = _scheduler(h, tiny_model, "wait:thresholds=2", extra={"kvsched_drain_after": drain})
        scheduler.kvsched_clock = lambda: clock[0]
        lone = h.make_request(40, 3, extra_args={"kvsched_type_id": 0})
        scheduler.add_request(lone)
        clock[0] = 4.9
        for _ in range(20):
            h.step(scheduler)
        held = lone.num_output_tokens
        clock[0] = 5.0
        for _ in range(20):
            h.step(scheduler)
        served[drain] = (held, lone.num_output_tokens)
    assert served == {5: (0, 3), "none": (0, 0)}


@pytest.mark.parametrize("key, value, expected", [
    ("kvsched_drain_after", "soon", "kvsched_drain_after: expected seconds >= 0 or 'none', got 'soon'"),
    ("kvsched_drain_after", -1, "kvsched_drain_after: expected seconds >= 0 or 'none', got -1"),
    ("kvsched_trace_keep", "lots", "kvsched_trace_keep: expected 'all' or a number of steps >= 0, got 'lots'"),
    ("kvsched_trace_keep", -2, "kvsched_trace_keep: expected 'all' or a number of steps >= 0, got -2"),
    ("kvsched_fallback", "guess", "kvsched_fallback: expected 'max-tokens', 'naive:lo=L,hi=H' or 'none', got 'guess'"),
    ("kvsched_seed", "abc", "kvsched_seed: expected an integer, got 'abc'"),
    ("kvsched_seed", 1.5, "kvsched_seed: expected an integer, got 1.5"),
    ("kvsched_policy", "nope", "unknown policy 'nope'"),
    ("kvsched_strict", "maybe", "kvsched_strict: expected 1/0, true/false, yes/no or on/off, got 'maybe'"),
    ("kvsched_trace", "/nonexistent/trace.jsonl", "kvsched_trace: cannot write '/nonexistent/trace.jsonl': "),
])
def test_a_bad_server_setting_stops_the_start_with_what_was_expected(h, tiny_model, key, value, expected):
    from kvsched.errors import ConfigError
    with pytest.raises((ValueError, ConfigError), match=re.escape(expected)):
        _scheduler(h, tiny_model, "mcsf", extra={key: value})


def test_the_front_end_check_refuses_what_the_engine_would_refuse(h):
    """`KVSchedArgsCheck.validate_params` (--logits-processors) raises ValueError, vLLM's 400."""
    from vllm import SamplingParams

    from kvsched.integrations.vllm.validation import KVSchedArgsCheck
    for args in MALFORMED:
        with pytest.raises(ValueError, match="^kvsched arguments: "):
            KVSchedArgsCheck.validate_params(SamplingParams(max_tokens=4, extra_args=args))
    for args in (None, {"kvsched_predicted_output_tokens": 9}, {"kvsched": {"type_id": 1}}, {"seed_x": 1}):
        KVSchedArgsCheck.validate_params(SamplingParams(max_tokens=4, extra_args=args))


def _serve_with_seats(h, tiny_model, policy, told: bool, max_num_seqs=3):
    """Serve a fixed set of requests (some predicted too short: evictions) with `max_num_seqs`
    seats and 7 KV blocks of 32 tokens; `told=False` hides the seats from the policy (the view's ``max_num_admissions``)."""
    import dataclasses
    scheduler = _scheduler(h, tiny_model, policy, max_num_seqs=max_num_seqs, num_blocks=8,
                           extra={"kvsched_trace_keep": "all"})
    if not told:
        view = scheduler._kvsched_view
        scheduler._kvsched_view = lambda running: dataclasses.replace(view(running), max_num_admissions=None)
    lengths = [(60, 20, 1), (30, 6, 6), (58, 12, 2), (70, 3, 5), (20, 9, 2), (45, 4, 4), (61, 10, 1),
               (33, 2, 7), (90, 5, 5), (12, 8, 3), (50, 2, 2), (25, 6, 9), (64, 3, 1)]
    requests = [h.make_request(p, o, extra_args={"kvsched_predicted_output_tokens": g,
                                                 "kvsched_predicted_lo": 1, "kvsched_predicted_hi": max(o, g)})
                for p, o, g in lengths]
    for request in requests:
        scheduler.add_request(request)
    while scheduler.has_requests():
        h.step(scheduler)
        assert not scheduler.kvsched_trace[-1].gaps
        assert len(scheduler.running) <= max_num_seqs
    assert all(r.num_output_tokens == o for r, (_, o, _) in zip(requests, lengths))
    steps = [(r.num_tokens, r.preempted, r.kv_used_blocks) for r in scheduler.kvsched_trace]
    return steps, scheduler.kvsched_num_seat_deferred


@pytest.mark.parametrize("policy", ["mcsf", "mcsf:rule=skip", "amin"])
def test_a_policy_without_seats_has_its_admissions_past_the_last_seat_deferred_not_cut(h, tiny_model, policy):
    """Told the seats left, the future-memory policies stop their scan there; not told, they
    propose more and the adapter defers the rest (the engine's rule, not a gap). vLLM schedules
    the same batches, step by step, either way."""
    told, told_deferred = _serve_with_seats(h, tiny_model, policy, told=True)
    blind, blind_deferred = _serve_with_seats(h, tiny_model, policy, told=False)
    assert blind_deferred > 0 and told_deferred == 0
    assert told == blind
    if policy.startswith("mcsf"):       # (amin's intervals hold the truth: it never overflows)
        assert any(step[1] for step in told), "the points predicted too short should cause evictions"


def test_the_view_lists_waiting_requests_by_arrival_through_arrivals_and_admissions(h, tiny_model):
    scheduler = _scheduler(h, tiny_model, "vllm", max_num_seqs=1)
    for kid, arrival in ((10, 5.0), (11, 1.0), (12, 3.0), (13, 9.0)):
        scheduler.add_request(h.make_request(20, 3, extra_args={"kvsched_request_id": kid,
                                                                "kvsched_arrival_time": arrival}))
    assert [r.request_id for r in scheduler._kvsched_view(scheduler._kvsched_sync()).waiting] == [11, 12, 10, 13]
    h.step(scheduler)                                   # admits 11 (one seat)
    assert [r.request_id for r in scheduler._kvsched_view(scheduler._kvsched_sync()).waiting] == [12, 10, 13]
    scheduler.add_request(h.make_request(20, 3, extra_args={"kvsched_request_id": 14,
                                                            "kvsched_arrival_time": 2.0}))
    assert [r.request_id for r in scheduler._kvsched_view(scheduler._kvsched_sync()).waiting] == [14, 12, 10, 13]


class _ScriptedPolicy(Policy):
    """Returns the given decisions, one per step (kvsched ids), to put the adapter on the spot."""

    name = "scripted"

    def __init__(self, decisions):
        self._decisions = iter(decisions)

    def schedule(self, view):
        from kvsched.state import Decision
        return Decision(num_tokens=next(self._decisions, {}))


def _admit_a_prompt_whose_whole_input_does_not_fit(h, tiny_model, built_with: str):
    """7 usable blocks of 32; B (100 tokens) holds 2 after step 1 and 3 after its 20 tokens of
    step 2. Then the policy admits A (200 tokens: 7 blocks, 4 free) with a 16-token chunk, then
    C. Returns the scheduler (built for `built_with`, then scripted) and step 2's tokens."""
    scheduler = _scheduler(h, tiny_model, built_with, num_blocks=8, max_num_batched_tokens=64,
                           extra={"kvsched_trace_keep": 1})
    scheduler.kvsched_policy = _ScriptedPolicy([{1: 64}, {1: 20, 0: 16, 2: 20}])
    for kid, prompt in ((0, 200), (1, 100), (2, 20)):
        scheduler.add_request(h.make_request(prompt, 2, extra_args={"kvsched_request_id": kid}))
    h.step(scheduler)
    output, _ = h.step(scheduler)
    return scheduler, {scheduler.kvsched_id(r): n for r, n in output.num_scheduled_tokens.items()}


def test_an_admission_whose_whole_input_does_not_fit_is_dropped_and_the_next_still_runs(h, tiny_model):
    """Under the `vllm` policy, vLLM's full-input rule refuses A, and would stop admitting
    there; the adapter drops A alone and C runs."""
    scheduler, scheduled = _admit_a_prompt_whose_whole_input_does_not_fit(h, tiny_model, "vllm")
    assert scheduled == {1: 20, 2: 20}
    (gap,) = scheduler.kvsched_trace[-1].gaps
    assert gap.startswith("request 0: its whole input (200 tokens, 7 blocks) must fit "
                          "(scheduler_reserve_full_isl), 4 blocks free")


def test_under_a_policy_without_the_full_input_rule_a_chunk_that_fits_is_admitted(h, tiny_model):
    """Under a policy built without ``full_prompt_must_fit`` (mcsf), vLLM's rule is off (it is
    the ``vllm`` policy's): A's 16-token chunk is admitted, as the simulator would."""
    scheduler, scheduled = _admit_a_prompt_whose_whole_input_does_not_fit(h, tiny_model, "mcsf")
    assert not scheduler.scheduler_reserve_full_isl
    assert scheduled == {1: 20, 0: 16, 2: 20}
    assert scheduler.kvsched_trace[-1].gaps == ()
