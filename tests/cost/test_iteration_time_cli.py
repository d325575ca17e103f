"""``kvsched iteration-time``: the time and breakdown of one batch; bad options are one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kvsched.cli.app import app
from kvsched.cost.models import BatchStats
from kvsched.cost.presets import get_preset
from kvsched.experiments.scenario import parse_cost


def run(*args: str):
    return CliRunner().invoke(app, ["iteration-time", *args])


def test_json_is_the_models_own_numbers():
    spec = "roofline:model=llama-3.1-70b,gpu=h100-sxm,tp=4"
    result = run("--cost", spec, "--decode-seqs", "64", "--context-tokens", "64000", "--prefill-tokens", "512",
                 "--prefill-cached-tokens", "1000", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    batch = BatchStats(num_prefill_tokens=512, num_prefill_seqs=1, prefill_context_tokens=1512,
                       prefill_attention_work=512 * 1512, num_decode_seqs=64, decode_context_tokens=64000)
    cost = parse_cost(spec).cost
    assert data["iteration_time"] == pytest.approx(cost.iteration_time(batch))
    assert data["breakdown"] == pytest.approx(cost.breakdown(batch))
    assert data["iteration_time"] == pytest.approx(sum(data["breakdown"].values()))
    assert data["memory_floor_time"] <= data["iteration_time"] and data["cost"] == spec


def test_calibrated_preset_and_linear():
    result = run("--cost", "preset:llama2-7b-a100", "--decode-seqs", "8", "--context-tokens", "8000", "--json")
    data = json.loads(result.output)
    cost = get_preset("llama2-7b-a100").cost
    assert data["iteration_time"] == cost.iteration_time(BatchStats(num_decode_seqs=8, decode_context_tokens=8000))
    assert set(data["breakdown"]) >= {"linear", "attn_decode"} and "memory_floor_time" not in data
    # linear: d0 + d1 · KV tokens = 0.01 + 1e-6 · (100 + 50 + 10) by hand
    result = run("--cost", "linear:d0=0.01,d1=1e-6", "--decode-seqs", "2", "--context-tokens", "100",
                 "--prefill-tokens", "10", "--prefill-cached-tokens", "50", "--json")
    assert json.loads(result.output)["iteration_time"] == pytest.approx(0.01 + 1e-6 * 160)


def test_table_lists_the_parts_in_ms():
    result = run("--cost", "roofline:model=llama-3.1-8b,gpu=h100-sxm", "--decode-seqs", "1", "--context-tokens", "1")
    assert result.exit_code == 0, result.output
    for word in ("gemm", "attn_decode", "lm_head", "iteration", "memory floor"):
        assert word in result.output


@pytest.mark.parametrize("args, option", [
    (["--decode-seqs", "-1"], "--decode-seqs"),
    (["--decode-seqs", "4", "--context-tokens", "3"], "--context-tokens"),
    (["--context-tokens", "30"], "--context-tokens"),
    (["--prefill-tokens", "-5"], "--prefill-tokens"),
    (["--prefill-cached-tokens", "5", "--decode-seqs", "1", "--context-tokens", "1"], "--prefill-cached-tokens"),
    ([], "the batch is empty"),
    (["--decode-seqs", "1", "--context-tokens", "1", "--cost", "roofline:model=llama-3.1-8b,gpu=tpu"], "tpu"),
    (["--decode-seqs", "1", "--context-tokens", "1", "--cost", "preset:nope"], "unknown preset"),
])
def test_bad_input_is_one_line(args, option):
    if "--cost" not in args:
        args = ["--cost", "preset:llama2-7b-a100", *args]
    result = run(*args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and option in lines[0], result.output


def test_missing_cost_is_one_line():
    result = run("--decode-seqs", "1", "--context-tokens", "1")
    assert result.exit_code == 2 and "--cost" in result.output
