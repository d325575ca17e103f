"""The engine's rules, each defined once, in plain form (DESIGN.md §1).

Every other place that applies a rule — the reference loop (`kvsched.engine.simulation`), the
policies' view helpers (`kvsched.state`), the tentative batch, the vLLM driver's replay and the
test oracle — calls these functions. The optimised forms (the fast path's stepped decodes in
`kvsched.engine.fastforward`, the numba kernels in `kvsched.engine.compiled`) are tested against
them. Plain integers in, plain integers out: no engine state, no fast cases.

A request is described by ``prompt`` (its prompt tokens s), ``outputs`` (the output tokens
generated so far) and ``computed`` (the tokens whose KV exists; 0 when it holds no KV).

- Token rule (vLLM V1): the request knows ``prompt + outputs`` tokens. Scheduling n tokens
  computes n of the uncomputed ones (1 <= n <= uncomputed). The iteration that computes the last
  known token emits a new output token at its end.
- Decode vs prefill: a scheduled step is a *decode* when it computes exactly the newest token of a
  request that has emitted at least one (n = 1 and it emits); anything else is *prefill* work (a
  prompt chunk, or recomputation after an eviction).
- KV held (`KVConvention`): COMPUTED counts the computed tokens (vLLM); EMITTED also counts the
  newest output token once the request has caught up with it (the papers' s + j).
- Blocks: with ``block_size`` B, a request holding t KV tokens occupies ceil(t / B) blocks.
- Prefix caching (optional, `kvsched.engine.prefix_cache`): a waiting request may start with a
  hit of whole cached blocks; it computes from there (``computed`` = the hit) and takes from the
  free blocks only those of its blocks no other request holds (`admission_blocks`).
- Rejection: a request whose KV at its last token (never evicted) needs more blocks than the
  cache has can never run; it is rejected on arrival.
- Eviction (`Eviction`): the KV is dropped (computed = 0). RECOMPUTE (vLLM) keeps the generated
  tokens, recomputed with the prompt; RESTART (the theory papers: WAIT, MC-SF's benchmarks, A_min)
  discards them too, and the request generates its output again from its prompt (same true
  length). Tokens computed below the request's high-water mark are recomputed tokens; the
  generated tokens a restart discards are restarted tokens.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple


class KVConvention(str, Enum):
    COMPUTED = "computed"
    EMITTED = "emitted"


class Eviction(str, Enum):
    RECOMPUTE = "recompute"
    RESTART = "restart"


def outputs_after_eviction(outputs: int, eviction: Eviction) -> int:
    """Output tokens a request keeps when it is evicted (its computed tokens become 0)."""
    return 0 if eviction is Eviction.RESTART else outputs


def blocks(tokens: int, block_size: int) -> int:
    """Blocks needed to hold `tokens` KV tokens: ceil(tokens / block_size)."""
    return -(-tokens // block_size)


def num_uncomputed_tokens(prompt: int, outputs: int, computed: int) -> int:
    """Known tokens not yet computed (1 for a decode)."""
    return prompt + outputs - computed


def is_decode(prompt: int, outputs: int, computed: int) -> bool:
    """Whether the request's next step is a plain decode (1 token computed, 1 emitted)."""
    return outputs >= 1 and prompt + outputs - computed == 1


def emits(prompt: int, outputs: int, computed: int, num_new_tokens: int) -> bool:
    """Whether computing `num_new_tokens` more catches up with the known tokens (emits one)."""
    return computed + num_new_tokens == prompt + outputs


def is_decode_step(prompt: int, outputs: int, computed: int, num_new_tokens: int) -> bool:
    """Whether scheduling `num_new_tokens` is decode work (else prefill work)."""
    return num_new_tokens == 1 and outputs >= 1 and emits(prompt, outputs, computed, num_new_tokens)


def kv_tokens_held(computed: int, prompt: int, outputs: int, convention: KVConvention) -> int:
    """KV tokens a request holds once `computed` of its tokens are computed.

    Under EMITTED the newest output token counts too, once the request has caught up with it
    (all known tokens but the newest are computed).
    """
    if convention is KVConvention.EMITTED and outputs >= 1 and computed == prompt + outputs - 1:
        return computed + 1
    return computed


def kv_tokens_after_step(computed: int, prompt: int, outputs: int, num_new_tokens: int,
                         convention: KVConvention) -> int:
    """KV tokens held after computing `num_new_tokens` more (emitting a token if that catches up)."""
    after = computed + num_new_tokens
    return kv_tokens_held(after, prompt, outputs + (after == prompt + outputs), convention)


def extra_blocks(computed: int, prompt: int, outputs: int, num_new_tokens: int,
                 convention: KVConvention, block_size: int) -> int:
    """Blocks needed beyond those held to compute `num_new_tokens` more (`computed` = 0 when the
    request holds no KV)."""
    held = blocks(kv_tokens_held(computed, prompt, outputs, convention), block_size)
    return blocks(kv_tokens_after_step(computed, prompt, outputs, num_new_tokens, convention),
                  block_size) - held


def admission_blocks(hit: int, shared: int, prompt: int, outputs: int, num_new_tokens: int,
                     convention: KVConvention, block_size: int) -> int:
    """Free blocks a waiting request takes when admitted with a prefix-cache hit of `hit` tokens
    (whole blocks; `kvsched.engine.prefix_cache`) and `num_new_tokens` more to compute: all its
    blocks after the step but the `shared` hit blocks other requests hold already (shared blocks
    count once). With no hit, `extra_blocks` of a request holding nothing."""
    return blocks(kv_tokens_after_step(hit, prompt, outputs, num_new_tokens, convention), block_size) - shared


def peak_kv_tokens(prompt: int, true_output_tokens: int, convention: KVConvention) -> int:
    """KV tokens a request holds at its last iteration when it is never evicted."""
    return prompt + true_output_tokens - 1 + (convention is KVConvention.EMITTED)


def rejection_reason(prompt: int, true_output_tokens: int, convention: KVConvention,
                     capacity_blocks: int, block_size: int) -> str | None:
    """Why a request can never run in a cache of `capacity_blocks` blocks (None if it can)."""
    peak = peak_kv_tokens(prompt, true_output_tokens, convention)
    if blocks(peak, block_size) <= capacity_blocks:
        return None
    return (f"needs {peak} KV tokens at its last token; the KV capacity is "
            f"{capacity_blocks * block_size} tokens")


class Advance(NamedTuple):
    """The outcome of computing `num_new_tokens` (`advance`)."""

    computed: int            # tokens computed after the step
    outputs: int             # output tokens generated after the step (one more if it emitted)
    emitted: bool            # the step emitted an output token at the iteration's end
    high_water: int          # the most tokens ever computed (tokens below it are recomputation)
    num_recomputed_tokens: int   # tokens of this step that were computed before


def advance(prompt: int, outputs: int, computed: int, high_water: int, num_new_tokens: int) -> Advance:
    """The token rule: compute `num_new_tokens` of the known, uncomputed tokens."""
    after = computed + num_new_tokens
    emitted = after == prompt + outputs
    recomputed = max(0, min(num_new_tokens, high_water - computed))
    return Advance(after, outputs + emitted, emitted, max(high_water, after), recomputed)
