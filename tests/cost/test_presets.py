"""Presets: KV capacity from GPU memory and weights, bytes per KV token, fit errors, `kvsched presets`."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from kvsched.cost.calibrated import CalibratedCost
from kvsched.cli.presets import register
from kvsched.cost.models import BatchStats
from kvsched.errors import ConfigError
from kvsched.cost.presets import Preset, get_preset, kv_capacity, list_presets, LLAMA2_70B

REQUIRED = ("llama2-70b-a100-tp2", "llama2-7b-a100", "llama3-8b-a100")


def test_required_presets_exist():
    assert set(REQUIRED) <= set(list_presets())
    for name in list_presets():
        preset = get_preset(name)
        assert isinstance(preset, Preset) and preset.name == name
        assert isinstance(preset.cost, CalibratedCost) == (preset.cost_model == "calibrated")
        assert preset.block_size == 16 and preset.gpu_memory_utilization == 0.9


def test_unknown_preset_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match="llama2-70b-a100-tp2"):
        get_preset("gpt-5-h100")


@pytest.mark.parametrize("name, layers, kv_heads, tp", [
    ("llama2-70b-a100-tp2", 80, 8, 2), ("llama2-7b-a100", 32, 32, 1), ("llama3-8b-a100", 32, 8, 1)])
def test_bytes_per_kv_token(name, layers, kv_heads, tp):
    assert get_preset(name).bytes_per_kv_token == 2 * layers * kv_heads * 128 * 2 // tp


def test_70b_tp2_capacity_hand_worked():
    # 0.9 · 80 GiB = 77,309,411,328 B; weights 68,976,648,192 params · 2 B / 2 GPUs = 68,976,648,192 B;
    # 8,332,763,136 B / 163,840 B per token = 50,859.1 → 50,848 tokens in whole blocks of 16
    preset = get_preset("llama2-70b-a100-tp2")
    assert preset.weight_bytes_per_gpu == 68_976_648_192
    assert preset.kv_bytes_per_gpu == 8_332_763_136
    assert preset.kv_capacity_tokens == 50_848
    # MC-SF's M = 16,492 is about a third of it (see the presets module docstring)
    assert 3.0 < preset.kv_capacity_tokens / 16_492 < 3.2


def test_capacity_is_whole_blocks_and_fits_memory():
    for name in list_presets():
        p = get_preset(name)
        assert p.kv_capacity_tokens % p.block_size == 0
        assert p.kv_capacity_tokens * p.bytes_per_kv_token <= p.kv_bytes_per_gpu
        assert (p.kv_capacity_tokens + p.block_size) * p.bytes_per_kv_token > p.kv_bytes_per_gpu


def test_a_model_that_does_not_fit_is_a_config_error():
    with pytest.raises(ConfigError):
        kv_capacity(LLAMA2_70B, 1)   # 138 GB of weights on one 80 GB GPU


def test_fit_errors_cover_the_operator_groups():
    tp2 = get_preset("llama2-70b-a100-tp2")
    assert set(tp2.fit_error) == {"linear", "elementwise", "attn_prefill", "attn_decode", "all_reduce"}
    assert not tp2.attention_derived
    single = get_preset("llama2-7b-a100")
    assert "all_reduce" not in single.fit_error and single.attention_derived
    calibrated = [p for p in map(get_preset, list_presets()) if p.cost_model == "calibrated"]
    assert all(0 < e < 10 for p in calibrated for e in p.fit_error.values())   # roofline: test_roofline.py


def test_larger_model_is_slower_per_decode_step():
    batch = BatchStats(num_decode_seqs=16, decode_context_tokens=16 * 1000)
    t70 = get_preset("llama2-70b-a100-tp2").cost.iteration_time(batch)
    t7 = get_preset("llama2-7b-a100").cost.iteration_time(batch)
    assert t70 > 3 * t7


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app, None)

    @app.command()
    def noop() -> None:   # a second command keeps `presets` a subcommand
        pass
    return app


def test_presets_command_lists_capacity_and_fit_error():
    result = CliRunner().invoke(_app(), ["presets"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    for name in REQUIRED:
        assert name in result.output
    assert "50,848" in result.output
    assert f"{get_preset('llama2-70b-a100-tp2').fit_error['attn_decode']:.1f}" in result.output


def test_presets_command_json():
    result = CliRunner().invoke(_app(), ["presets", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["llama2-70b-a100-tp2"]["kv_capacity_tokens"] == get_preset("llama2-70b-a100-tp2").kv_capacity_tokens
    assert set(rows["llama3-8b-a100"]["fit_error"]) >= {"linear", "attn_decode"}
