"""Eviction semantics (`Simulator(eviction=...)`): recompute (vLLM) and restart (the theory
papers), hand-worked round by round."""

from __future__ import annotations

import numpy as np
import pytest

from kvsched import LinearCost, Simulator, UnitTime
from kvsched.engine import rules
from kvsched.engine.rules import Eviction
from kvsched.policies import make
from kvsched.workload.synthetic import Workload

# Three requests at t = 0, prompt 2, output 4; KV capacity 8 tokens (block 1), `vllm` (victim: the
# last admitted). Under restart, round by round (tokens scheduled; KV after):
#  1 {0:2, 1:2, 2:2}  KV 6   every request emits token 1
#  2 {0:1, 1:1}       KV 6   r2 cannot grow: evicted (restart: its 1 token discarded)
#  3 {0:1, 1:1}       KV 8   tokens 3
#  4 {0:1}            KV 5   r0 needs a block: r1 evicted (3 tokens discarded); r0 done at t = 4
#  5 {1:2, 2:2}       KV 4   the preempted, latest first, from their prompts again: token 1
#  6 {1:1, 2:1}       KV 6
#  7 {1:1, 2:1}       KV 8   tokens 3
#  8 {1:1}            KV 5   r1 needs a block: r2 evicted (3 more discarded); r1 done at t = 8
#  9-12 r2 alone: 2 + 1 + 1 + 1 tokens; done at t = 12
# Recomputed tokens (below the high-water mark): r1 2+1+1 (its high water was 4), r2 2 (high
# water 2), then 2+1+1 (high water 4).
RESTART_ROUNDS = [({0: 2, 1: 2, 2: 2}, (), 6), ({0: 1, 1: 1}, (2,), 6), ({0: 1, 1: 1}, (), 8),
                  ({0: 1}, (1,), 5), ({1: 2, 2: 2}, (), 4), ({1: 1, 2: 1}, (), 6), ({1: 1, 2: 1}, (), 8),
                  ({1: 1}, (2,), 5), ({2: 2}, (), 2), ({2: 1}, (), 3), ({2: 1}, (), 4), ({2: 1}, (), 5)]
# Under recompute the same first four rounds, then r1 and r2 recompute their prompt and kept tokens
# in one step each: round 5 {1: 2 + 3, 2: 2 + 1}, r1 done at t = 5; r2 decodes to t = 7.
RECOMPUTE_ROUNDS = RESTART_ROUNDS[:4] + [({1: 5, 2: 3}, (), 8), ({2: 1}, (), 4), ({2: 1}, (), 5)]


def _workload() -> Workload:
    return Workload.build(np.zeros(3), np.array([2, 2, 2]), np.array([4, 4, 4]))


def _run(eviction, cost=UnitTime(), fast=True):
    sim = Simulator(cost, 8, eviction=eviction, fast=fast, record_iterations=True, record_token_gaps=True)
    return sim.run(_workload(), make("vllm"))


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
def test_restart_by_hand_under_unit_time(fast):
    r = _run("restart", fast=fast)
    assert [(it.num_tokens, it.evicted, it.kv_used_tokens) for it in r.iterations] == RESTART_ROUNDS
    assert list(r.finish_time) == [4.0, 8.0, 12.0]
    assert list(r.first_token_time) == [1.0, 1.0, 1.0]           # a restart does not move TTFT
    assert list(r.num_evictions) == [0, 1, 2]
    assert list(r.num_restarted_tokens) == [0, 3, 4]
    assert list(r.num_recomputed_tokens) == [0, 4, 6]
    assert list(r.total_computed_tokens) == [5, 9, 11]           # s + o - 1 + recomputed
    assert r.summary().num_restarted_tokens == 7
    # token gaps of each request's last generation: one round apart
    assert list(r.token_gaps) == [1.0] * 9


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
def test_recompute_by_hand_under_unit_time(fast):
    r = _run("recompute", fast=fast)
    assert [(it.num_tokens, it.evicted, it.kv_used_tokens) for it in r.iterations] == RECOMPUTE_ROUNDS
    assert list(r.finish_time) == [4.0, 5.0, 7.0]
    assert r.num_restarted_tokens is None and r.summary().num_restarted_tokens == 0
    assert list(r.num_recomputed_tokens) == [0, 4, 2]
    # r1: tokens at 1, 2, 3, then its 4th after the recompute at 5; r2: 1, then 5, 6, 7
    assert list(r.token_gaps) == [1.0, 1.0, 1.0] + [1.0, 1.0, 2.0] + [4.0, 1.0, 1.0]


def test_restart_by_hand_under_linear_cost():
    """Same decisions; each round lasts 1 + 0.5 x (the scheduled requests' KV after it)."""
    r = _run("restart", cost=LinearCost(1.0, 0.5))
    assert [(it.num_tokens, it.evicted) for it in r.iterations] == [(t, e) for t, e, _ in RESTART_ROUNDS]
    assert [it.duration for it in r.iterations] == [4.0, 4.0, 5.0, 3.5, 3.0, 4.0, 5.0, 3.5, 2.0, 2.5, 3.0, 3.5]
    assert list(r.finish_time) == [16.5, 32.0, 43.0]


def test_the_eviction_rule():
    assert rules.outputs_after_eviction(5, Eviction.RECOMPUTE) == 5
    assert rules.outputs_after_eviction(5, Eviction.RESTART) == 0
    with pytest.raises(ValueError):
        Simulator(UnitTime(), 8, eviction="drop")


def test_restart_runs_go_to_the_python_engine():
    from kvsched.engine import compiled
    from kvsched.errors import ConfigError
    if not compiled.available():
        pytest.skip("numba is not installed")
    assert "recompute" in compiled.unsupported(Simulator(UnitTime(), 8, eviction="restart"), make("vllm"))
    with pytest.raises(ConfigError, match="eviction by recompute"):
        Simulator(UnitTime(), 8, eviction="restart", compiled=True).run(_workload(), make("vllm"))
    assert list(Simulator(UnitTime(), 8, eviction="restart").run(_workload(), make("vllm")).finish_time) == \
        [4.0, 8.0, 12.0]


def test_clearing_every_resident_livelocks_under_restart():
    """`alpha-protection` (clear_mode="all"): each overflow clears every resident; under restart
    they lose their progress, the same FCFS batch is admitted and overflows again. Three requests
    (prompt 2, output 8) in 12 KV tokens: 400 rounds finish none under restart; recompute keeps
    their progress and finishes them; clearing until the rest fit finishes them under restart."""
    from kvsched.engine.simulation import Simulation
    w = Workload.build(np.zeros(3), np.array([2, 2, 2]), np.array([8, 8, 8]))

    def finished(eviction, **params):
        s = Simulation(Simulator(UnitTime(), 12, eviction=eviction), w, make("alpha-protection", **params))
        while not s.done and s.iteration < 400:
            s.step()
        return s.num_done
    assert finished("restart") == 0
    assert finished("recompute") == 3
    assert finished("restart", clear_mode="until-fit") == 3
