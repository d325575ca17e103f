"""Workloads: columnar request streams, synthetic arrival processes and length distributions.

A `Workload` is immutable and columnar (numpy arrays, one entry per request). Request ids are the
row indices after sorting by arrival time (stable). Times in seconds (or rounds under `UnitTime`).
Trace loaders live in `kvsched.workload.traces`, predictors in `kvsched.workload.predictors`,
multi-turn conversations in `kvsched.workload.multiturn`.

For prefix caching a workload may say which prompts share which tokens (``segments``, a
`kvsched.workload.segments.PromptSegments`; None: every prompt distinct), and which requests are
closed-loop follow-ups (``parent``/``think_time``: request i arrives ``think_time[i]`` seconds after
request ``parent[i]`` *finishes*; ``parent[i] = -1``, the contract's marker, for an ordinary
request, whose ``think_time`` is ignored). For a follow-up, ``arrival_time[i]`` is only a lower
bound used for sorting (the engine uses the realised arrival).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from ..errors import WorkloadError
from .segments import PromptSegments

_INT = np.int64


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the user describes it (the engine's mutable state is `state.RequestState`)."""

    request_id: int
    arrival_time: float
    num_prompt_tokens: int
    true_output_tokens: int
    predicted_output_tokens: float | None = None
    predicted_lo: int | None = None
    predicted_hi: int | None = None
    type_id: int | None = None
    parent: int | None = None            # the previous turn of a follow-up (closed loop)
    think_time: float | None = None      # seconds after the parent finishes


_DTYPES = {"arrival_time": np.float64, "num_prompt_tokens": _INT, "true_output_tokens": _INT,
           "predicted_output_tokens": np.float64, "predicted_lo": _INT, "predicted_hi": _INT,
           "type_id": _INT, "parent": _INT, "think_time": np.float64}


def _column(values, name: str) -> np.ndarray | None:
    """`values` as an array of the column's dtype; token counts must be whole numbers."""
    if values is None:
        return None
    if name not in ("num_prompt_tokens", "true_output_tokens", "parent"):
        return np.asarray(values, dtype=_DTYPES[name])
    if np.asarray(values).dtype.kind in "iub":
        return np.asarray(values, dtype=_INT)
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise WorkloadError("expected numbers", field=name) from None
    bad = np.flatnonzero(~np.isfinite(array) | (array != np.round(array)))
    if bad.size:
        raise WorkloadError(f"got {array.flat[bad[0]]}, expected an integer", row=int(bad[0]) + 1,
                            field=name)
    return array.astype(_INT)


def _check_columns(cols: dict) -> None:
    """Shapes and value ranges; rows are reported 1-based in the order given."""
    n = len(cols["arrival_time"])
    for name, col in cols.items():
        if col is not None and col.shape != (n,):
            raise WorkloadError(f"column has shape {col.shape}, expected ({n},)", field=name)
    for name, low in (("arrival_time", 0), ("num_prompt_tokens", 1), ("true_output_tokens", 1)):
        col = cols[name]
        bad = np.flatnonzero(~np.isfinite(col) | (col < low)) if col.dtype.kind == "f" else \
            np.flatnonzero(col < low)
        if bad.size:
            raise WorkloadError(f"got {col[bad[0]]}, expected a finite number >= {low}",
                                row=int(bad[0]) + 1, field=name)
    _check_follow_ups(cols.get("parent"), cols.get("think_time"), n)


def _check_follow_ups(parent, think_time, n: int) -> None:
    """parent: -1 or a row index (0-based); think_time: finite >= 0; both or neither."""
    if (parent is None) != (think_time is None):
        given, missing = ("parent", "think_time") if think_time is None else ("think_time", "parent")
        raise WorkloadError(f"given without {missing}; expected both columns or neither", field=given)
    if parent is None:
        return
    bad = np.flatnonzero((parent < -1) | (parent >= n))
    if bad.size:
        raise WorkloadError(f"got {parent[bad[0]]}, expected -1 (none) or a row index in [0, {n})",
                            row=int(bad[0]) + 1, field="parent")
    bad = np.flatnonzero(parent == np.arange(n))
    if bad.size:
        raise WorkloadError("a request cannot follow itself", row=int(bad[0]) + 1, field="parent")
    bad = np.flatnonzero(~np.isfinite(think_time) | (think_time < 0))
    if bad.size:
        raise WorkloadError(f"got {think_time[bad[0]]}, expected a finite number of seconds >= 0",
                            row=int(bad[0]) + 1, field="think_time")


def _check_order(parent, segments, prompts, outputs, row_numbers=None) -> None:
    """What depends on the (sorted) order: a follow-up comes after its parent, an output
    reference names an earlier row. ``row_numbers[i]``: the 1-based row to report for request i."""
    if parent is not None:
        bad = np.flatnonzero(parent >= np.arange(len(parent)))
        if bad.size:
            i = int(bad[0])
            row = i + 1 if row_numbers is None else int(row_numbers[i])
            parent_row = int(parent[i]) + 1 if row_numbers is None else int(row_numbers[parent[i]])
            raise WorkloadError(f"follows row {parent_row}, which does not arrive before it; expected "
                                "a follow-up's arrival_time (a lower bound) >= its parent's",
                                row=row, field="parent")
    if segments is not None:
        segments.check(prompts, outputs, row_numbers)


@dataclass(frozen=True)
class Workload:
    """A request stream. Arrays have one entry per request, sorted by arrival time.

    ``predicted_output_tokens`` (point predictions) and ``predicted_lo``/``predicted_hi``
    (intervals) are optional; ``type_id`` marks finite request types (WAIT). ``parent`` (int64,
    -1 = none) and ``think_time`` (seconds) mark closed-loop follow-ups, always together; a
    follow-up comes after its parent. ``segments`` (`PromptSegments`, or None: every prompt
    distinct) says which prompts share which tokens; its pieces sum to ``num_prompt_tokens``.
    """

    arrival_time: np.ndarray
    num_prompt_tokens: np.ndarray
    true_output_tokens: np.ndarray
    predicted_output_tokens: np.ndarray | None = None
    predicted_lo: np.ndarray | None = None
    predicted_hi: np.ndarray | None = None
    type_id: np.ndarray | None = None
    parent: np.ndarray | None = None
    think_time: np.ndarray | None = None
    segments: PromptSegments | None = None
    name: str = "workload"
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in self._columns():
            object.__setattr__(self, name, _column(getattr(self, name), name))
        if self.segments is not None and not isinstance(self.segments, PromptSegments):
            raise WorkloadError(f"got {type(self.segments).__name__}, expected PromptSegments or None",
                                field="segments")
        self._validate()

    def _validate(self) -> None:
        _check_columns({name: getattr(self, name) for name in self._columns()})
        if len(self) > 1 and np.any(np.diff(self.arrival_time) < 0):
            raise WorkloadError("arrival times must be sorted; use Workload.build", field="arrival_time")
        _check_order(self.parent, self.segments, self.num_prompt_tokens, self.true_output_tokens)

    def __eq__(self, other: object) -> bool:
        """Same name, same columns and same segments (the generated `==` fails on arrays)."""
        if not isinstance(other, Workload):
            return NotImplemented
        return self.name == other.name and self.segments == other.segments and all(
            (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
            for a, b in ((getattr(self, c), getattr(other, c)) for c in self._columns()))

    @staticmethod
    def _columns() -> tuple[str, ...]:
        return ("arrival_time", "num_prompt_tokens", "true_output_tokens", "predicted_output_tokens",
                "predicted_lo", "predicted_hi", "type_id", "parent", "think_time")

    @property
    def is_closed_loop(self) -> bool:
        """Some request arrives a think time after another finishes."""
        return self.parent is not None and bool(np.any(self.parent >= 0))

    @classmethod
    def build(cls, arrival_time, num_prompt_tokens, true_output_tokens, *, name: str = "workload",
              meta: dict | None = None, segments: PromptSegments | None = None, **optional) -> Workload:
        """Make a workload from unsorted columns: rows are sorted stably by arrival time.

        ``parent`` and the output references in ``segments`` name rows in the order given; they are
        renumbered to the sorted order. Bad values are reported with their row in the order given
        (1-based).
        """
        unknown = sorted(set(optional) - set(cls._columns()))
        if unknown:
            raise TypeError(f"unknown workload column(s): {', '.join(unknown)}")
        cols = {"arrival_time": arrival_time, "num_prompt_tokens": num_prompt_tokens,
                "true_output_tokens": true_output_tokens, **optional}
        cols = {k: _column(v, k) for k, v in cols.items()}
        _check_columns(cols)
        order = np.argsort(cols["arrival_time"], kind="stable")
        sorted_cols = {k: (None if v is None else v[order]) for k, v in cols.items()}
        position = np.empty(len(order), dtype=_INT)
        position[order] = np.arange(len(order), dtype=_INT)
        if sorted_cols.get("parent") is not None:
            parent = sorted_cols["parent"]
            sorted_cols["parent"] = np.where(parent >= 0, position[np.maximum(parent, 0)], -1)
        if segments is not None:
            if not isinstance(segments, PromptSegments):
                raise WorkloadError(f"got {type(segments).__name__}, expected PromptSegments",
                                    field="segments")
            if len(segments) != len(order):
                raise WorkloadError(f"has {len(segments)} prompts, expected one per request ({len(order)})",
                                    field="segments")
            segments = segments.permuted(order)
        _check_order(sorted_cols.get("parent"), segments, sorted_cols["num_prompt_tokens"],
                     sorted_cols["true_output_tokens"], row_numbers=order + 1)
        return cls(**sorted_cols, segments=segments, name=name, meta=dict(meta or {}))

    def __len__(self) -> int:
        return len(self.arrival_time)

    @property
    def num_requests(self) -> int:
        return len(self)

    def request(self, i: int) -> Request:
        def opt(col, cast):
            return None if col is None else cast(col[i])
        follows = self.parent is not None and self.parent[i] >= 0
        return Request(i, float(self.arrival_time[i]), int(self.num_prompt_tokens[i]),
                       int(self.true_output_tokens[i]), opt(self.predicted_output_tokens, float),
                       opt(self.predicted_lo, int), opt(self.predicted_hi, int), opt(self.type_id, int),
                       int(self.parent[i]) if follows else None,
                       float(self.think_time[i]) if follows else None)

    def __iter__(self) -> Iterator[Request]:
        return (self.request(i) for i in range(len(self)))

    def head(self, n: int) -> Workload:
        """The first n requests."""
        cols = {k: (None if getattr(self, k) is None else getattr(self, k)[:n]) for k in self._columns()}
        segments = None if self.segments is None else self.segments.head(n)
        return Workload(**cols, segments=segments, name=self.name, meta=dict(self.meta))

    def with_columns(self, **cols) -> Workload:
        """A copy with some columns replaced (e.g. predictions)."""
        return replace(self, **cols, meta=dict(self.meta))

    def with_arrivals(self, arrival_time) -> Workload:
        """The same lengths with new arrival times (re-sorted stably; follow-ups and segments
        renumbered). For a follow-up the new time is again only a lower bound."""
        extra = {k: getattr(self, k) for k in self._columns()[3:]}
        return Workload.build(arrival_time, self.num_prompt_tokens, self.true_output_tokens,
                              name=self.name, meta=self.meta, segments=self.segments, **extra)


# --------------------------------------------------------------------------- arrival processes

class ArrivalProcess(Protocol):
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Poisson:
    """Exponential inter-arrival times at `rate` requests per second; first arrival at 0."""

    rate: float

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        gaps = rng.exponential(1.0 / self.rate, size=n)
        gaps[0] = 0.0
        return np.cumsum(gaps)


@dataclass(frozen=True, slots=True)
class GammaArrivals:
    """Gamma inter-arrival times with mean 1/rate and coefficient of variation `cv` (cv=1: Poisson)."""

    rate: float
    cv: float

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        shape = 1.0 / self.cv ** 2
        gaps = rng.gamma(shape, 1.0 / (self.rate * shape), size=n)
        gaps[0] = 0.0
        return np.cumsum(gaps)


@dataclass(frozen=True, slots=True)
class Deterministic:
    """One arrival every 1/rate seconds, starting at 0."""

    rate: float

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.arange(n, dtype=np.float64) / self.rate


@dataclass(frozen=True, slots=True)
class AllAtZero:
    """Every request arrives at time 0 (the papers' offline / semi-online setting)."""

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(n)


@dataclass(frozen=True, slots=True)
class Bursts:
    """Bursts of `burst_size` simultaneous requests; bursts are Poisson with mean rate `rate` req/s."""

    rate: float
    burst_size: int

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        num_bursts = -(-n // self.burst_size)
        starts = Poisson(self.rate / self.burst_size).sample(num_bursts, rng)
        return np.repeat(starts, self.burst_size)[:n]


# --------------------------------------------------------------------------- length distributions

class LengthDistribution(Protocol):
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Fixed:
    value: int

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.full(n, self.value, dtype=_INT)


@dataclass(frozen=True, slots=True)
class Uniform:
    """Integers uniform on [low, high] inclusive."""

    low: int
    high: int

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(self.low, self.high + 1, size=n, dtype=_INT)


@dataclass(frozen=True, slots=True)
class LogNormal:
    """Log-normal with the given mean and log-space σ, rounded and clipped to [low, high]."""

    mean: float
    sigma: float
    low: int = 1
    high: int = 1 << 20

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        mu = np.log(self.mean) - self.sigma ** 2 / 2
        values = np.rint(rng.lognormal(mu, self.sigma, size=n))
        return np.clip(values, self.low, self.high).astype(_INT)


@dataclass(frozen=True, slots=True)
class Empirical:
    """Resample (with replacement) from observed lengths, e.g. a trace's column."""

    values: tuple[int, ...]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(np.asarray(self.values, dtype=_INT), size=n, replace=True)


def synthesize(num_requests: int, arrivals: ArrivalProcess, prompt: LengthDistribution,
               output: LengthDistribution, rng: np.random.Generator, *, name: str = "synthetic") -> Workload:
    """Draw a workload: arrival times, then prompt lengths, then output lengths (fixed order)."""
    if num_requests < 1:
        raise WorkloadError(f"got {num_requests}, expected at least 1 request", field="num_requests")
    arrival = arrivals.sample(num_requests, rng)
    prompts = prompt.sample(num_requests, rng)
    outputs = output.sample(num_requests, rng)
    return Workload.build(arrival, prompts, outputs, name=name)


# --------------------------------------------------------------------------- embedded default

# LMSYS-Chat-1M length statistics, and where each number comes from:
# - Means: Zheng et al., "LMSYS-Chat-1M: A Large-Scale Real-World LLM Conversation Dataset"
#   (ICLR 2024, arXiv 2309.11998), Table 1: 69.5 tokens per user prompt and 214.5 tokens per
#   response, averaged over turns.
# - Dispersion: the paper gives no spread. The only spread we found is a third-party computation
#   over Vidur/etalon's conversation-level trace `lmsys_chat_1m_conversation_stats_llama2_tokenizer.csv`
#   (Llama-2 tokenizer; a public repository's `workloads.py` "Vidur-Bench workload definitions"):
#   decode tokens mean 210, std 180 (coefficient of variation 0.86); prefill tokens mean 462,
#   std 657 (CV 1.42; conversation-level, so prompts include earlier turns). We could not obtain
#   that trace to check these numbers (see shared/data/vidur/README.md).
# - Our choices: log-normal shapes; the log-space sigma matching those CVs, sigma = sqrt(ln(1 + CV^2)):
#   0.74 for outputs (CV 0.86) and 1.05 for prompts (CV 1.42, the conversation-level figure used
#   for single prompts, for want of a per-turn one); prompts capped at 2048 tokens, outputs at 1000 (so the A_min
#   paper's naive interval [1, 1000] contains every output; it moves < 0.1% of the mass). With these, 10^6
#   draws give prompts mean 69.5 / median 40 / p99 ~460 and outputs mean ~214 / median ~163 /
#   p99 ~900.
LMSYS_PROMPT = LogNormal(mean=69.5, sigma=1.05, low=1, high=2048)
LMSYS_OUTPUT = LogNormal(mean=214.5, sigma=0.74, low=1, high=1000)
DEFAULT_NUM_REQUESTS = 1000
#: Poisson arrivals per second for the default workload: with the CLI's default cost and KV
#: capacity (kvsched.cli.common) this load makes the default comparison memory-bound (queueing,
#: evictions under vLLM); our choice.
DEFAULT_RATE = 8.0


def default_workload(num_requests: int = DEFAULT_NUM_REQUESTS, rate: float | None = DEFAULT_RATE,
                     seed: int = 0) -> Workload:
    """The embedded LMSYS-like workload: Poisson arrivals at `rate` req/s (None: all at 0)."""
    rng = np.random.default_rng(seed)
    arrivals = AllAtZero() if rate is None else Poisson(rate)
    return synthesize(num_requests, arrivals, LMSYS_PROMPT, LMSYS_OUTPUT, rng, name="default-lmsys")
