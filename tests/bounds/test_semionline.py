"""Semi-online exact solver (all requests at 0) against brute force and the IP."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kvsched.bounds.bruteforce import solve
from kvsched.bounds.instance import Instance
from kvsched.bounds.ip import solve_ip
from kvsched.bounds.plan import Plan, check_plan
from kvsched.bounds.semionline import solve_semionline


@st.composite
def zero_instances(draw, max_n=6, prompts="any"):
    n = draw(st.integers(1, max_n))
    M = draw(st.integers(5, 14))
    if prompts == "equal":
        s = [draw(st.integers(1, 3))] * n
    else:
        s = [draw(st.integers(1, 3)) for _ in range(n)]
    o = [draw(st.integers(1, max(1, min(6, M - si)))) for si in s]
    if prompts == "monotone":      # longer outputs come with longer prompts
        s, o = sorted(s), sorted(o)
    assume(all(si + oi <= M for si, oi in zip(s, o)))
    return Instance.make(s, o, M)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["any", "equal", "monotone"]).flatmap(lambda p: zero_instances(prompts=p)))
def test_semionline_equals_brute_force(inst):
    value, starts, status = solve_semionline(inst, time_limit=30)
    assert status == "optimal"
    assert value == solve(inst)[0]
    assert check_plan(inst, Plan.from_array(starts)) == value


def test_semionline_matches_ip_on_equal_prompts():
    rng = np.random.default_rng(5)
    for _ in range(3):
        M = 20
        o = rng.integers(1, 15, 8)
        inst = Instance.make([3] * 8, o, M)
        value, starts, status = solve_semionline(inst, time_limit=30)
        res = solve_ip(inst, time_limit=30, windows=True)
        assert status == res.status == "optimal"
        assert value == res.objective


def test_semionline_rejects_staggered_arrivals():
    with pytest.raises(ValueError, match="same time"):
        solve_semionline(Instance.make([1, 1], [2, 2], 10, [0, 1]))


def test_identical_requests_hand_worked():
    # M = 6, three requests (s=1, o=2): rounds hold 2, 3. Two fit together (2+2, 3+3 = 6);
    # the third starts when they finish (or overlaps: 3 + 3 + 2 > 6): c = 2, 2, 4 -> total 8.
    value, starts, status = solve_semionline(Instance.make([1, 1, 1], [2, 2, 2], 6), time_limit=5)
    assert (value, status) == (8.0, "optimal")
    assert sorted(starts.tolist()) == [0, 0, 2]


@st.composite
def released_instances(draw):
    n = draw(st.integers(1, 5))
    M = draw(st.integers(5, 12))
    s = [draw(st.integers(1, 3)) for _ in range(n)]
    o = [draw(st.integers(1, max(1, min(5, M - si)))) for si in s]
    a = [draw(st.sampled_from([0, 0, 1, 2, 3.5, 6])) for _ in range(n)]
    return Instance.make(s, o, M, a)


@settings(max_examples=25, deadline=None)
@given(released_instances())
def test_chronological_search_with_releases_equals_brute_force(inst):
    from kvsched.bounds.chrono import solve_chronological
    value, starts, status = solve_chronological(inst, time_limit=30)
    assert status == "optimal"
    if inst.is_integral():
        assert value == solve(inst)[0]
    else:   # whole-round starts: compare with the IP, which has the same restriction
        assert value == solve_ip(inst, time_limit=30).objective
    assert check_plan(inst, Plan.from_array(starts)) == pytest.approx(value)


def test_srpt_bound_hand_worked():
    from kvsched.bounds.chrono import srpt_total
    # jobs (release, length, tail): A(0, 4, 1), B(1, 1, 0). SRPT: A runs 0-1, B 1-2, A 2-5.
    # completions minus tails: B 2 - 0 = 2, A 5 - 1 = 4 -> 6. A block [2, 4) delays A to 7 -> 8.
    assert srpt_total([(0, 4, 1), (1, 1, 0)], []) == 6
    assert srpt_total([(0, 4, 1), (1, 1, 0)], [(2, 4)]) == 8
