"""Multi-turn conversations (closed loop) and shared system prompts: workloads for prefix caching.

**Conversations.** A conversation is a sequence of turns, one request each. Turn k's prompt is
turn k−1's prompt, then turn k−1's answer, then the new user message; in segments
(`kvsched.workload.segments`) turn k's pieces are turn k−1's pieces + ``(-(j + 1), o_j)`` (the
answer of request j, turn k−1) + ``(m_k, u_k)`` (a fresh content id for the user message and its
length). Turn k arrives a think time after turn k−1 *finishes* (``parent``/``think_time``): the
arrival depends on the schedule. The first turns of the conversations arrive as a stream
(`ArrivalProcess`).

**Fit to LMSYS-Chat-1M** (Zheng et al., "LMSYS-Chat-1M: A Large-Scale Real-World LLM Conversation
Dataset", ICLR 2024, arXiv 2309.11998, Table 1): 2.0 turns per conversation on average, 69.5 tokens
per user prompt and 214.5 tokens per response (averages over turns). Xu et al. ("Magpie",
arXiv 2406.08464, Table 4) count 2.01 turns per LMSYS-Chat-1M conversation, an independent check
of the first number. Our choices on top of those means:

- turns per conversation: geometric on {1, 2, ...} with mean `MEAN_TURNS` = 2.0 (success
  probability 1/2: half the conversations have one turn, a quarter two, ...). The paper gives only
  the mean; the geometric is the memoryless choice ("the user continues with probability 1/2").
- per-turn user message and answer lengths: the default workload's log-normals (mean 69.5 and
  214.5; `kvsched.workload.synthetic.LMSYS_PROMPT`/`LMSYS_OUTPUT`, where their spread is
  explained), drawn independently per turn.
- think time: exponential with mean `THINK_TIME_MEAN` = 10 s. **An assumption** (no published
  figure for LMSYS): a human reading a ~200-token answer and typing a ~70-token reply takes tens
  of seconds, a program driving a chat far less; 10 s keeps the previous turn's blocks within reach
  of the cache at the loads we simulate. Configurable.
- context limit: a conversation ends before the first turn whose prompt plus answer would exceed
  `max_context_tokens` (default 4096, Llama-2's context window; the models behind LMSYS-Chat-1M
  had 2k–4k). The first turn is always kept (its lengths' caps, 2048 + 1000, fit the default).
  With the defaults it ends < 0.1% of conversations early, so the means above hold.

Rates: `synthesize_multiturn` takes the first turns' arrival process (conversations per second);
`multiturn_workload` (the CLI's ``--workload multiturn``) takes ``rate`` in **requests** per second
and starts conversations at ``rate / MEAN_TURNS`` per second, so the long-run request rate is about
``rate`` whatever the schedule. ``num_requests`` counts turns: conversations are drawn until there
are enough, and the last one is cut short.

Content ids: user messages get ids ``id_start, id_start + 1, ...`` in generation order.

**Shared system prompts** (`with_shared_prefix`): a fraction of the requests (each independently,
or each conversation: all its turns) get one N-token system prompt in front of their prompt; their
prompts grow by N (the N tokens come on top of the lengths drawn and of the context limit). One
segment id, new to the workload, is the system prompt of all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..errors import WorkloadError
from .segments import PromptSegments
from .synthetic import (DEFAULT_NUM_REQUESTS, DEFAULT_RATE, LMSYS_OUTPUT, LMSYS_PROMPT, AllAtZero,
                        ArrivalProcess, LengthDistribution, Poisson, Workload)

_INT = np.int64
#: Zheng et al. 2023 (arXiv 2309.11998), Table 1: average turns per LMSYS-Chat-1M conversation.
MEAN_TURNS = 2.0
#: Mean of the exponential think time between a turn's finish and the next turn (s): our assumption.
THINK_TIME_MEAN = 10.0
#: Prompt + answer tokens a turn may reach (Llama-2's 4096-token context).
MAX_CONTEXT_TOKENS = 4096


@dataclass(frozen=True, slots=True)
class Conversations:
    """How conversations look (see the module docstring for the sources and our choices)."""

    mean_turns: float = MEAN_TURNS
    user_message: LengthDistribution = LMSYS_PROMPT
    answer: LengthDistribution = LMSYS_OUTPUT
    think_time_mean: float = THINK_TIME_MEAN
    max_context_tokens: int = MAX_CONTEXT_TOKENS

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean_turns) and self.mean_turns >= 1):
            raise WorkloadError(f"got {self.mean_turns}, expected a mean number of turns >= 1",
                                field="mean_turns")
        if not (math.isfinite(self.think_time_mean) and self.think_time_mean >= 0):
            raise WorkloadError(f"got {self.think_time_mean}, expected a mean think time in seconds >= 0",
                                field="think_time")
        if isinstance(self.max_context_tokens, bool) or not isinstance(self.max_context_tokens, (int, np.integer)) \
                or self.max_context_tokens < 2:
            raise WorkloadError(f"got {self.max_context_tokens!r}, expected an integer >= 2 tokens",
                                field="max_context_tokens")

    def draw_turns(self, num_conversations: int, rng: np.random.Generator) -> np.ndarray:
        """Turns per conversation: geometric on {1, 2, ...} with mean `mean_turns`."""
        return rng.geometric(1.0 / self.mean_turns, size=num_conversations).astype(_INT)


def synthesize_multiturn(num_requests: int, arrivals: ArrivalProcess, rng: np.random.Generator,
                         conversations: Conversations = Conversations(), *, id_start: int = 0,
                         name: str = "multiturn") -> Workload:
    """`num_requests` turns of conversations whose first turns arrive by `arrivals`.

    Draw order (fixed, for reproducibility): per batch of conversations, the turns per conversation,
    then the user messages, the answers and the think times of all their turns, then the first turns'
    arrival times (one batch suffices unless the context limit ends many conversations early).
    """
    if num_requests < 1:
        raise WorkloadError(f"got {num_requests}, expected at least 1 request", field="num_requests")
    parts = []
    have = 0
    while have < num_requests:
        batch = _draw_batch(num_requests - have, rng, conversations)
        parts.append(batch)
        have += len(batch["user"])
    turns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    turns = {k: v[:num_requests] for k, v in turns.items()}
    first = np.flatnonzero(turns["turn"] == 0)
    starts = arrivals.sample(len(first), rng)
    return _assemble(turns, first, starts, id_start, name, conversations)


def _draw_batch(num_requests: int, rng: np.random.Generator, conv: Conversations) -> dict:
    """Conversations with at least `num_requests` turns in all (before the context limit)."""
    num_conversations = max(1, math.ceil(num_requests / conv.mean_turns))
    counts = conv.draw_turns(num_conversations, rng)
    while counts.sum() < num_requests:                  # rare: a short draw; extend it
        counts = np.concatenate((counts, conv.draw_turns(num_conversations, rng)))
    total = int(counts.sum())
    user = conv.user_message.sample(total, rng).astype(_INT)
    answer = conv.answer.sample(total, rng).astype(_INT)
    think = rng.exponential(conv.think_time_mean, size=total) if conv.think_time_mean > 0 \
        else np.zeros(total)
    conversation = np.repeat(np.arange(len(counts), dtype=_INT), counts)
    first_row = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(_INT)
    turn = np.arange(total, dtype=_INT) - first_row[conversation]
    # context after turn k = everything said so far in the conversation, turn k's answer included
    spoken = np.cumsum(user + answer)
    context = spoken - (spoken[first_row] - (user + answer)[first_row])[conversation]
    # the context grows strictly within a conversation (lengths >= 1), so the first turn over the
    # limit drops all later ones too: the conversation ends there
    keep = (turn == 0) | (context <= conv.max_context_tokens)
    return {"turn": turn[keep], "user": user[keep], "answer": answer[keep], "think": think[keep]}


def _assemble(turns: dict, first: np.ndarray, starts: np.ndarray, id_start: int, name: str,
              conv: Conversations) -> Workload:
    """Columns and segments from the kept turns (rows in generation order, parents first)."""
    n = len(turns["user"])
    turn, user, answer = turns["turn"], turns["user"], turns["answer"]
    rows = np.arange(n, dtype=_INT)
    parent = np.where(turn > 0, rows - 1, -1).astype(_INT)
    think = np.where(turn > 0, turns["think"], 0.0)
    conversation = np.cumsum(turn == 0) - 1
    # lower-bound arrivals: the conversation's start plus the think times so far
    waited = np.cumsum(think)
    arrival = starts[conversation] + waited - waited[first][conversation]
    # turn k's prompt: all earlier user messages and answers of its conversation, then its message
    prompt = np.cumsum(user + answer) - answer
    prompt = prompt - (prompt[first] - user[first])[conversation]
    segments = _conversation_segments(turn, user, answer, id_start)
    meta = {"conversations": int(len(first)), "mean_turns": conv.mean_turns,
            "think_time_mean": conv.think_time_mean, "max_context_tokens": conv.max_context_tokens}
    return Workload.build(arrival, prompt, answer, parent=parent, think_time=think, segments=segments,
                          name=name, meta=meta)


def _conversation_segments(turn, user, answer, id_start: int) -> PromptSegments:
    """Turn k (row r, conversation starting at row r − k): pieces (message, answer) of rows
    r − k .. r − 1, then row r's message: 2k + 1 pieces."""
    n = len(turn)
    counts = 2 * turn + 1
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(_INT)
    owner = np.repeat(np.arange(n, dtype=_INT), counts)
    position = np.arange(offsets[-1], dtype=_INT) - offsets[owner]
    source = owner - turn[owner] + position // 2          # the row whose message/answer it is
    is_answer = position % 2 == 1
    ids = np.where(is_answer, -(source + 1), id_start + source)
    lengths = np.where(is_answer, answer[source], user[source])
    return PromptSegments(offsets, ids.astype(_INT), lengths.astype(_INT))


def multiturn_workload(num_requests: int = DEFAULT_NUM_REQUESTS, rate: float | None = DEFAULT_RATE,
                       seed: int = 0, *, think_time_mean: float = THINK_TIME_MEAN,
                       max_context_tokens: int = MAX_CONTEXT_TOKENS) -> Workload:
    """The embedded multi-turn LMSYS-like workload (``--workload multiturn``): `num_requests`
    turns; conversations start as Poisson arrivals at ``rate / MEAN_TURNS`` per second, so about
    ``rate`` requests per second arrive (None: every conversation starts at 0)."""
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise WorkloadError(f"got {rate}, expected a rate > 0 requests per second", field="rate")
    conv = Conversations(think_time_mean=think_time_mean, max_context_tokens=max_context_tokens)
    arrivals = AllAtZero() if rate is None else Poisson(rate / conv.mean_turns)
    workload = synthesize_multiturn(num_requests, arrivals, np.random.default_rng(seed), conv,
                                    name="multiturn-lmsys")
    workload.meta["arrival_rate"] = rate
    return workload


# --------------------------------------------------------------------------- shared system prompts

def conversation_roots(workload: Workload) -> np.ndarray:
    """Per request, the first turn of its conversation (itself when it has no parent)."""
    root = np.arange(len(workload), dtype=_INT)
    if workload.parent is None:
        return root
    parent = workload.parent
    while True:                                   # one step up the chain per pass (chains are short)
        up = np.where(parent[root] >= 0, parent[root], root)
        if np.array_equal(up, root):
            return root
        root = up


def with_shared_prefix(workload: Workload, num_tokens: int, fraction: float,
                       rng: np.random.Generator) -> Workload:
    """A fraction of the requests get one `num_tokens`-token system prompt in front of their prompt.

    Each conversation (each request, when the workload has no follow-ups) is chosen independently
    with probability `fraction`; all turns of a chosen conversation get the system prompt, so a
    follow-up's prompt still extends its previous turn's. The system prompt's segment id is one
    more than the largest id in use (0 when the workload had no segments; its prompts then get ids
    1, 2, ... as distinct contents).
    """
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, (int, np.integer)) or num_tokens < 1:
        raise WorkloadError(f"got {num_tokens!r}, expected an integer >= 1 tokens", field="shared_prefix_tokens")
    if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0 <= fraction <= 1):
        raise WorkloadError(f"got {fraction!r}, expected a fraction in [0, 1]", field="shared_prefix_fraction")
    if workload.segments is None:
        segments, system_id = PromptSegments.distinct(workload.num_prompt_tokens, start=1), 0
    else:
        segments = workload.segments
        system_id = int(segments.ids.max(initial=-1)) + 1
    roots = conversation_roots(workload)
    chosen = (rng.random(len(workload)) < fraction)[roots]
    meta = dict(workload.meta, shared_prefix_tokens=int(num_tokens), shared_prefix_fraction=float(fraction),
                num_shared_prefix_requests=int(chosen.sum()))
    return replace(workload, num_prompt_tokens=workload.num_prompt_tokens + chosen * int(num_tokens),
                   segments=segments.prepend(system_id, int(num_tokens), chosen), meta=meta)
