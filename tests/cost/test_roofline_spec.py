"""``--cost roofline:...``: parsed into a RooflineCost with vLLM's KV capacity; bad specs are one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kvsched.cli.app import app
from kvsched.cost.roofline import RooflineCost, load_model_config, vllm_kv_capacity
from kvsched.cost.gpus import get_gpu
from kvsched.errors import ConfigError
from kvsched.experiments.scenario import build_simulator, parse_cost


def test_roofline_spec_gives_the_model_and_vllms_capacity():
    spec = parse_cost("roofline:model=llama-3.1-70b,gpu=h100-sxm,tp=4")
    assert isinstance(spec.cost, RooflineCost)
    assert (spec.cost.gpu.name, spec.cost.tensor_parallel, spec.cost.dtype) == ("h100-sxm", 4, "bf16")
    expected = vllm_kv_capacity(load_model_config("llama-3.1-70b"), get_gpu("h100-sxm"), 4)
    assert spec.kv_capacity_tokens == expected.kv_capacity_tokens and spec.block_size == 16
    assert build_simulator(spec).kv_capacity_tokens == expected.kv_capacity_tokens
    assert build_simulator(spec, kv_capacity=4096).kv_capacity_tokens == 4096   # the option wins


def test_roofline_spec_options(tmp_path):
    spec = parse_cost(" roofline: model=qwen2.5-7b , gpu=L40S, dtype=FP8, overhead=0.003, seq_overhead=2e-5")
    assert spec.cost.dtype == "fp8" and spec.cost.gpu.name == "l40s"
    assert spec.cost.iteration_overhead_time == 0.003 and spec.cost.seq_overhead_time == 2e-5
    config = {"hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 4,
              "intermediate_size": 512, "vocab_size": 1000}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert parse_cost(f"roofline:model={tmp_path / 'config.json'},gpu=l4").cost.model.num_layers == 4


@pytest.mark.parametrize("text, words", [
    ("roofline:gpu=h100-sxm", "model= is required"),
    ("roofline:model=llama-3.1-8b", "gpu= is required"),
    ("roofline:model=llama-3.1-8b,gpu=h100-sxm,tp=0", "tp='0'"),
    ("roofline:model=llama-3.1-8b,gpu=h100-sxm,tp=two", "tp='two'"),
    ("roofline:model=llama-3.1-8b,gpu=h100-sxm,tp=3", "tp=3"),
    ("roofline:model=llama-3.1-8b,gpu=tpu", "unknown GPU 'tpu'"),
    ("roofline:model=llama-3.1-8b,gpu=h100-sxm,dtype=int4", "dtype='int4'"),
    ("roofline:model=llama-3.1-8b,gpu=h100-sxm,batch=3", "unknown key 'batch'"),
    ("roofline:model=llama-3.1-8b,gpu=h100-sxm,overhead=-1", "overhead"),
    ("roofline:model=llama-3.1-8b,gpu=h100-sxm,overhead=nan", "overhead"),
    ("roofline:model=llama-3.1-70b,gpu=l4", "no room for a KV block"),
    ("roofline:model=no-such-model,gpu=h100-sxm", "not a shipped config"),
    ("roofline:model=llama-3.1-8b,gpu", "expected name=value"),
])
def test_bad_roofline_specs_are_config_errors(text, words):
    with pytest.raises(ConfigError, match="--cost roofline") as info:
        parse_cost(text)
    assert words in str(info.value)


def test_cli_prints_one_line_for_a_bad_roofline_spec():
    result = CliRunner().invoke(app, ["simulate", "--cost", "roofline:model=llama-3.1-8b,gpu=tpu"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --cost roofline") and "tpu" in lines[0]


def test_presets_lists_roofline_presets_with_their_capacity():
    result = CliRunner().invoke(app, ["presets", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    row = rows["llama-3.1-70b-h100-sxm-tp4"]
    assert row["cost_model"] == "roofline" and row["gpu"] == "h100-sxm" and row["tensor_parallel"] == 4
    assert row["kv_capacity_tokens"] == parse_cost("roofline:model=llama-3.1-70b,gpu=h100-sxm,tp=4").kv_capacity_tokens
    assert rows["llama2-70b-a100-tp2"]["cost_model"] == "calibrated"
    assert parse_cost("preset:llama-3.1-8b-h100-sxm").kv_capacity_tokens == rows["llama-3.1-8b-h100-sxm"]["kv_capacity_tokens"]
