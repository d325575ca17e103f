"""Mooncake's trace format in load_trace: the real FAST'25 conversation trace (read from shared/data,
never copied) and bad rows in temporary files, each a one-line error naming file, row and field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kvsched.errors import WorkloadError
from kvsched.workload.traces import load_trace

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mooncake" / "conversation_trace.jsonl"
needs_real = pytest.mark.skipif(not REAL.is_file(), reason="shared/data/mooncake is not mounted")


def write(tmp_path: Path, rows: list, name: str = "trace.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def row(timestamp=0, input_length=1000, output_length=5, hash_ids=(0, 1)):
    return {"timestamp": timestamp, "input_length": input_length, "output_length": output_length,
            "hash_ids": list(hash_ids)}


def test_small_trace_by_hand(tmp_path):
    # rows: 1000 tokens = blocks [0, 1] (512 + 488); 600 tokens sharing block 0 = [0, 2] (512 + 88);
    # 512 tokens = [3]; timestamps in ms, unsorted
    path = write(tmp_path, [row(1500, 1000, 5, [0, 1]), row(250, 600, 7, [0, 2]), row(0, 512, 1, [3])])
    w = load_trace(path)
    assert w.arrival_time.tolist() == [0.0, 0.25, 1.5]
    assert w.num_prompt_tokens.tolist() == [512, 600, 1000]
    assert w.true_output_tokens.tolist() == [1, 7, 5]
    assert [w.segments.of(i) for i in range(3)] == [[(3, 512)], [(0, 512), (2, 88)], [(0, 512), (1, 488)]]
    assert w.meta["columns"] == "mooncake"


def test_num_requests_and_rate_keep_segments(tmp_path):
    path = write(tmp_path, [row(0, 1000, 5, [0, 1]), row(10, 600, 7, [0, 2]), row(20, 512, 1, [3])])
    head = load_trace(path, num_requests=2)
    assert len(head) == 2 and head.segments.of(1) == [(0, 512), (2, 88)]
    poisson = load_trace(path, rate=1.0, seed=3)
    assert sorted(poisson.segments.of(i) for i in range(3)) == sorted(
        [[(0, 512), (1, 488)], [(0, 512), (2, 88)], [(3, 512)]])


def test_without_timestamps_arrivals_are_made(tmp_path):
    rows = [{k: v for k, v in row().items() if k != "timestamp"}] * 2
    w = load_trace(write(tmp_path, rows))
    assert w.arrival_time.tolist() == [0.0, 0.0] and w.segments is not None


@needs_real
def test_the_real_conversation_trace():
    w = load_trace(REAL)
    assert len(w) == 12_031
    # its README: average input 12,035 tokens, average output 343
    assert w.num_prompt_tokens.mean() == pytest.approx(12_035, abs=1)
    assert w.true_output_tokens.mean() == pytest.approx(343, abs=1)
    assert w.arrival_time[0] == 0 and w.arrival_time[-1] == pytest.approx(3536.999)   # ms -> s
    assert w.segments.num_tokens().tolist() == w.num_prompt_tokens.tolist()
    # its first row: 6758 tokens as hash ids 0..13, the last block holding 6758 - 13 * 512 = 102
    first = w.segments.of(0)
    assert [x for x, _ in first] == list(range(14)) and first[-1] == (13, 102)
    # every row starts with block 0: the shared system prompt of the service
    assert (w.segments.ids[w.segments.offsets[:-1]] == 0).all()
    assert w.segments.nbytes < 8 * 1024 * 1024


@pytest.mark.parametrize("bad, field, fragment", [
    (row(hash_ids=[0]), "hash_ids", "got 1 ids for input_length 1000, expected a list of ceil(input_length / 512) = 2"),
    (row(hash_ids=[0, 1, 2]), "hash_ids", "got 3 ids"),
    (row(hash_ids=[0, -1]), "hash_ids", "id 2 is -1"),
    (row(hash_ids=[0, 1.5]), "hash_ids", "id 2 is 1.5"),
    (row(hash_ids=[True, 1]), "hash_ids", "id 1 is True"),
    (row(hash_ids=[0, "1"]), "hash_ids", "id 2 is '1'"),
    (row(hash_ids=[0, 2 ** 64]), "hash_ids", "id 2 is"),
    (row(hash_ids=[4, 4]), "hash_ids", "ids 1 and 2 are both 4"),
    ({**row(), "hash_ids": "0,1"}, "hash_ids", "got a str"),
    ({**row(), "hash_ids": None}, "hash_ids", "got an empty value"),
    ({k: v for k, v in row().items() if k != "hash_ids"}, "hash_ids", "got an empty value"),
    (row(timestamp=-5), "timestamp", "expected a finite time in milliseconds >= 0"),
    (row(timestamp="soon"), "timestamp", "milliseconds"),
    (row(input_length=0, hash_ids=[]), "input_length", "expected an integer >= 1"),
    (row(output_length=2.5), "output_length", "expected an integer >= 1"),
])
def test_bad_second_row_is_a_one_line_error(tmp_path, bad, field, fragment):
    path = write(tmp_path, [row(), bad])
    with pytest.raises(WorkloadError) as err:
        load_trace(path)
    message = str(err.value)
    assert message.startswith(f"{path}, row 2, field '{field}': "), message
    assert fragment in message and "\n" not in message


def test_other_jsonl_formats_still_load(tmp_path):
    ours = write(tmp_path, [{"num_prompt_tokens": 5, "num_output_tokens": 2, "arrival_time": 1.5}], "ours.jsonl")
    w = load_trace(ours)
    assert w.segments is None and w.arrival_time.tolist() == [1.5]      # seconds, not ms
    # Mooncake lengths without hash_ids: lengths only, timestamps still in ms
    plain = write(tmp_path, [{"timestamp": 1500, "input_length": 5, "output_length": 2}], "plain.jsonl")
    w = load_trace(plain)
    assert w.segments is None and w.arrival_time.tolist() == [1.5]
    assert np.array_equal(w.num_prompt_tokens, [5])
