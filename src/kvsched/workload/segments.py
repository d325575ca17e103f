"""Token identity of prompts without token ids: which prompts share which tokens (prefix caching).

A prompt is a list of *pieces* ``(segment id, length)``. A segment id names a fixed, infinite
token stream; the piece ``(x, L)`` is that stream's first L tokens. Two prompts share their first
t tokens iff their piece lists agree piece by piece up to t (the same id on both sides of a piece
boundary means the same tokens as far as both go). So ``[(7, 100), (3, 50)]`` and
``[(7, 100), (3, 20), (9, 5)]`` share 120 tokens, and ``[(7, 60)]`` shares 60 with both.

- ids >= 0 are content: a trace's hash id, a system prompt, a user message, ...
- id ``-(j + 1)`` is "the output tokens of request j" (row j of the same workload, j earlier than
  the row using it, the piece no longer than request j's true output). A multi-turn prompt names
  its previous turns' answers this way; the engine gives request j's output exactly that stream.

`PromptSegments` stores the pieces of n prompts in CSR form: ``offsets`` (n + 1 entries, int64,
``offsets[0] = 0``), ``ids`` and ``lengths`` (int64, one entry per piece); request i's pieces are
``ids[offsets[i]:offsets[i + 1]]`` with their ``lengths``. Memory is 8 bytes per request plus 16
per piece, so a million requests of a few pieces each take tens of MB. No module imports beyond
numpy: this is part of the simulation core.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import WorkloadError

_INT = np.int64
FIELD = "segments"


def _int_array(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.size and array.dtype.kind not in "iu":
        if array.dtype.kind == "b" or not np.all(np.isfinite(array.astype(np.float64))) \
                or np.any(array != np.round(array)):
            raise WorkloadError(f"{name}: expected integers", field=FIELD)
    return np.ascontiguousarray(array, dtype=_INT).reshape(-1)


@dataclass(frozen=True, eq=False)
class PromptSegments:
    """The pieces of n prompts (CSR, int64). Immutable; see the module docstring for the meaning.

    Construction checks only the CSR structure; `check` checks the pieces against a workload's
    prompt and output lengths (the `Workload` does that when it is made).
    """

    offsets: np.ndarray
    ids: np.ndarray
    lengths: np.ndarray

    def __post_init__(self) -> None:
        offsets = _int_array(self.offsets, "offsets")
        ids, lengths = _int_array(self.ids, "ids"), _int_array(self.lengths, "lengths")
        if offsets.size == 0 or offsets[0] != 0:
            raise WorkloadError("offsets must start at 0 (CSR: n + 1 entries)", field=FIELD)
        if np.any(np.diff(offsets) < 0):
            raise WorkloadError("offsets must be non-decreasing", field=FIELD)
        if not (offsets[-1] == ids.size == lengths.size):
            raise WorkloadError(f"offsets end at {offsets[-1]} but there are {ids.size} ids and "
                                f"{lengths.size} lengths; expected all three equal", field=FIELD)
        for name, array in (("offsets", offsets), ("ids", ids), ("lengths", lengths)):
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    # ----------------------------------------------------------------- building

    @classmethod
    def from_lists(cls, prompts: Iterable[Sequence[tuple[int, int]]]) -> PromptSegments:
        """From one list of ``(id, length)`` pieces per request (tests, small workloads)."""
        pieces = [list(p) for p in prompts]
        offsets = np.concatenate(([0], np.cumsum([len(p) for p in pieces]))).astype(_INT)
        flat = [piece for p in pieces for piece in p]
        ids = np.array([x for x, _ in flat], dtype=_INT)
        lengths = np.array([n for _, n in flat], dtype=_INT)
        return cls(offsets, ids, lengths)

    @classmethod
    def distinct(cls, num_prompt_tokens, start: int = 0) -> PromptSegments:
        """Every prompt its own content: request i is the one piece ``(start + i, s_i)``."""
        lengths = np.asarray(num_prompt_tokens, dtype=_INT)
        n = lengths.size
        return cls(np.arange(n + 1, dtype=_INT), np.arange(start, start + n, dtype=_INT), lengths.copy())

    def prepend(self, segment_id: int, length: int, mask) -> PromptSegments:
        """The piece ``(segment_id, length)`` put in front of the prompts where `mask` is true."""
        mask = np.asarray(mask, dtype=bool)
        counts = np.diff(self.offsets) + mask
        offsets = np.concatenate(([0], np.cumsum(counts))).astype(_INT)
        ids = np.empty(offsets[-1], dtype=_INT)
        lengths = np.empty(offsets[-1], dtype=_INT)
        heads = offsets[:-1][mask]
        ids[heads], lengths[heads] = segment_id, length
        keep = np.ones(offsets[-1], dtype=bool)
        keep[heads] = False
        ids[keep], lengths[keep] = self.ids, self.lengths
        return PromptSegments(offsets, ids, lengths)

    # ----------------------------------------------------------------- reading

    def __len__(self) -> int:
        return self.offsets.size - 1

    @property
    def num_pieces(self) -> np.ndarray:
        """Pieces per request."""
        return np.diff(self.offsets)

    def of(self, i: int) -> list[tuple[int, int]]:
        """Request i's pieces ``[(id, length), ...]``."""
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return [(int(x), int(n)) for x, n in zip(self.ids[lo:hi], self.lengths[lo:hi])]

    def num_tokens(self) -> np.ndarray:
        """Per request, the sum of its pieces' lengths."""
        ends = np.concatenate(([0], np.cumsum(self.lengths)))
        return (ends[self.offsets[1:]] - ends[self.offsets[:-1]]).astype(_INT)

    def row_of_piece(self) -> np.ndarray:
        """For each piece, the request it belongs to."""
        return np.repeat(np.arange(len(self), dtype=_INT), self.num_pieces)

    @property
    def nbytes(self) -> int:
        return self.offsets.nbytes + self.ids.nbytes + self.lengths.nbytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PromptSegments):
            return NotImplemented
        return all(np.array_equal(a, b) for a, b in ((self.offsets, other.offsets), (self.ids, other.ids),
                                                     (self.lengths, other.lengths)))

    __hash__ = None  # mutable-looking arrays inside: not hashable, like the Workload

    # ----------------------------------------------------------------- reordering

    def head(self, n: int) -> PromptSegments:
        """The first n requests (their output references point to earlier rows, so stay valid)."""
        n = max(0, min(n, len(self)))
        end = int(self.offsets[n])
        return PromptSegments(self.offsets[:n + 1], self.ids[:end], self.lengths[:end])

    def permuted(self, order) -> PromptSegments:
        """Rows reordered, new row k being old row ``order[k]`` (a permutation); the output
        references ``-(j + 1)`` are renumbered to the new position of row j."""
        order = np.asarray(order, dtype=_INT)
        counts = self.num_pieces[order]
        offsets = np.concatenate(([0], np.cumsum(counts))).astype(_INT)
        # piece positions of the old rows, in the new order
        starts = np.repeat(self.offsets[:-1][order] - offsets[:-1], counts)
        source = np.arange(offsets[-1], dtype=_INT) + starts
        ids = self.ids[source]
        refs = ids < 0
        if refs.any():
            position = np.empty(len(order), dtype=_INT)
            position[order] = np.arange(len(order), dtype=_INT)
            ids[refs] = -(position[-ids[refs] - 1] + 1)
        return PromptSegments(offsets, ids, self.lengths[source])

    # ----------------------------------------------------------------- validation

    def check(self, num_prompt_tokens, true_output_tokens, row_numbers=None) -> None:
        """The pieces fit the workload: `WorkloadError` (field "segments") naming the first bad row.

        Rows are reported 1-based; ``row_numbers[i]`` is the number to report for request i (a
        workload being built reports rows in the order they were given).
        """
        prompts = np.asarray(num_prompt_tokens, dtype=_INT)
        outputs = np.asarray(true_output_tokens, dtype=_INT)
        n = prompts.size

        def number(request: int) -> int:
            return int(request) + 1 if row_numbers is None else int(row_numbers[request])

        def fail(request: int, message: str):
            raise WorkloadError(message, row=number(request), field=FIELD)

        if len(self) != n:
            raise WorkloadError(f"has {len(self)} prompts, expected one per request ({n})", field=FIELD)
        rows = self.row_of_piece()
        bad = np.flatnonzero(self.lengths < 1)
        if bad.size:
            fail(rows[bad[0]], f"a piece of length {self.lengths[bad[0]]}; expected lengths >= 1")
        totals = self.num_tokens()
        bad = np.flatnonzero(totals != prompts)
        if bad.size:
            i = bad[0]
            fail(i, f"pieces sum to {totals[i]} tokens, expected num_prompt_tokens = {prompts[i]}")
        repeated = np.flatnonzero((self.ids[1:] == self.ids[:-1]) & (rows[1:] == rows[:-1]))
        if repeated.size:
            k = repeated[0]
            fail(rows[k], f"two consecutive pieces with id {self.ids[k]}; expected them merged into one")
        self._check_references(rows, outputs, fail, number)

    def _check_references(self, rows, outputs, fail, number) -> None:
        refs = np.flatnonzero(self.ids < 0)
        if not refs.size:
            return
        source = -self.ids[refs] - 1
        bad = np.flatnonzero(source >= rows[refs])
        if bad.size:
            k = refs[bad[0]]
            j = source[bad[0]]
            named = f"row {number(j)}" if j < len(outputs) else f"request {j}, beyond the last row"
            fail(rows[k], f"a piece names the output of {named}; expected an earlier row")
        too_long = np.flatnonzero(self.lengths[refs] > outputs[source])
        if too_long.size:
            k, j = refs[too_long[0]], source[too_long[0]]
            fail(rows[k], f"a piece takes {self.lengths[k]} tokens of row {number(j)}'s output, "
                          f"which has {outputs[j]}; expected at most that")
