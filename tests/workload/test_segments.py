"""PromptSegments and the Workload's token identity: hand-worked sorting with renumbered output
references and parents, head, with_arrivals, with_columns, ==, and validation errors naming rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsched.errors import WorkloadError
from kvsched.workload.segments import PromptSegments
from kvsched.workload.synthetic import Workload

P = PromptSegments.from_lists


def pieces(w: Workload) -> list[list[tuple[int, int]]]:
    return [w.segments.of(i) for i in range(len(w))]


# --------------------------------------------------------------------------- the CSR itself

def test_from_lists_of_and_num_tokens():
    seg = P([[(7, 100), (3, 50)], [(7, 60)], [(9, 1), (-1, 4), (2, 2)]])
    assert len(seg) == 3
    assert seg.offsets.tolist() == [0, 2, 3, 6]
    assert seg.of(2) == [(9, 1), (-1, 4), (2, 2)]
    assert seg.num_tokens().tolist() == [150, 60, 7]
    assert seg.num_pieces.tolist() == [2, 1, 3]
    assert seg.row_of_piece().tolist() == [0, 0, 1, 2, 2, 2]
    assert seg.offsets.dtype == seg.ids.dtype == seg.lengths.dtype == np.int64


def test_distinct_gives_one_fresh_id_per_request():
    seg = PromptSegments.distinct([5, 3, 8], start=10)
    assert [seg.of(i) for i in range(3)] == [[(10, 5)], [(11, 3)], [(12, 8)]]


def test_prepend_puts_the_piece_in_front_of_the_chosen_prompts():
    seg = P([[(1, 5)], [(2, 3), (-1, 2)], [(3, 8)]])
    out = seg.prepend(0, 100, [True, False, True])
    assert [out.of(i) for i in range(3)] == [[(0, 100), (1, 5)], [(2, 3), (-1, 2)], [(0, 100), (3, 8)]]


def test_permuted_renumbers_output_references():
    # rows: 0 = [(5, 10)], 1 = [(5, 10), (-1, 3), (7, 2)] (row 0's output), 2 = [(9, 4)]
    seg = P([[(5, 10)], [(5, 10), (-1, 3), (7, 2)], [(9, 4)]])
    out = seg.permuted([2, 0, 1])          # new 0 = old 2, new 1 = old 0, new 2 = old 1
    assert [out.of(i) for i in range(3)] == [[(9, 4)], [(5, 10)], [(5, 10), (-2, 3), (7, 2)]]


def test_head_keeps_the_first_prompts():
    seg = P([[(5, 10)], [(5, 10), (-1, 3)], [(9, 4)]])
    assert [seg.head(2).of(i) for i in range(2)] == [[(5, 10)], [(5, 10), (-1, 3)]]
    assert seg.head(2).ids.size == 3 and len(seg.head(0)) == 0


def test_equality_compares_the_pieces():
    assert P([[(1, 2)]]) == P([[(1, 2)]])
    assert P([[(1, 2)]]) != P([[(1, 3)]])
    assert P([[(1, 2)], [(1, 2)]]) != P([[(1, 2), (1, 2)]])


def test_memory_is_csr_int64_only():
    n = 1_000_000
    seg = PromptSegments.distinct(np.full(n, 50))
    assert seg.nbytes == 8 * (n + 1) + 16 * n          # offsets + (id, length) per piece


@pytest.mark.parametrize("offsets, ids, lengths, fragment", [
    ([1, 2], [1], [1], "start at 0"),
    ([0, 2, 1], [1, 2], [1, 1], "non-decreasing"),
    ([0, 2], [1], [1, 1], "expected all three equal"),
    ([0, 1], [1.5], [1], "ids: expected integers"),
])
def test_bad_csr_is_a_workload_error(offsets, ids, lengths, fragment):
    with pytest.raises(WorkloadError, match=fragment) as err:
        PromptSegments(offsets, ids, lengths)
    assert "field 'segments'" in str(err.value)


# --------------------------------------------------------------------------- in a workload

def _conversation():
    """Given order: A (t=2, prompt 10), B (t=0, prompt 4), C = A's follow-up (t=3): A's prompt, A's
    answer (row 0 of the given order: id -1), a message (7, 2)."""
    seg = P([[(5, 10)], [(9, 4)], [(5, 10), (-1, 3), (7, 2)]])
    return Workload.build([2.0, 0.0, 3.0], [10, 4, 15], [3, 5, 2], segments=seg,
                          parent=[-1, -1, 0], think_time=[0.0, 0.0, 1.0])


def test_build_sorts_and_renumbers_references_and_parents():
    w = _conversation()
    # sorted: B (t=0), A (t=2), C (t=3); C's reference to A becomes -(1 + 1)
    assert w.arrival_time.tolist() == [0.0, 2.0, 3.0]
    assert pieces(w) == [[(9, 4)], [(5, 10)], [(5, 10), (-2, 3), (7, 2)]]
    assert w.parent.tolist() == [-1, -1, 1]
    assert w.think_time.tolist() == [0.0, 0.0, 1.0]
    assert w.is_closed_loop
    assert w.request(2).parent == 1 and w.request(2).think_time == 1.0
    assert w.request(0).parent is None


def test_with_arrivals_resorts_and_renumbers_again():
    w = _conversation().with_arrivals([5.0, 0.0, 6.0])     # B, A, C -> A (0), B (5), C (6)
    assert pieces(w) == [[(5, 10)], [(9, 4)], [(5, 10), (-1, 3), (7, 2)]]
    assert w.parent.tolist() == [-1, -1, 0]


def test_head_and_with_columns_keep_segments():
    w = _conversation()
    assert pieces(w.head(2)) == [[(9, 4)], [(5, 10)]]
    assert w.head(2).parent.tolist() == [-1, -1]
    predicted = w.with_columns(predicted_output_tokens=[1.0, 2.0, 3.0])
    assert predicted.segments == w.segments and predicted.parent.tolist() == w.parent.tolist()
    with pytest.raises(WorkloadError, match="row 2, field 'segments'.*sum to 10 tokens"):
        w.with_columns(num_prompt_tokens=np.array([4, 11, 15]))


def test_equality_includes_segments_and_follow_ups():
    w = _conversation()
    assert w == _conversation()
    assert w != w.with_columns(segments=None)
    assert w != w.with_columns(think_time=np.array([0.0, 0.0, 2.0]))
    plain = Workload.build([0.0, 2.0, 3.0], [4, 10, 15], [5, 3, 2])
    assert plain != w and plain == Workload.build([0.0, 2.0, 3.0], [4, 10, 15], [5, 3, 2])


@pytest.mark.parametrize("given, fragment", [
    (P([[(5, 10)], [(9, 0), (8, 4)], [(5, 10), (-1, 3), (7, 2)]]), "row 2, field 'segments': a piece of length 0"),
    (P([[(5, 9)], [(9, 4)], [(5, 10), (-1, 3), (7, 2)]]), "row 1, field 'segments': pieces sum to 9 tokens, "
                                                          "expected num_prompt_tokens = 10"),
    (P([[(5, 4), (5, 6)], [(9, 4)], [(5, 10), (-1, 3), (7, 2)]]), "row 1, field 'segments': two consecutive "
                                                                  "pieces with id 5"),
    (P([[(5, 10)], [(9, 4)], [(5, 10), (-1, 4), (7, 1)]]), "row 3, field 'segments': a piece takes 4 tokens "
                                                           "of row 1's output, which has 3"),
    # row 1 (given order; sorted second) names row 3 (C, sorted last): not earlier
    (P([[(5, 7), (-3, 2), (1, 1)], [(9, 4)], [(5, 10), (-1, 3), (7, 2)]]),
     "row 1, field 'segments': a piece names the output of row 3; expected an earlier row"),
])
def test_bad_segments_name_the_row_in_the_order_given(given, fragment):
    with pytest.raises(WorkloadError) as err:
        Workload.build([2.0, 0.0, 3.0], [10, 4, 15], [3, 5, 2], segments=given,
                       parent=[-1, -1, 0], think_time=[0.0, 0.0, 1.0])
    assert fragment in str(err.value)


def test_segments_of_the_wrong_size():
    with pytest.raises(WorkloadError, match="has 1 prompts, expected one per request \\(2\\)"):
        Workload.build([0.0, 1.0], [1, 1], [1, 1], segments=P([[(0, 1)]]))
    with pytest.raises(WorkloadError, match="expected PromptSegments"):
        Workload.build([0.0], [1], [1], segments=[[(0, 1)]])


@pytest.mark.parametrize("parent, think, fragment", [
    ([-1, 0], None, "field 'parent': given without think_time"),
    (None, [0.0, 1.0], "field 'think_time': given without parent"),
    ([-1, 5], [0.0, 1.0], "row 2, field 'parent': got 5, expected -1 (none) or a row index in [0, 2)"),
    ([-1, -2], [0.0, 1.0], "row 2, field 'parent': got -2"),
    ([-1, 1], [0.0, 1.0], "row 2, field 'parent': a request cannot follow itself"),
    ([-1, 0], [0.0, -1.0], "row 2, field 'think_time': got -1.0, expected a finite number of seconds >= 0"),
    ([-1, 0], [0.0, float("nan")], "row 2, field 'think_time': got nan"),
    ([1, -1], [1.0, 0.0], "row 1, field 'parent': follows row 2, which does not arrive before it"),
])
def test_bad_follow_ups_name_row_and_field(parent, think, fragment):
    optional = {k: v for k, v in (("parent", parent), ("think_time", think)) if v is not None}
    with pytest.raises(WorkloadError) as err:
        Workload.build([0.0, 0.0], [1, 1], [1, 1], **optional)
    assert fragment in str(err.value)


def test_a_follow_up_given_before_its_parent_with_a_later_time_is_sorted_after_it():
    w = Workload.build([1.0, 0.0], [1, 1], [1, 1], parent=[1, -1], think_time=[1.0, 0.0])
    assert w.parent.tolist() == [-1, 0]


def test_constructor_validates_the_sorted_order_too():
    with pytest.raises(WorkloadError, match="row 1, field 'parent': follows row 2"):
        Workload(np.zeros(2), np.ones(2), np.ones(2), parent=np.array([1, -1]), think_time=np.zeros(2))


# --------------------------------------------------------------------------- property

@st.composite
def shuffled_conversations(draw):
    """Chains of follow-ups in a random given order; each follow-up extends its parent's pieces."""
    n = draw(st.integers(1, 12))
    parent, prompt_pieces, outputs, arrival = [], [], [], []
    for i in range(n):
        out = draw(st.integers(1, 5))
        j = draw(st.integers(-1, i - 1))
        message = (1000 + i, draw(st.integers(1, 5)))
        if j >= 0:
            prompt_pieces.append(prompt_pieces[j] + [(-(j + 1), draw(st.integers(1, outputs[j]))), message])
            arrival.append(arrival[j] + draw(st.floats(0.001, 5)))
        else:
            prompt_pieces.append([message])
            arrival.append(draw(st.floats(0, 20)))
        parent.append(j)
        outputs.append(out)
    perm = draw(st.permutations(range(n)))          # given order: row k is generated row perm[k]
    where = {old: k for k, old in enumerate(perm)}

    def given_ids(pcs):
        return [(-(where[-x - 1] + 1) if x < 0 else x, length) for x, length in pcs]
    return {"arrival": [arrival[p] for p in perm], "outputs": [outputs[p] for p in perm],
            "parent": [-1 if parent[p] < 0 else where[parent[p]] for p in perm],
            "pieces": [given_ids(prompt_pieces[p]) for p in perm]}


@settings(max_examples=60, deadline=None)
@given(shuffled_conversations())
def test_sorting_keeps_every_prompt_and_reference(case):
    seg = P(case["pieces"])
    w = Workload.build(case["arrival"], seg.num_tokens(), case["outputs"], segments=seg,
                       parent=case["parent"], think_time=np.ones(len(case["parent"])))
    order = np.argsort(np.asarray(case["arrival"]), kind="stable")     # sorted row k = given row order[k]
    position = {int(old): k for k, old in enumerate(order)}
    for k, old in enumerate(order):
        expected = [(-(position[-x - 1] + 1) if x < 0 else x, length) for x, length in case["pieces"][old]]
        assert w.segments.of(k) == expected
        given_parent = case["parent"][old]
        assert w.parent[k] == (-1 if given_parent < 0 else position[given_parent])
    # a follow-up's prompt extends its parent's prompt (the answer and message come after it)
    for k in np.flatnonzero(w.parent >= 0):
        j = int(w.parent[k])
        assert w.segments.of(k)[:len(w.segments.of(j))] == w.segments.of(j)
