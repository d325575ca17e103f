"""Every registered policy passes the conformance suite; broken policies fail it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from kvsched.policies import Policy, PolicyTags, make, registered
from kvsched.state import Decision
from kvsched.testing import check_policy

from policy_helpers import NEEDS_INPUT, SETUP, conformance_policies


def test_every_registered_policy_is_covered():
    for name in registered():
        assert name in NEEDS_INPUT or make(name, **SETUP.get(name, {}))


@pytest.mark.parametrize("policy_id, params", conformance_policies())
def test_registered_policy_passes_every_check(policy_id, params):
    results = check_policy(make(policy_id, **params))
    failed = [f"{r.name}: {r.detail}" for r in results if not r.passed]
    assert not failed, failed
    assert {r.name for r in results} >= {"interface", "well_formed", "view_unchanged", "feasible",
                                          "liveness", "tags_honest", "deterministic", "non_clairvoyant",
                                          "not_better_than_optimum"}


# ---------------------------------------------------------------- broken policies must be caught

@dataclass(kw_only=True)
class _Greedy(Policy):
    """Admits every waiting request whole and decodes every resident one (no memory check)."""

    name: ClassVar[str] = "test-greedy"

    def schedule(self, view):
        tokens = {r.request_id: r.num_uncomputed_tokens for r in view.running}
        tokens.update({r.request_id: r.num_tokens for r in view.waiting})
        return Decision(num_tokens=tokens)


@dataclass(kw_only=True)
class _Idle(Policy):
    name: ClassVar[str] = "test-idle"

    def schedule(self, view):
        return Decision()


@dataclass(kw_only=True)
class _FloatTokens(_Greedy):
    name: ClassVar[str] = "test-float"

    def schedule(self, view):
        decision = super().schedule(view)
        return Decision(num_tokens={k: float(v) for k, v in decision.num_tokens.items()})


@dataclass(kw_only=True)
class _OneAtATime(Policy):
    """Runs one request at a time to completion; `pick` chooses the next waiting request."""

    name: ClassVar[str] = "test-one-at-a-time"

    def pick(self, waiting):
        return waiting[0]

    def schedule(self, view):
        if view.running:
            r = view.running[0]
            return Decision(num_tokens={r.request_id: r.num_uncomputed_tokens})
        if not view.waiting:
            return Decision()
        r = self.pick(view.waiting)
        return Decision(num_tokens={r.request_id: r.num_tokens})


@dataclass(kw_only=True)
class _Cheater(_OneAtATime):
    """Longest true output first: reads what only the engine knows."""

    name: ClassVar[str] = "test-cheater"

    def pick(self, waiting):
        return max(waiting, key=lambda r: (r._s.true_output_tokens, -r.request_id))


@dataclass(kw_only=True)
class _Thrash(Policy):
    """Admits the head, then evicts it forever: never finishes anything."""

    name: ClassVar[str] = "test-thrash"

    def schedule(self, view):
        if view.running:
            return Decision(evict=tuple(r.request_id for r in view.running),
                            num_tokens={view.waiting[0].request_id: 1} if view.waiting else {})
        return Decision(num_tokens={view.waiting[0].request_id: 1}) if view.waiting else Decision()


@dataclass(kw_only=True)
class _Renamed(Policy):
    """Stores a parameter under a transformed value (breaks sklearn's verbatim rule)."""

    name: ClassVar[str] = "test-renamed"
    tags: ClassVar[PolicyTags] = PolicyTags()
    level: int = 1

    def __post_init__(self):
        self.level = self.level + 1

    def schedule(self, view):
        return _Greedy().schedule(view)


def _failed(policy) -> set[str]:
    return {r.name for r in check_policy(policy) if not r.passed}


def test_memory_blind_policy_fails_feasibility():
    assert "feasible" in _failed(_Greedy())


def test_idle_policy_fails_liveness():
    assert "liveness" in _failed(_Idle())


def test_float_token_counts_are_malformed():
    assert "well_formed" in _failed(_FloatTokens())


def test_reading_true_lengths_is_caught():
    assert "non_clairvoyant" in _failed(_Cheater())


def test_thrashing_policy_fails_liveness():
    assert "liveness" in _failed(_Thrash())


def test_parameters_must_be_stored_verbatim():
    assert "interface" in _failed(_Renamed())


@dataclass(kw_only=True)
class _Forgetful(_OneAtATime):
    """The order flips from run to run: `reset` forgets nothing."""

    name: ClassVar[str] = "test-forgetful"

    def __post_init__(self):
        self.runs = 0

    def reset(self, *, seed=None):
        self.runs += 1

    def pick(self, waiting):
        return waiting[-1] if self.runs % 2 else waiting[0]


@dataclass(kw_only=True)
class _FalselyStable(Policy):
    """Tagged event_stable, but admits only at even iterations: its decision changes between events."""

    name: ClassVar[str] = "test-falsely-stable"
    tags: ClassVar[PolicyTags] = PolicyTags(event_stable=True)

    def schedule(self, view):
        tokens = {r.request_id: r.num_uncomputed_tokens for r in view.running}
        free = view.num_free_blocks - sum(view.extra_blocks(r, tokens[r.request_id]) for r in view.running)
        head = view.waiting[0] if view.waiting else None
        if head is not None and view.iteration % 2 == 0 and view.extra_blocks(head, head.num_tokens) <= free:
            tokens[head.request_id] = head.num_tokens
        if head is not None and not tokens:
            tokens[head.request_id] = head.num_tokens if view.extra_blocks(head, head.num_tokens) <= free else 1
        return Decision(num_tokens=tokens)


def test_a_policy_whose_reset_forgets_nothing_is_not_deterministic():
    assert "deterministic" in _failed(_Forgetful())


def test_a_false_event_stable_tag_is_caught():
    results = {r.name: r for r in check_policy(_FalselyStable())}
    assert not results["tags_honest"].passed and "event_stable" in results["tags_honest"].detail
