"""`FastBatch`: the fast engine view's `Batch` (``Simulator(fast=True)``).

Every policy builds its decision in a `Batch`, and asks it for every request it adds (sarathi and
vllm: once per resident decode per boundary), so `Batch.add` and the extra blocks it asks the
view for are the fast path's hottest calls. `FastBatch` answers `add` and `need` from the engine's
request state behind the view (``request._s``), with the extra-blocks rule computed inline: one
Python call per `add` instead of the view's property reads and a second call. `add_in_order` (the
residents' loop of vllm and sarathi) runs that `add` inline over a whole run of requests, with the
batch's figures in locals: one call per run instead of two per request.

`Batch` is the definition: `FastBatch` changes no answer, return value, recorded field or error
(tests/engine/test_fast_batch.py drives both with the same random call sequences and compares
every observable). The reference loop (``Simulator(fast=False)``) keeps the plain `Batch`, so the
reference-vs-fast tests compare the two as well. A request object without engine state (``_s``)
goes through `Batch`'s own methods.
"""

from __future__ import annotations

from ..state import Batch, Decision, Status
from .rules import KVConvention

_RUNNING, _WAITING, _EMITTED = Status.RUNNING, Status.WAITING, KVConvention.EMITTED


def extra_blocks(state, num_new_tokens: int, emitted: bool, block_size: int) -> int:
    """`rules.extra_blocks` of a request state (its computed tokens count only while it is
    resident), in one function: the KV tokens held before and after the step, in whole blocks.
    Under EMITTED the newest output token counts too once the request has caught up with it,
    before the step and after it (when the step emits, the emitted token is the newest)."""
    prompt, outputs = state.num_prompt_tokens, state.num_output_tokens
    computed = state.num_computed_tokens if state.status is _RUNNING else 0
    known = prompt + outputs
    held, after = computed, computed + num_new_tokens
    if emitted:
        held += outputs >= 1 and computed == known - 1
        after += after == known or (outputs >= 1 and after == known - 1)
    return (-held // block_size) - (-after // block_size)    # ceil(after / B) - ceil(held / B)


class FastBatch(Batch):
    """`Batch` with `add` and `need` read from the engine's request state (module docstring).
    Made by `_FastEngineView.new_batch`; same invariants, answers and errors as `Batch`."""

    __slots__ = ("_emitted", "_block_size", "_lent")

    def __init__(self, view, max_num_batched_tokens: int | None) -> None:
        # Batch.__init__'s fields, set here (one call fewer per policy call)
        self._view, self._tokens, self._evicted = view, {}, {}
        self._free = view.num_free_blocks
        self._budget = self._left = max_num_batched_tokens
        self._extra_blocks = view.extra_blocks
        self._seats = view.max_num_admissions
        self._emitted = view.kv_convention is _EMITTED
        self._block_size = view.block_size
        self._lent = False      # `decision` handed `_tokens` to a Decision: copy it before a change

    def need(self, request, n: int) -> int:
        try:
            s = request._s
        except AttributeError:
            return Batch.need(self, request, n)
        if type(n) is not int or not 1 <= n <= s.num_prompt_tokens + s.num_output_tokens - s.num_computed_tokens:
            self._misuse(request, n)
        return extra_blocks(s, n, self._emitted, self._block_size)

    def add(self, request, n: int, *, reserve_blocks: int = 0) -> bool:
        if self._lent:
            self._own_tokens()
        if self._seats is not None:         # a seat limit (never in the simulator): the plain rule
            return Batch.add(self, request, n, reserve_blocks=reserve_blocks)
        try:
            s = request._s
        except AttributeError:
            return Batch.add(self, request, n, reserve_blocks=reserve_blocks)
        # Batch.add's checks, in its order, on the state (the same values its view reads).
        rid, status = s.request_id, s.status
        if (type(n) is not int or n < 1 or rid in self._tokens or rid in self._evicted
                or (status is not _RUNNING and status is not _WAITING)
                or (n != 1 and n > s.num_prompt_tokens + s.num_output_tokens - s.num_computed_tokens)):
            self._misuse(request, n)
        left = self._left
        if left is not None and n > left:
            return False
        # extra_blocks(s, n, ...), inlined (a call per add is a tenth of the sarathi run)
        prompt, outputs = s.num_prompt_tokens, s.num_output_tokens
        computed = s.num_computed_tokens if status is _RUNNING else 0
        held, after = computed, computed + n
        if self._emitted:
            known = prompt + outputs
            held += outputs >= 1 and computed == known - 1
            after += after == known or (outputs >= 1 and after == known - 1)
        block_size = self._block_size
        need = (-held // block_size) - (-after // block_size)
        if need > self._free - reserve_blocks:
            return False
        self._tokens[rid] = n
        self._free -= need
        if left is not None:
            self._left = left - n
        return True

    def add_in_order(self, requests, start: int = 0, stop: int | None = None, *,
                     min_free_blocks: int = 0, reserve_blocks: int = 0) -> int:
        # Batch.add_in_order with `add` (above) inlined and the batch's figures in locals, written
        # back before every return and before any error is raised.
        if self._seats is not None:         # a seat limit (never in the simulator): the plain loop
            return Batch.add_in_order(self, requests, start, stop, min_free_blocks=min_free_blocks,
                                      reserve_blocks=reserve_blocks)
        if stop is None:
            stop = len(requests)
        if self._lent:
            self._own_tokens()
        tokens, evicted, emitted, block_size = self._tokens, self._evicted, self._emitted, self._block_size
        left, free = self._left, self._free
        for i in range(start, stop):           # (a for loop: no index arithmetic per request)
            request = requests[i]
            if left is not None and left <= 0 or free < min_free_blocks:
                break
            try:
                s = request._s
            except AttributeError:
                self._left, self._free = left, free
                if not Batch.add(self, request, Batch.tokens_within_budget(self, request),
                                 reserve_blocks=reserve_blocks):
                    return i
                left, free = self._left, self._free
                continue
            rid, status = s.request_id, s.status
            prompt, outputs, computed = s.num_prompt_tokens, s.num_output_tokens, s.num_computed_tokens
            n = prompt + outputs - computed                 # its uncomputed tokens, within the budget
            if left is not None and n > left:
                n = left
            if (n < 1 or rid in tokens or rid in evicted
                    or (status is not _RUNNING and status is not _WAITING)):
                self._left, self._free = left, free
                self._misuse(request, n)
            if status is not _RUNNING:
                computed = 0
            held, after = computed, computed + n
            if emitted:
                known = prompt + outputs
                held += outputs >= 1 and computed == known - 1
                after += after == known or (outputs >= 1 and after == known - 1)
            need = (-held // block_size) - (-after // block_size)
            if need > free - reserve_blocks:
                break
            tokens[rid] = n
            free -= need
            if left is not None:
                left -= n
        else:                                   # all added (or none to add)
            i = max(start, stop)
        self._left, self._free = left, free
        return i

    def decision(self, wake_time: float | None = None) -> Decision:
        # Batch.decision without its copy of the tokens (a policy's last call, made at every
        # policy call): the Decision takes the batch's dict, and an `add` after this copies it
        # first (`_own_tokens`), so later calls still do not change the decision.
        self._lent = True
        return Decision(num_tokens=self._tokens, evict=tuple(self._evicted), wake_time=wake_time)

    def _own_tokens(self) -> None:
        self._tokens, self._lent = dict(self._tokens), False
