"""What the engine's check of a decision produces: a running `Tally` and the final `Validation`."""

from __future__ import annotations

from dataclasses import dataclass

from ..cost.models import BatchStats


class Tally:
    """The sums of a decision being checked (token counts, batch statistics, KV blocks after it)."""

    __slots__ = ("used_blocks", "num_tokens", "num_resident", "num_partial", "prefill_tokens",
                 "prefill_seqs", "prefill_context", "prefill_work", "decode_seqs", "decode_context")

    def __init__(self, used_blocks: int) -> None:
        self.used_blocks = used_blocks     # KV blocks in use after the iteration
        self.num_tokens = 0                # tokens scheduled
        self.num_resident = 0              # resident requests scheduled
        self.num_partial = 0               # steps that do not emit (prefill chunks short of the end)
        self.prefill_tokens = self.prefill_seqs = self.prefill_context = self.prefill_work = 0
        self.decode_seqs = self.decode_context = 0

    def add(self, num_new_tokens: int, context_after: int, decode: bool) -> None:
        """One request computing `num_new_tokens`, attending to `context_after` tokens."""
        self.num_tokens += num_new_tokens
        if decode:
            self.decode_seqs += 1
            self.decode_context += context_after
        else:
            self.prefill_seqs += 1
            self.prefill_tokens += num_new_tokens
            self.prefill_context += context_after
            self.prefill_work += num_new_tokens * context_after

    def batch(self) -> BatchStats:
        return BatchStats(self.prefill_tokens, self.prefill_seqs, self.decode_seqs, self.prefill_context,
                          self.prefill_work, self.decode_context)


@dataclass(slots=True)
class Validation:
    """A decision the engine accepted (not frozen: one is made per stepped iteration, and a
    frozen dataclass's constructor costs five times as much; nothing writes it).

    ``decodes``: resident decodes the fast path advances in one loop (empty in the reference
    loop); ``plan``: the other (request state, tokens) pairs, in decision order; ``batch``: the
    iteration's `BatchStats`; ``used_blocks``: KV blocks in use after it; ``num_resident``:
    resident requests scheduled; ``num_partial``: steps that emit no token.
    """

    decodes: tuple
    plan: tuple
    batch: BatchStats
    used_blocks: int
    num_resident: int
    num_partial: int
