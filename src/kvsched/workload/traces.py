"""Trace loaders: request streams from files (DESIGN.md §6).

`load_trace(path)` picks the reader by the file's extension:

- ``.csv`` / ``.jsonl`` / ``.parquet``: one request per row with the columns
  ``num_prompt_tokens, num_output_tokens[, arrival_time]`` (arrival time in seconds), or Vidur's
  trace columns ``num_prefill_tokens, num_decode_tokens[, arrived_at]`` (other columns, such as
  Vidur's ``num_total_tokens`` and ``pd_ratio``, are ignored). Parquet needs pyarrow (the
  ``parquet`` extra).
- ``.jsonl`` in Mooncake's format (Qin et al., FAST 2025; the ``kvcache-ai/Mooncake`` traces): rows
  ``{"timestamp": ms, "input_length": n, "output_length": n, "hash_ids": [id, ...]}``. The
  timestamp is in **milliseconds** (converted to seconds); ``hash_ids`` has one non-negative
  integer per 512 prompt tokens (``ceil(input_length / 512)`` of them), and rows that share a
  leading run of ids share those tokens. They become the workload's ``segments``: one piece
  ``(id, 512)`` per id, the last covering the remainder (`kvsched.workload.segments`), so a
  prefix-caching run sees the sharing. Rows without ``timestamp`` get arrivals as below.
- ``.json``: ShareGPT-style conversations, a list of ``{"conversations": [{"from": "human" |
  "gpt", "value": text}, ...]}``. As vLLM's serving benchmark does, each conversation gives one
  request: its first human turn is the prompt and the reply that follows is the output; a
  conversation without such a pair is skipped (the number skipped is in ``workload.meta``).
  Without a tokenizer, token counts are an **approximation**: ``ceil(1.3 × whitespace-separated
  words)``, at least 1 (about 1.3 BPE tokens per English word; it undercounts code and text
  written without spaces, such as Chinese). Pass ``count_tokens`` for exact counts.

Rows are numbered from 1 over the data (the header of a CSV file is not a row). Token counts must
be integers >= 1 (``12`` and ``12.0`` are accepted, ``12.5``, ``-3``, ``0``, ``NaN`` and text are
not); arrival times must be finite and >= 0. Any bad value raises `WorkloadError` naming the file,
the row, the field and what was expected. Rows with unsorted arrival times are sorted stably (not
an error). A trace without arrival times gets Poisson arrivals at ``rate`` requests per second
(seeded; the first at 0), or all arrivals at 0 when ``rate`` is None; ``rate`` given for a trace
that has arrival times replaces them.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WorkloadError
from .segments import PromptSegments
from .synthetic import AllAtZero, Poisson, Workload

#: Column names: (prompt, output, arrival) in our format, in Vidur's and in Mooncake's.
OUR_COLUMNS = ("num_prompt_tokens", "num_output_tokens", "arrival_time")
VIDUR_COLUMNS = ("num_prefill_tokens", "num_decode_tokens", "arrived_at")
MOONCAKE_COLUMNS = ("input_length", "output_length", "timestamp")
#: Mooncake's prefix-block column, and the prompt tokens each of its ids covers.
MOONCAKE_HASHES = "hash_ids"
MOONCAKE_BLOCK_TOKENS = 512
#: Seconds per unit of each format's arrival column (Mooncake's timestamps are milliseconds).
TIME_UNITS = {"arrival_time": 1.0, "arrived_at": 1.0, "timestamp": 1e-3}
#: The largest hash id we take: an int64.
MAX_HASH_ID = 2 ** 63 - 1
#: Tokens per whitespace-separated word in the ShareGPT approximation.
TOKENS_PER_WORD = 1.3
SUFFIXES = (".csv", ".jsonl", ".parquet", ".json")
#: The largest token count a row may hold: exact in float64, far from int64's limit.
MAX_TOKENS = 2 ** 53


def load_trace(path: str | Path, *, rate: float | None = None, seed: int = 0,
               num_requests: int | None = None,
               count_tokens: Callable[[str], int] | None = None) -> Workload:
    """Read a trace file into a `Workload` (see the module docstring for formats and rules).

    ``num_requests`` keeps the first N rows of the file. ``rate``/``seed`` make arrival times
    (Poisson) for a trace that has none, or replace the trace's own.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise WorkloadError(f"unknown extension {path.suffix or '(none)'!r}; expected one of "
                            f"{', '.join(SUFFIXES)}", path=str(path))
    if not path.is_file():
        raise WorkloadError("no such file", path=str(path))
    if num_requests is not None and num_requests < 1:
        raise WorkloadError(f"got {num_requests}, expected at least 1 request", field="num_requests")
    segments = None
    if suffix == ".json":
        prompts, outputs, arrivals, meta = _read_sharegpt(path, count_tokens, num_requests)
    else:
        reader = {".csv": _csv_columns, ".jsonl": _jsonl_columns, ".parquet": _parquet_columns}[suffix]
        prompts, outputs, arrivals, segments, meta = _read_table(path, reader(path), num_requests)
    if rate is not None:
        if not (rate > 0 and math.isfinite(rate)):
            raise WorkloadError(f"got {rate}, expected a rate > 0 requests per second", field="rate")
        arrivals = Poisson(rate).sample(len(prompts), np.random.default_rng(seed))
    elif arrivals is None:
        arrivals = AllAtZero().sample(len(prompts), np.random.default_rng(seed))
    meta.update(source=str(path), arrival_rate=rate)
    return Workload.build(arrivals, prompts, outputs, segments=segments, name=path.stem, meta=meta)


# --------------------------------------------------------------------------- tabular formats

Columns = tuple[list[str], Iterable[Mapping[str, Any]]]


def _csv_columns(path: Path) -> Columns:
    handle = path.open(newline="", encoding="utf-8")
    reader = csv.DictReader(handle)
    try:
        header = [h.strip() for h in (reader.fieldnames or []) if h is not None]
    except (csv.Error, UnicodeDecodeError) as exc:
        handle.close()
        raise WorkloadError(f"cannot read the CSV header: {exc}", path=str(path)) from None
    if not header:
        handle.close()
        raise WorkloadError(f"empty file; expected a header with {OUR_COLUMNS[0]}, {OUR_COLUMNS[1]}"
                            f"[, {OUR_COLUMNS[2]}]", path=str(path))
    reader.fieldnames = header

    def rows():
        with handle:
            try:
                yield from reader
            except (csv.Error, UnicodeDecodeError) as exc:
                raise WorkloadError(f"malformed CSV after row {reader.line_num - 1}: {exc}",
                                    path=str(path)) from None
    return header, rows()


def _jsonl_columns(path: Path) -> Columns:
    records = []
    with path.open("rb") as handle:       # decoded line by line, so an error names its row
        for line in _utf8_lines(handle, path, records):
            if line.strip():
                row = len(records) + 1
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise WorkloadError(f"invalid JSON ({exc.msg}); expected one object per line",
                                        path=str(path), row=row) from None
                if not isinstance(record, dict):
                    raise WorkloadError(f"got {type(record).__name__}, expected a JSON object",
                                        path=str(path), row=row)
                records.append(record)
    header = list(records[0]) if records else []
    return header, records


def _utf8_lines(handle, path: Path, records: list) -> Iterable[str]:
    """The file's lines as text; a line that is not UTF-8 is an error naming its row."""
    for raw in handle:
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WorkloadError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); expected UTF-8 JSON lines",
                                path=str(path), row=len(records) + 1) from None


def _parquet_columns(path: Path) -> Columns:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise WorkloadError("reading Parquet needs pyarrow: pip install 'kvsched[parquet]'",
                            path=str(path)) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise WorkloadError(f"cannot read Parquet: {exc}", path=str(path)) from None
    data = table.to_pydict()
    header = list(data)
    rows = (dict(zip(header, values)) for values in zip(*data.values()))
    return header, rows


def _pick_columns(path: Path, header: list[str]) -> tuple[str, str, str | None]:
    for prompt, output, arrival in (OUR_COLUMNS, VIDUR_COLUMNS, MOONCAKE_COLUMNS):
        if prompt in header or output in header:
            for name in (prompt, output):
                if name not in header:
                    raise WorkloadError(f"missing column; the columns are {', '.join(header)}",
                                        path=str(path), field=name)
            return prompt, output, arrival if arrival in header else None
    if not header:
        raise WorkloadError("empty file; expected rows with num_prompt_tokens, num_output_tokens",
                            path=str(path))
    raise WorkloadError(f"missing column; expected {OUR_COLUMNS[0]}, {OUR_COLUMNS[1]}"
                        f"[, {OUR_COLUMNS[2]}] or Vidur's {VIDUR_COLUMNS[0]}, {VIDUR_COLUMNS[1]}"
                        f"[, {VIDUR_COLUMNS[2]}] or Mooncake's {MOONCAKE_COLUMNS[0]}, "
                        f"{MOONCAKE_COLUMNS[1]}, {MOONCAKE_HASHES}[, {MOONCAKE_COLUMNS[2]}]; "
                        f"found {', '.join(header)}", path=str(path), field=OUR_COLUMNS[0])


def _read_table(path: Path, columns: Columns, limit: int | None):
    header, rows = columns
    prompt_col, output_col, arrival_col = _pick_columns(path, header)
    hashes = prompt_col == MOONCAKE_COLUMNS[0] and MOONCAKE_HASHES in header
    unit = TIME_UNITS.get(arrival_col, 1.0)
    prompts, outputs, arrivals, pieces = [], [], [], []
    for row_number, record in enumerate(rows, start=1):
        if limit is not None and row_number > limit:
            break
        prompts.append(_token_count(record.get(prompt_col), path, row_number, prompt_col))
        outputs.append(_token_count(record.get(output_col), path, row_number, output_col))
        if arrival_col is not None:
            arrivals.append(_arrival(record.get(arrival_col), path, row_number, arrival_col) * unit)
        if hashes:
            pieces.append(_hash_ids(record.get(MOONCAKE_HASHES), prompts[-1], path, row_number))
    if not prompts:
        raise WorkloadError("empty file: a header but no data rows", path=str(path))
    columns_used = {VIDUR_COLUMNS[0]: "vidur", MOONCAKE_COLUMNS[0]: "mooncake"}.get(prompt_col, "kvsched")
    segments = _block_segments(pieces, prompts) if hashes else None
    return prompts, outputs, (arrivals if arrival_col else None), segments, {"columns": columns_used}


def _hash_ids(value: Any, num_prompt_tokens: int, path: Path, row: int) -> list[int]:
    """A Mooncake row's ``hash_ids``: ceil(prompt / 512) integers in [0, 2^63), no id twice in a row."""
    expected = (f"a list of ceil(input_length / {MOONCAKE_BLOCK_TOKENS}) = "
                f"{-(-num_prompt_tokens // MOONCAKE_BLOCK_TOKENS)} integer ids >= 0")
    if not isinstance(value, list):
        shown = "an empty value" if value is None else f"a {type(value).__name__}"
        raise WorkloadError(f"got {shown}, expected {expected}", path=str(path), row=row, field=MOONCAKE_HASHES)
    for position, item in enumerate(value, start=1):
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= MAX_HASH_ID:
            raise WorkloadError(f"id {position} is {item!r}, expected {expected}", path=str(path), row=row,
                                field=MOONCAKE_HASHES)
    if len(value) != -(-num_prompt_tokens // MOONCAKE_BLOCK_TOKENS):
        raise WorkloadError(f"got {len(value)} ids for input_length {num_prompt_tokens}, expected {expected}",
                            path=str(path), row=row, field=MOONCAKE_HASHES)
    for position, (a, b) in enumerate(zip(value, value[1:]), start=1):
        if a == b:
            raise WorkloadError(f"ids {position} and {position + 1} are both {a}, expected one id per "
                                "block (a prefix hash names its block)", path=str(path), row=row,
                                field=MOONCAKE_HASHES)
    return value


def _block_segments(pieces: list[list[int]], prompts: list[int]) -> PromptSegments:
    """One piece (id, 512) per hash id; the last piece of a prompt covers its remainder."""
    counts = np.array([len(p) for p in pieces], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    ids = np.fromiter((h for p in pieces for h in p), dtype=np.int64, count=int(offsets[-1]))
    lengths = np.full(int(offsets[-1]), MOONCAKE_BLOCK_TOKENS, dtype=np.int64)
    prompt = np.asarray(prompts, dtype=np.int64)
    lengths[offsets[1:] - 1] = prompt - MOONCAKE_BLOCK_TOKENS * (counts - 1)
    return PromptSegments(offsets, ids, lengths)


def _number(value: Any, path: Path, row: int, field: str, expected: str) -> float:
    """A cell as a float; None, empty text, booleans and non-numbers are errors."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        shown = "an empty value" if value in (None, "") or isinstance(value, str) else repr(value)
        raise WorkloadError(f"got {shown}, expected {expected}", path=str(path), row=row, field=field)
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise WorkloadError(f"got {value!r}, expected {expected}",
                            path=str(path), row=row, field=field) from None
    if math.isnan(number):
        raise WorkloadError(f"got NaN, expected {expected}", path=str(path), row=row, field=field)
    return number


def _token_count(value: Any, path: Path, row: int, field: str) -> int:
    expected = "an integer >= 1"
    number = _number(value, path, row, field, expected)
    if not (math.isfinite(number) and number.is_integer()):
        raise WorkloadError(f"got {value!r}, expected {expected}", path=str(path), row=row, field=field)
    if number < 1:
        raise WorkloadError(f"got {int(number)}, expected {expected}", path=str(path), row=row, field=field)
    if number > MAX_TOKENS:     # beyond int64 the engine's arrays would wrap around
        raise WorkloadError(f"got {value!r}, expected an integer in [1, 2^53]", path=str(path), row=row,
                            field=field)
    return int(number)


def _arrival(value: Any, path: Path, row: int, field: str) -> float:
    expected = f"a finite time in {'milliseconds' if TIME_UNITS.get(field) == 1e-3 else 'seconds'} >= 0"
    number = _number(value, path, row, field, expected)
    if not math.isfinite(number) or number < 0:
        raise WorkloadError(f"got {value!r}, expected {expected}", path=str(path), row=row, field=field)
    return number


# --------------------------------------------------------------------------- ShareGPT

_HUMAN = ("human", "user")
_ASSISTANT = ("gpt", "assistant", "chatgpt", "bard", "model")


def approximate_tokens(text: str) -> int:
    """ceil(1.3 × whitespace-separated words), at least 1 (no tokenizer needed)."""
    return max(1, math.ceil(TOKENS_PER_WORD * len(text.split())))


def _read_sharegpt(path: Path, count_tokens, limit: int | None):
    count = count_tokens or approximate_tokens
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        if not path.read_text(encoding="utf-8", errors="replace").strip():
            raise WorkloadError("empty file; expected a JSON list of conversations",
                                path=str(path)) from None
        raise WorkloadError(f"invalid JSON at line {exc.lineno}: {exc.msg}", path=str(path)) from None
    except UnicodeDecodeError:
        raise WorkloadError("not UTF-8 text; expected a UTF-8 JSON list of conversations",
                            path=str(path)) from None
    if not isinstance(data, list):
        raise WorkloadError(f"got a JSON {type(data).__name__}, expected a list of "
                            "{\"conversations\": [...]} objects", path=str(path))
    prompts, outputs, skipped = [], [], 0
    for row, item in enumerate(data, start=1):
        if limit is not None and len(prompts) >= limit:
            break
        pair = _first_exchange(item, path, row)
        if pair is None:
            skipped += 1
            continue
        prompts.append(count(pair[0]))
        outputs.append(count(pair[1]))
    if not prompts:
        raise WorkloadError("no conversation with a human turn followed by a reply"
                            if data else "empty list; expected ShareGPT conversations", path=str(path))
    meta = {"columns": "sharegpt", "num_skipped_conversations": skipped,
            "token_count": "exact" if count_tokens else f"approx: ceil({TOKENS_PER_WORD} x words)"}
    return prompts, outputs, None, meta


def _first_exchange(item: Any, path: Path, row: int) -> tuple[str, str] | None:
    """The first (human text, reply text) of one conversation, or None if it has none."""
    if not isinstance(item, dict) or not isinstance(item.get("conversations"), list):
        raise WorkloadError("expected an object with a 'conversations' list",
                            path=str(path), row=row, field="conversations")
    turns = item["conversations"]
    for i, turn in enumerate(turns):
        if not (isinstance(turn, dict) and isinstance(turn.get("from"), str)
                and isinstance(turn.get("value"), str)):
            raise WorkloadError(f"turn {i + 1}: expected {{\"from\": str, \"value\": str}}",
                                path=str(path), row=row, field="conversations")
    for first, second in zip(turns, turns[1:]):
        if first["from"].lower() in _HUMAN and second["from"].lower() in _ASSISTANT:
            return first["value"], second["value"]
    return None
