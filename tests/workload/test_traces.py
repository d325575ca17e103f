"""Trace loaders: formats, arrival handling and the bad-input cases (each names file, row, field)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from kvsched.errors import WorkloadError
from kvsched.workload.traces import approximate_tokens, load_trace

VIDUR_TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "vidur" / "data" / "processed_traces"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- formats

def test_csv_with_arrivals_is_read_and_sorted_stably(tmp_path):
    path = write(tmp_path, "t.csv", "arrival_time,num_prompt_tokens,num_output_tokens\n"
                                    "2.0,10,1\n0.5,20,2\n2.0,30,3\n0.0,40,4\n")
    w = load_trace(path)
    assert w.arrival_time.tolist() == [0.0, 0.5, 2.0, 2.0]
    # the two rows at t=2.0 keep their file order (stable sort)
    assert w.num_prompt_tokens.tolist() == [40, 20, 10, 30]
    assert w.true_output_tokens.tolist() == [4, 2, 1, 3]
    assert w.name == "t"


def test_jsonl_and_parquet_match_csv(tmp_path):
    rows = [(0.0, 5, 7), (1.5, 6, 8), (3.0, 9, 1)]
    csv_path = write(tmp_path, "a.csv", "num_prompt_tokens,num_output_tokens,arrival_time\n"
                     + "".join(f"{s},{o},{a}\n" for a, s, o in rows))
    jsonl_path = write(tmp_path, "a.jsonl", "".join(
        json.dumps({"arrival_time": a, "num_prompt_tokens": s, "num_output_tokens": o}) + "\n\n"
        for a, s, o in rows))
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    parquet_path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"arrival_time": [r[0] for r in rows], "num_prompt_tokens": [r[1] for r in rows],
                             "num_output_tokens": [r[2] for r in rows]}), parquet_path)
    loaded = [load_trace(p) for p in (csv_path, jsonl_path, parquet_path)]
    for w in loaded:
        assert w.arrival_time.tolist() == [0.0, 1.5, 3.0]
        assert w.num_prompt_tokens.tolist() == [5, 6, 9]
        assert w.true_output_tokens.tolist() == [7, 8, 1]


def test_vidur_columns(tmp_path):
    path = write(tmp_path, "v.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,374,44\n4.3,396,109\n")
    w = load_trace(path)
    assert w.num_prompt_tokens.tolist() == [374, 396]
    assert w.true_output_tokens.tolist() == [44, 109]
    assert w.arrival_time.tolist() == [0.0, 4.3]
    assert w.meta["columns"] == "vidur"


def test_integral_floats_accepted(tmp_path):
    path = write(tmp_path, "f.csv", "num_prompt_tokens,num_output_tokens\n12.0,3\n")
    assert load_trace(path).num_prompt_tokens.tolist() == [12]


def test_real_vidur_traces():
    if not VIDUR_TRACES.is_dir():
        pytest.skip("shared Vidur data not present")
    conv = load_trace(VIDUR_TRACES / "splitwise_conv.csv", num_requests=500)
    assert len(conv) == 500 and conv.arrival_time[0] == 0.0
    assert np.all(np.diff(conv.arrival_time) >= 0)
    share = load_trace(VIDUR_TRACES / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv")
    assert len(share) == 30731            # row count in shared/data/vidur/README.md
    assert share.num_prompt_tokens.min() >= 1 and share.num_prompt_tokens.max() == 8141
    assert share.true_output_tokens.max() == 1024
    assert np.all(share.arrival_time == 0.0)


# --------------------------------------------------------------------------- arrivals

def test_no_arrivals_all_at_zero_or_poisson(tmp_path):
    path = write(tmp_path, "n.csv", "num_prompt_tokens,num_output_tokens\n" + "10,5\n" * 200)
    assert np.all(load_trace(path).arrival_time == 0.0)
    a = load_trace(path, rate=4.0, seed=3)
    b = load_trace(path, rate=4.0, seed=3)
    c = load_trace(path, rate=4.0, seed=4)
    assert a.arrival_time.tolist() == b.arrival_time.tolist()
    assert a.arrival_time.tolist() != c.arrival_time.tolist()
    assert a.arrival_time[0] == 0.0
    gaps = np.diff(a.arrival_time)
    assert np.all(gaps >= 0)
    assert 0.15 < gaps.mean() < 0.40          # mean gap 1/rate = 0.25 s (199 gaps)


def test_num_requests_keeps_first_rows(tmp_path):
    path = write(tmp_path, "n.csv", "num_prompt_tokens,num_output_tokens\n1,1\n2,2\n3,3\n")
    assert load_trace(path, num_requests=2).num_prompt_tokens.tolist() == [1, 2]


# --------------------------------------------------------------------------- ShareGPT

def test_sharegpt_first_exchange_and_approximation(tmp_path):
    data = [
        {"id": "a", "conversations": [{"from": "human", "value": "one two three four five six seven eight nine ten"},
                                      {"from": "gpt", "value": "yes"},
                                      {"from": "human", "value": "ignored later turn"},
                                      {"from": "gpt", "value": "ignored"}]},
        {"id": "b", "conversations": [{"from": "gpt", "value": "lonely reply"}]},     # skipped
        {"id": "c", "conversations": [{"from": "system", "value": "x"},
                                      {"from": "human", "value": "hi there"},
                                      {"from": "gpt", "value": " ".join(["w"] * 100)}]},
    ]
    w = load_trace(write(tmp_path, "s.json", json.dumps(data)))
    # 10 words -> ceil(13.0) = 13; "yes" -> ceil(1.3) = 2; 2 words -> 3; 100 words -> 130
    assert w.num_prompt_tokens.tolist() == [13, 3]
    assert w.true_output_tokens.tolist() == [2, 130]
    assert w.meta["num_skipped_conversations"] == 1
    assert approximate_tokens("") == 1


def test_sharegpt_with_tokenizer(tmp_path):
    data = [{"conversations": [{"from": "human", "value": "abcd"}, {"from": "gpt", "value": "ab"}]}]
    w = load_trace(write(tmp_path, "s.json", json.dumps(data)), count_tokens=len)
    assert (w.num_prompt_tokens[0], w.true_output_tokens[0]) == (4, 2)


# --------------------------------------------------------------------------- bad input

HEADER = "arrival_time,num_prompt_tokens,num_output_tokens\n"


@pytest.mark.parametrize("body, row, field, expected", [
    ("0,10,5\n1,abc,5\n", 2, "num_prompt_tokens", "expected an integer >= 1"),
    ("0,10,5\n1,10,2.5\n", 2, "num_output_tokens", "expected an integer >= 1"),
    ("0,-3,5\n", 1, "num_prompt_tokens", "got -3"),
    ("0,10,0\n", 1, "num_output_tokens", "got 0"),
    ("0,nan,5\n", 1, "num_prompt_tokens", "got NaN"),
    ("0,10,5\n1,10,5\n2,10,5\n-1,10,5\n", 4, "arrival_time", "expected a finite time in seconds >= 0"),
    ("nan,10,5\n", 1, "arrival_time", "got NaN"),
    ("0,10,5\n1,,5\n", 2, "num_prompt_tokens", "empty value"),
    ("0,10\n", 1, "num_output_tokens", "empty value"),
])
def test_bad_csv_values_name_file_row_field(tmp_path, body, row, field, expected):
    path = write(tmp_path, "bad.csv", HEADER + body)
    with pytest.raises(WorkloadError) as info:
        load_trace(path)
    message = str(info.value)
    assert str(path) in message and f"row {row}" in message and f"'{field}'" in message
    assert expected in message
    assert (info.value.row, info.value.field) == (row, field)


def test_missing_column(tmp_path):
    path = write(tmp_path, "m.csv", "arrival_time,num_prompt_tokens\n0,5\n")
    with pytest.raises(WorkloadError, match=r"field 'num_output_tokens': missing column"):
        load_trace(path)
    path = write(tmp_path, "m2.csv", "foo,bar\n1,2\n")
    with pytest.raises(WorkloadError, match=r"missing column; expected num_prompt_tokens"):
        load_trace(path)


@pytest.mark.parametrize("name, text", [("e.csv", ""), ("e.jsonl", "\n\n"), ("e.json", ""),
                                        ("h.csv", HEADER), ("l.json", "[]")])
def test_empty_file(tmp_path, name, text):
    path = write(tmp_path, name, text)
    with pytest.raises(WorkloadError, match="empty") as info:
        load_trace(path)
    assert str(path) in str(info.value)


def test_empty_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"num_prompt_tokens": pa.array([], pa.int64()),
                             "num_output_tokens": pa.array([], pa.int64())}), path)
    with pytest.raises(WorkloadError, match="empty"):
        load_trace(path)


def test_parquet_null_and_negative(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"num_prompt_tokens": [5, None], "num_output_tokens": [1, 1]}), path)
    with pytest.raises(WorkloadError, match=r"row 2, field 'num_prompt_tokens'"):
        load_trace(path)
    pq.write_table(pa.table({"num_prompt_tokens": [5], "num_output_tokens": [1],
                             "arrival_time": [-0.5]}), path)
    with pytest.raises(WorkloadError, match=r"row 1, field 'arrival_time'"):
        load_trace(path)


def test_unknown_extension_and_missing_file(tmp_path):
    path = write(tmp_path, "t.txt", HEADER + "0,1,1\n")
    with pytest.raises(WorkloadError, match=r"unknown extension '\.txt'; expected one of \.csv"):
        load_trace(path)
    with pytest.raises(WorkloadError, match="no such file"):
        load_trace(tmp_path / "absent.csv")


def test_bad_jsonl_lines(tmp_path):
    path = write(tmp_path, "b.jsonl", '{"num_prompt_tokens": 1, "num_output_tokens": 1}\n{oops\n')
    with pytest.raises(WorkloadError, match=r"row 2: invalid JSON"):
        load_trace(path)
    path = write(tmp_path, "c.jsonl", '{"num_prompt_tokens": 1, "num_output_tokens": 1}\n'
                                      '{"num_prompt_tokens": true, "num_output_tokens": 1}\n')
    with pytest.raises(WorkloadError, match=r"row 2, field 'num_prompt_tokens'"):
        load_trace(path)


def test_bad_sharegpt(tmp_path):
    path = write(tmp_path, "s.json", json.dumps([{"conversations": [{"from": "human", "value": 3}]}]))
    with pytest.raises(WorkloadError, match=r"row 1, field 'conversations': turn 1"):
        load_trace(path)
    path = write(tmp_path, "d.json", json.dumps({"conversations": []}))
    with pytest.raises(WorkloadError, match="expected a list"):
        load_trace(path)
    path = write(tmp_path, "n.json", json.dumps([{"conversations": [{"from": "gpt", "value": "x"}]}]))
    with pytest.raises(WorkloadError, match="no conversation with a human turn"):
        load_trace(path)


def test_bad_rate(tmp_path):
    path = write(tmp_path, "r.csv", "num_prompt_tokens,num_output_tokens\n1,1\n")
    with pytest.raises(WorkloadError, match="expected a rate > 0"):
        load_trace(path, rate=0.0)
    assert not math.isnan(load_trace(path, rate=1.0).arrival_time[0])


def test_sharegpt_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps([{"conversations": [{"from": "human", "value": "caf\u00e9"}]}],
                                ensure_ascii=False).encode("latin-1"))
    with pytest.raises(WorkloadError, match=rf"^{re.escape(str(path))}: not UTF-8"):
        load_trace(path)
