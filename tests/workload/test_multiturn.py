"""Multi-turn conversations and shared system prompts (kvsched.workload.multiturn): turn k's prompt is
turn k-1's prompt + answer + a new message, statistics near the cited LMSYS-Chat-1M figures, the
context limit, and properties over random settings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsched.errors import WorkloadError
from kvsched.workload.multiturn import (MAX_CONTEXT_TOKENS, MEAN_TURNS, THINK_TIME_MEAN, Conversations,
                                        conversation_roots, multiturn_workload, synthesize_multiturn,
                                        with_shared_prefix)
from kvsched.workload.synthetic import AllAtZero, Fixed, Poisson, Workload, default_workload


def check_structure(w: Workload, max_context: int) -> None:
    """Every follow-up extends its previous turn: same pieces, then the answer, then a new message."""
    seen_messages = set()
    for i in range(len(w)):
        mine = w.segments.of(i)
        message_id, message_len = mine[-1]
        assert message_id >= 0 and message_id not in seen_messages
        seen_messages.add(message_id)
        j = int(w.parent[i])
        if j < 0:
            assert mine == [(message_id, message_len)] and w.think_time[i] == 0
            continue
        assert j < i
        assert mine == w.segments.of(j) + [(-(j + 1), int(w.true_output_tokens[j])), (message_id, message_len)]
        assert w.num_prompt_tokens[i] == w.num_prompt_tokens[j] + w.true_output_tokens[j] + message_len
        assert w.arrival_time[i] == pytest.approx(w.arrival_time[j] + w.think_time[i])
        assert w.num_prompt_tokens[i] + w.true_output_tokens[i] <= max_context


def test_hand_sized_conversation_structure():
    w = multiturn_workload(40, rate=2.0, seed=3)
    assert len(w) == 40 and w.is_closed_loop
    check_structure(w, MAX_CONTEXT_TOKENS)


def test_turn_k_by_hand_with_fixed_lengths():
    # every turn: message 5 tokens, answer 3 tokens; one conversation of 3 turns (all at t=0)
    conv = Conversations(mean_turns=1000.0, user_message=Fixed(5), answer=Fixed(3), think_time_mean=0.0)
    w = synthesize_multiturn(3, AllAtZero(), np.random.default_rng(0), conv, id_start=100)
    assert w.num_prompt_tokens.tolist() == [5, 13, 21]
    assert w.true_output_tokens.tolist() == [3, 3, 3]
    assert w.parent.tolist() == [-1, 0, 1]
    assert [w.segments.of(i) for i in range(3)] == [
        [(100, 5)],
        [(100, 5), (-1, 3), (101, 5)],
        [(100, 5), (-1, 3), (101, 5), (-2, 3), (102, 5)],
    ]


def test_context_limit_ends_conversations():
    # 8 tokens per turn: with a limit of 20, turns 1 and 2 fit (8, 16), turn 3 (24) does not
    conv = Conversations(mean_turns=1000.0, user_message=Fixed(5), answer=Fixed(3), think_time_mean=1.0,
                         max_context_tokens=20)
    w = synthesize_multiturn(7, Poisson(1.0), np.random.default_rng(0), conv)
    assert w.meta["conversations"] == 4                 # 2 + 2 + 2 + 1 turns
    assert sorted(np.bincount(conversation_roots(w)).tolist())[-3:] == [2, 2, 2]
    assert (w.num_prompt_tokens + w.true_output_tokens).max() <= 20


def test_statistics_near_the_cited_lmsys_figures():
    w = multiturn_workload(200_000, rate=8.0, seed=0)
    roots = conversation_roots(w)
    num_conversations = int((w.parent < 0).sum())
    full = len(w) / num_conversations                   # the last conversation may be cut: negligible
    assert full == pytest.approx(MEAN_TURNS, rel=0.02)  # Zheng et al. Table 1: 2.0 turns
    messages = w.segments.lengths[w.segments.offsets[1:] - 1]
    assert messages.mean() == pytest.approx(69.5, rel=0.03)            # tokens per user prompt
    assert w.true_output_tokens.mean() == pytest.approx(214.5, rel=0.03)  # tokens per response
    follow = w.parent >= 0
    assert w.think_time[follow].mean() == pytest.approx(THINK_TIME_MEAN, rel=0.03)
    # first turns arrive at rate / MEAN_TURNS conversations per second
    starts = np.sort(w.arrival_time[~follow])
    assert (num_conversations - 1) / starts[-1] == pytest.approx(8.0 / MEAN_TURNS, rel=0.03)
    assert np.bincount(roots).max() >= 8                # a geometric tail, not a fixed count


def test_seeded_and_deterministic():
    assert multiturn_workload(300, seed=5) == multiturn_workload(300, seed=5)
    assert multiturn_workload(300, seed=5) != multiturn_workload(300, seed=6)


def test_rate_none_starts_every_conversation_at_zero():
    w = multiturn_workload(50, rate=None, seed=1, think_time_mean=0.0)
    assert np.all(w.arrival_time == 0)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"rate": -1.0}, "field 'rate'"),
    ({"rate": float("nan")}, "field 'rate'"),
    ({"think_time_mean": -1.0}, "field 'think_time'"),
    ({"think_time_mean": float("inf")}, "field 'think_time'"),
    ({"max_context_tokens": 1}, "field 'max_context_tokens'"),
    ({"max_context_tokens": 10.5}, "field 'max_context_tokens'"),
    ({"num_requests": 0}, "field 'num_requests'"),
])
def test_bad_settings(kwargs, fragment):
    with pytest.raises(WorkloadError, match=fragment):
        multiturn_workload(**{"num_requests": 10, **kwargs})


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 120), seed=st.integers(0, 2 ** 32), think=st.floats(0, 60),
       limit=st.integers(3100, 6000), mean_turns=st.floats(1, 6))
def test_structure_holds_for_any_setting(n, seed, think, limit, mean_turns):
    conv = Conversations(mean_turns=mean_turns, think_time_mean=think, max_context_tokens=limit)
    w = synthesize_multiturn(n, Poisson(3.0), np.random.default_rng(seed), conv)
    assert len(w) == n
    check_structure(w, limit)


# --------------------------------------------------------------------------- shared system prompts

def test_shared_prefix_on_independent_requests_by_hand():
    w = default_workload(6, seed=0)
    out = with_shared_prefix(w, 100, 1.0, np.random.default_rng(0))
    assert (out.num_prompt_tokens == w.num_prompt_tokens + 100).all()
    assert [out.segments.of(i) for i in range(6)] == [[(0, 100), (i + 1, int(w.num_prompt_tokens[i]))]
                                                      for i in range(6)]
    none = with_shared_prefix(w, 100, 0.0, np.random.default_rng(0))
    assert (none.num_prompt_tokens == w.num_prompt_tokens).all()
    assert [none.segments.of(i) for i in range(6)] == [[(i + 1, int(w.num_prompt_tokens[i]))] for i in range(6)]


def test_shared_prefix_fraction_and_meta():
    w = with_shared_prefix(default_workload(20_000, seed=0), 64, 0.3, np.random.default_rng(1))
    shared = w.segments.ids[w.segments.offsets[:-1]] == 0
    assert shared.mean() == pytest.approx(0.3, abs=0.02)
    assert w.meta["num_shared_prefix_requests"] == int(shared.sum())
    assert w.meta["shared_prefix_tokens"] == 64


def test_shared_prefix_by_conversation_keeps_follow_ups_extending_their_turns():
    base = multiturn_workload(400, seed=2)
    w = with_shared_prefix(base, 50, 0.5, np.random.default_rng(0))
    system_id = int(base.segments.ids.max()) + 1
    has = w.segments.ids[w.segments.offsets[:-1]] == system_id
    roots = conversation_roots(w)
    assert (has == has[roots]).all()                    # all turns of a conversation, or none
    assert 0.35 < has[w.parent < 0].mean() < 0.65
    assert (w.num_prompt_tokens == base.num_prompt_tokens + 50 * has).all()
    for i in np.flatnonzero(w.parent >= 0)[:50]:
        j = int(w.parent[i])
        assert w.segments.of(i)[:len(w.segments.of(j))] == w.segments.of(j)


@pytest.mark.parametrize("tokens, fraction, fragment", [
    (0, 0.5, "shared_prefix_tokens"), (True, 0.5, "shared_prefix_tokens"), (2.5, 0.5, "shared_prefix_tokens"),
    (8, 1.5, "shared_prefix_fraction"), (8, -0.1, "shared_prefix_fraction"),
    (8, float("nan"), "shared_prefix_fraction"),
])
def test_shared_prefix_bad_values(tokens, fraction, fragment):
    with pytest.raises(WorkloadError, match=fragment):
        with_shared_prefix(default_workload(5), tokens, fraction, np.random.default_rng(0))
