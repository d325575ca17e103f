"""`FastBatch` (the fast engine view's batch) is tied to `Batch`, the definition.

Random engine states (request states of every status, computed and generated counts, block sizes,
both KV conventions, token budgets) and random call sequences drive a `FastBatch` made by
`_FastEngineView.new_batch` and a plain `Batch` over a plain `SchedulerView` with the same fields,
on the same request objects. Every return value, every error (type and message) and, after every
call, every figure of the batch (free blocks, token budget, scheduled tokens, the tokens per
request, the evicted set, the `Decision`) must be equal, and every decision made must stay as it
was made (`FastBatch.decision` lends its dict: the batch copies it before a later change).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvsched.engine.fast_batch import FastBatch
from kvsched.engine.rules import KVConvention
from kvsched.engine.simulation import _EngineRequestView, _FastEngineView
from kvsched.state import Batch, RequestState, RequestView, SchedulerView, Status

class Opaque:
    """A request object without the engine's state behind it (no ``_s``): `FastBatch` falls back to
    `Batch`'s own methods for it."""

    def __init__(self, state: RequestState) -> None:
        self._view = RequestView(state)

    def __getattr__(self, name: str):
        if name == "_s":
            raise AttributeError(name)
        return getattr(self._view, name)


STATUSES = [Status.RUNNING] * 4 + [Status.WAITING] * 3 + [Status.FINISHED, Status.FUTURE, Status.REJECTED]


@st.composite
def engine_states(draw):
    """Requests in random states and a view over them (KV use: the residents' blocks plus some)."""
    block_size = draw(st.sampled_from([1, 2, 3, 16]))
    convention = draw(st.sampled_from(list(KVConvention)))
    requests = []
    for rid in range(draw(st.integers(1, 8))):
        prompt = draw(st.one_of(st.integers(1, 5), st.integers(1, 40)))
        outputs = draw(st.one_of(st.integers(0, 2), st.integers(0, 12)))
        status = draw(st.sampled_from(STATUSES))
        state = RequestState(rid, float(rid), prompt, outputs + draw(st.integers(1, 5)))
        state.status, state.num_output_tokens = status, outputs
        if status is Status.RUNNING:     # anything up to all known tokens (a decode: all but one)
            state.num_computed_tokens = draw(st.one_of(
                st.just(max(0, prompt + outputs - 1)), st.integers(0, prompt + outputs)))
        elif status is Status.FINISHED:
            state.num_computed_tokens = prompt + outputs
        view_type = draw(st.sampled_from([_EngineRequestView, _EngineRequestView, RequestView, Opaque]))
        requests.append(view_type(state))
    probe = SchedulerView(0.0, 0, (), (), 10**6, 0, block_size, convention, None)
    held = sum(probe.blocks(probe.kv_tokens(r)) for r in requests)
    capacity_blocks = held + draw(st.integers(0, 40))
    used_blocks = held + draw(st.integers(0, capacity_blocks - held))
    fields = dict(now=0.0, iteration=0,
                  waiting=tuple(r for r in requests if r.status is Status.WAITING),
                  running=tuple(r for r in requests if r.status is Status.RUNNING),
                  kv_capacity_tokens=capacity_blocks * block_size + draw(st.integers(0, block_size - 1)),
                  kv_used_tokens=used_blocks * block_size, block_size=block_size, kv_convention=convention,
                  max_num_batched_tokens=draw(st.one_of(st.none(), st.integers(1, 80))),
                  max_num_admissions=draw(st.one_of(st.none(), st.none(), st.integers(0, 3))))
    policy_budget = draw(st.one_of(st.none(), st.integers(0, 80)))
    return requests, fields, policy_budget


def tokens(max_value: int = 45):
    """A token count: mostly valid ones, some misuse (0, negative, a bool, a float)."""
    return st.one_of(st.integers(1, max_value), st.integers(1, 3), st.integers(-2, 0),
                     st.sampled_from([True, 1.0, 2.0]))


def calls(num_requests: int):
    index = st.integers(0, num_requests - 1)
    reserve = st.one_of(st.just(0), st.integers(0, 12))
    return st.lists(st.one_of(
        st.tuples(st.just("add"), index, tokens(), reserve),
        st.tuples(st.just("need"), index, tokens()),
        st.tuples(st.just("evict"), index),
        st.tuples(st.just("add_in_order"), st.lists(index, max_size=num_requests + 2),
                  st.integers(0, 3), st.one_of(st.none(), st.integers(0, 10)), st.integers(0, 3), reserve),
        st.tuples(st.just("decision"), st.one_of(st.none(), st.floats(0, 10))),
    ), min_size=1, max_size=40)


def figures(batch: Batch) -> tuple:
    return (batch.num_free_blocks, batch.token_budget, batch.admissions_left, batch.num_scheduled_tokens,
            batch.max_num_batched_tokens, dict(batch.num_tokens), list(batch.num_tokens),
            tuple(batch.evicted), batch.decision())


def call(batch: Batch, requests, op: tuple):
    """Run one call; its return value, or the error it raised (type and message)."""
    try:
        kind = op[0]
        if kind == "add":
            return batch.add(requests[op[1]], op[2], reserve_blocks=op[3])
        if kind == "need":
            return batch.need(requests[op[1]], op[2])
        if kind == "evict":
            return batch.evict(requests[op[1]])
        if kind == "add_in_order":
            _, order, start, stop, floor, reserve = op
            chosen = [requests[i] for i in order]
            stop = None if stop is None else min(max(stop, start), len(chosen))
            return batch.add_in_order(chosen, start, stop, min_free_blocks=floor, reserve_blocks=reserve)
        return batch.decision(op[1])
    except Exception as error:       # noqa: BLE001 - the error is the observable
        return ("raised", type(error), str(error))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_batch_answers_as_batch(data):
    requests, fields, policy_budget = data.draw(engine_states())
    fast = _FastEngineView(**fields).new_batch(policy_budget)
    plain = SchedulerView(**fields).new_batch(policy_budget)
    assert type(fast) is FastBatch and type(plain) is Batch
    assert figures(fast) == figures(plain)
    decisions = []          # every decision made, fast and plain: later calls must not change them
    for op in data.draw(calls(len(requests))):
        answers = call(fast, requests, op), call(plain, requests, op)
        assert answers[0] == answers[1], op
        assert figures(fast) == figures(plain), op
        decisions.append((fast.decision(), plain.decision()))
        if op[0] == "decision":
            decisions.append(answers)
    for fast_decision, plain_decision in decisions:
        assert fast_decision == plain_decision


def test_add_in_order_is_the_loop_of_adds():
    """`Batch.add_in_order` on a hand-worked case: it stops at the budget, then at the blocks."""
    def resident(rid, prompt, outputs):
        state = RequestState(rid, 0.0, prompt, 100)
        state.status, state.num_output_tokens = Status.RUNNING, outputs
        state.num_computed_tokens = prompt + outputs - 1
        return _EngineRequestView(state)

    # Block size 4: request 0 holds 4 tokens (full block: its decode needs a block), 1 holds 5.
    a, b, c = resident(0, 4, 1), resident(1, 5, 1), resident(2, 8, 1)
    fields = dict(now=0.0, iteration=0, waiting=(), running=(a, b, c), kv_capacity_tokens=24,
                  kv_used_tokens=20, block_size=4, kv_convention=KVConvention.COMPUTED,
                  max_num_batched_tokens=None)
    for view in (SchedulerView(**fields), _FastEngineView(**fields)):
        batch = view.new_batch(2)
        assert batch.add_in_order([a, b, c]) == 2 and dict(batch.num_tokens) == {0: 1, 1: 1}
        batch = view.new_batch()
        assert batch.add_in_order([a, b, c], min_free_blocks=1) == 1      # a took the last block
        assert batch.add_in_order([a, b, c], 1) == 2           # c needs a block: none is free
        assert dict(batch.num_tokens) == {0: 1, 1: 1} and batch.num_free_blocks == 0


def test_every_small_state_alone():
    """Every small request state, on its own (the arithmetic, exhaustively): each token count's
    `need`, `add` and `add_in_order` (with the budget cutting it) answer as `Batch`'s, both KV
    conventions, four block sizes, resident (any computed count) and waiting."""
    checked = 0
    for convention in KVConvention:
        for block_size in (1, 2, 3, 16):
            for prompt in range(1, 18):
                for outputs in range(0, 4):
                    known = prompt + outputs
                    for status, computed in [(Status.WAITING, 0), *((Status.RUNNING, c) for c in range(known))]:
                        state = RequestState(0, 0.0, prompt, outputs + 2)
                        state.status, state.num_output_tokens, state.num_computed_tokens = status, outputs, computed
                        request = _EngineRequestView(state)
                        fields = dict(now=0.0, iteration=0, waiting=(), running=(), kv_capacity_tokens=64 * block_size,
                                      kv_used_tokens=(63 - 2) * block_size, block_size=block_size,
                                      kv_convention=convention, max_num_batched_tokens=None)
                        fast_view, plain_view = _FastEngineView(**fields), SchedulerView(**fields)
                        for n in range(1, known - computed + 1):
                            fast, plain = fast_view.new_batch(), plain_view.new_batch()
                            assert fast.need(request, n) == plain.need(request, n)
                            assert fast.add(request, n) == plain.add(request, n)
                            assert figures(fast) == figures(plain)
                            fast, plain = fast_view.new_batch(n), plain_view.new_batch(n)
                            assert fast.add_in_order([request]) == plain.add_in_order([request])
                            assert figures(fast) == figures(plain)
                            checked += 1
    assert checked > 10_000
