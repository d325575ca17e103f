"""Limited-preemption SRPT (TRAIL, Shahout et al., ICLR 2025, arXiv 2410.01035).

Hand-worked in the papers' model: UnitTime rounds, EMITTED convention (s + j while emitting token
j), block 1, exact predictions. R0 = (a 0, s 2, o 10), R1 = (a 2, s 9, o 2), M = 14. At round 2 R0
has generated 2 tokens and holds 4; it would hold 5 after the round, R1 needs 9 + 1 = 10: both do
not fit (15 > 14). R1's remaining length (2) is shorter than R0's (8).
"""

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from policy_helpers import finish, instances, paper_sim, run, workload

from kvsched.errors import ConfigError
from kvsched.policies import make
from kvsched.policies.trail import Trail

ROWS, ARRIVALS = [(2, 10), (9, 2)], [0, 2]


def _exact(rows, arrivals=None):
    return workload(rows, arrivals, predicted_output_tokens=[o for _, o in rows])


def test_a_young_request_is_preempted_for_a_shorter_one():
    # age 2 < 32: R1 takes R0's place at round 2 (R0 evicted), runs rounds 2-3; R0 recomputes at
    # round 4 (emitting token 3) and emits token 10 in round 11.
    result, _ = run(paper_sim(14), _exact(ROWS, ARRIVALS), make("trail"))
    assert finish(result) == [12, 4]
    assert result.num_evictions.tolist() == [1, 0]


def test_an_old_request_is_never_preempted():
    # age 2 >= limit 2 (or >= 0.1 × 10 predicted tokens): R0 keeps running to round 9; R1 waits
    # (R0's growing KV never leaves 10 free) and runs rounds 10-11.
    for policy in (make("trail", age_limit=2), make("trail", age_fraction=0.1)):
        result, _ = run(paper_sim(14), _exact(ROWS, ARRIVALS), policy)
        assert finish(result) == [10, 12]
        assert result.num_evictions.sum() == 0


def test_shortest_remaining_first_among_waiting():
    # M = 4, all at 0: A = (s 1, o 3), B = (s 1, o 1), C = (s 1, o 2). Round 0 in SRPT order: B (2),
    # C (2), A does not fit (2 + 2 + 2 > 4) and waits. Round 1: B is done, C grows to 3, A still does
    # not fit. A starts at round 2 and emits its 3rd token in round 4.
    rows = [(1, 3), (1, 1), (1, 2)]
    result, _ = run(paper_sim(4), _exact(rows), make("trail", age_limit=0))
    assert finish(result) == [5, 1, 2]


@dataclass(kw_only=True)
class _Audited(Trail):
    """Records, at each decision, protected residents evicted while a young one was kept."""

    def reset(self, *, seed=None):
        self.violations = []

    def schedule(self, view):
        decision = super().schedule(view)
        young_kept = [r for r in view.running if self.preemptible(r) and r.request_id in decision.num_tokens]
        old_evicted = [r for r in view.running if not self.preemptible(r) and r.request_id in decision.evict]
        if young_kept and old_evicted:
            self.violations.append((view.iteration, young_kept, old_evicted))
        return decision


@settings(max_examples=60, deadline=None)
@given(instances(max_requests=8))
def test_protected_requests_are_evicted_only_after_every_young_one(inst):
    rows, arrivals, capacity = inst
    policy = _Audited(age_limit=3)
    result, memory = run(paper_sim(capacity), _exact(rows, arrivals), policy)
    assert not policy.violations
    assert max(memory) <= capacity and (result.finish_time > 0).all()


def test_bad_parameters():
    with pytest.raises(ConfigError, match="age_limit"):
        make("trail", age_limit=-1)
    with pytest.raises(ConfigError, match="age_fraction"):
        make("trail", age_fraction=2.0)
