"""RooflineCost, the GPU table, the shipped configs, vLLM's KV capacity and the floors of every preset."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from kvsched.cost.gpus import GPUS, get_gpu
from kvsched.cost.models import BatchStats, CostModel
from kvsched.cost.presets import get_preset, list_presets
from kvsched.cost.roofline import (PARTS, Efficiencies, ModelConfig, PartFit, RooflineCost, Shard, build_roofline,
                                   causal_pairs, list_model_configs, load_fit, load_model_config,
                                   prefill_kv_passes, vllm_kv_capacity)
from kvsched.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILES = REPO_ROOT.parent / "shared" / "data" / "vidur" / "data" / "profiling"
needs_profiles = pytest.mark.skipif(not PROFILES.is_dir(), reason="../shared/data/vidur absent")
UNIT = Efficiencies()   # every efficiency 1, no fixed time: the pure roofline


def decode(n: int, context: int) -> BatchStats:
    return BatchStats(num_decode_seqs=n, decode_context_tokens=context)


def prefill(tokens: int, cached: int = 0) -> BatchStats:
    return BatchStats(num_prefill_tokens=tokens, num_prefill_seqs=1, prefill_context_tokens=cached + tokens,
                      prefill_attention_work=tokens * (cached + tokens))


# ---------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name, params", [   # the parameter counts the model cards publish
    ("llama-2-7b", 6_738_415_616), ("llama-2-70b", 68_976_648_192), ("llama-3.1-8b", 8_030_261_248),
    ("llama-3.1-70b", 70_553_706_496), ("mistral-7b", 7_241_732_096), ("qwen2.5-7b", 7_615_616_512),
    ("qwen2.5-72b", 72_706_203_648)])
def test_shipped_configs_give_the_published_parameter_counts(name, params):
    assert load_model_config(name).num_params == params


def test_configs_load_by_name_hf_id_or_path(tmp_path):
    assert set(list_model_configs()) >= {"llama-3.1-8b", "llama-3.1-70b", "qwen2.5-7b", "qwen2.5-72b",
                                         "mistral-7b", "llama-2-7b", "llama-2-70b"}
    assert load_model_config("meta-llama/Llama-2-7b-hf") == load_model_config("llama-2-7b")
    config = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 128,
              "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps(config))
    tiny = load_model_config(str(tmp_path))
    assert (tiny.num_kv_heads, tiny.head_dim) == (4, 16)   # absent fields: MHA, hidden / heads


@pytest.mark.parametrize("change, field", [
    ({"num_local_experts": 8}, "num_local_experts"), ({"hidden_size": "4096"}, "hidden_size"),
    ({"num_key_value_heads": 3}, "num_key_value_heads"), ({"num_hidden_layers": 0}, "num_hidden_layers")])
def test_bad_configs_are_config_errors_naming_the_field(tmp_path, change, field):
    config = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 128,
              "vocab_size": 100, **change}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=field):
        load_model_config(str(path))


def test_unreadable_and_unknown_configs(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        load_model_config(str(tmp_path / "bad.json"))
    with pytest.raises(ConfigError, match="llama-3.1-8b"):   # names the shipped ones
        load_model_config("gpt-oss")


# ---------------------------------------------------------------------------- GPU table
def test_gpu_table_rows_cite_a_datasheet_and_are_dense():
    assert set(GPUS) >= {"a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "b200", "l40s", "l4", "mi300x"}
    for gpu in GPUS.values():
        assert "datasheet" in gpu.source
        assert 100e12 < gpu.dense_bf16_flops < 3e15 and 0.2e12 < gpu.hbm_bandwidth < 10e12
    # dense, not "with sparsity": H100 SXM 989 TFLOPS (1,979 sparse), A100 312 (624 sparse)
    assert get_gpu("H100-SXM").dense_bf16_flops == pytest.approx(989.4e12)
    assert get_gpu("a100-80gb").dense_bf16_flops == 312e12 and get_gpu("a100-80gb").hbm_bandwidth == 2.039e12
    with pytest.raises(ConfigError, match="h100-sxm"):
        get_gpu("tpu-v5")


# ---------------------------------------------------------------------------- the model, by hand
def test_one_decode_on_llama2_7b_a100_is_its_weights_over_bandwidth():
    """Unit efficiencies: per layer W = 4096·128·96 + 4096·4096 + 3·4096·11008 = 202,375,168 weights
    plus 65,792 activations in/out, 2 bytes each → 404,881,920 B / 2.039 TB/s = 198.57 µs; × 32 layers;
    LM head 32000·4096·2 B / 2.039 TB/s = 128.56 µs. FLOPs (4·10⁸ per layer) are far below the ridge."""
    cost = RooflineCost(load_model_config("llama-2-7b"), get_gpu("a100-80gb"), 1, "fp16", UNIT)
    parts = cost.breakdown(decode(1, 1))
    assert parts["gemm"] == pytest.approx(32 * 404_881_920 / 2.039e12)
    assert parts["lm_head"] == pytest.approx(262_144_000 / 2.039e12)
    # elementwise: 2·(10·4096 + 2·128·64 + 3·11008) = 2·90,368 = 180,736 B per layer
    assert parts["elementwise"] == pytest.approx(32 * 180_736 / 2.039e12)
    # decode attention: K and V of 1 token, 32 heads of 128, plus Q and O: 2·(2·32·128 + 2·32·128) B
    assert parts["attn_decode"] == pytest.approx(32 * 2 * (2 * 4096 + 2 * 4096) / 2.039e12)
    assert parts["attn_prefill"] == parts["all_reduce"] == parts["overhead"] == 0.0
    assert cost.iteration_time(decode(1, 1)) == pytest.approx(sum(parts.values()))
    assert isinstance(cost, CostModel)


def test_a_long_prefill_is_compute_bound_and_the_all_reduce_is_a_ring():
    """Llama-2-70B TP2, one 4096-token chunk, unit efficiencies: GEMM FLOPs 2·4096·W per layer over
    312 TFLOPS; all-reduce 2·(2−1)/2·4096·8192·2 B = 67.1 MB over 300 GB/s (one NVLink direction), twice."""
    cost = RooflineCost(load_model_config("llama-2-70b"), get_gpu("a100-80gb"), 2, "fp16", UNIT)
    shard = cost.shard
    parts = cost.breakdown(prefill(4096))
    assert parts["gemm"] == pytest.approx(80 * 2 * 4096 * shard.linear_weights / 312e12)
    assert parts["all_reduce"] == pytest.approx(80 * 2 * (2 * (2 - 1) / 2 * 4096 * 8192 * 2) / 300e9)
    # causal pairs of one chunk without cache: 4096·4097/2; 32 query heads per GPU, d = 128
    assert causal_pairs(prefill(4096)) == 4096 * 4097 / 2
    assert parts["attn_prefill"] >= 80 * 4 * 128 * 32 * (4096 * 4097 / 2) / 312e12
    assert prefill_kv_passes(prefill(4096)) == 32 and prefill_kv_passes(prefill(100)) == 1


def test_part_fit_by_hand():
    """fixed + max(C, M) + overlap · min(C, M): 1 GFLOP at 1 TFLOP/s · 0.5 = 2 ms, 1 GB at 1 TB/s · 0.25 = 4 ms."""
    fit = PartFit(fixed_time=0.001, compute=0.5, memory=0.25, overlap=0.5)
    assert fit.time(1e9, 1e9, 1e12, 1e12) == pytest.approx(0.001 + 0.004 + 0.5 * 0.002)
    assert PartFit().time(1e9, 1e9, 1e12, 1e12) == pytest.approx(0.001)   # the pure roofline
    with pytest.raises(ValueError):
        PartFit(overlap=1.5)


def test_kv_heads_are_replicated_beyond_their_count():
    shard = Shard(load_model_config("llama-3.1-70b"), 16, 2)   # 8 KV heads over 16 GPUs: 1 each
    assert shard.kv_heads == 1 and shard.q_heads == 4
    with pytest.raises(ConfigError, match="tp=3"):
        Shard(load_model_config("llama-3.1-70b"), 3, 2)


def test_overheads_and_efficiency_checks():
    cost = build_roofline("llama-3.1-8b", "h100-sxm", iteration_overhead_time=0.002, seq_overhead_time=1e-5)
    assert cost.breakdown(decode(10, 100))["overhead"] == pytest.approx(0.002 + 10e-5)
    assert cost.iteration_time(BatchStats()) == 0.0
    with pytest.raises(ValueError):
        PartFit(compute=1.5)
    with pytest.raises(ConfigError, match="dtype"):
        build_roofline("llama-3.1-8b", "h100-sxm", dtype="int3")


def test_faster_gpu_is_faster_and_fp8_halves_weight_reads():
    batch = decode(32, 32 * 2000)
    a100, h100 = (build_roofline("llama-3.1-8b", g).iteration_time(batch) for g in ("a100-80gb", "h100-sxm"))
    assert h100 < a100
    bf16 = build_roofline("llama-3.1-8b", "h100-sxm")
    fp8 = build_roofline("llama-3.1-8b", "h100-sxm", dtype="fp8")
    assert fp8.memory_floor_time() == pytest.approx(bf16.memory_floor_time() / 2)


# ---------------------------------------------------------------------------- KV capacity
def test_vllm_kv_capacity_hand_worked():
    """Llama-3.1-8B on one H100-80GB, bf16: 0.9 · 80 GiB = 77,309,411,328 B; weights 8,030,261,248 · 2
    = 16,060,522,496 B; activations 8192 · 2 · (3·14336 + 2·4096) = 838,860,800 B plus logits
    256 · 8 · 128,256 = 262,668,288 B; left 60,147,359,744 B / 131,072 B per token = 458,888 → 458,880."""
    kv = vllm_kv_capacity(load_model_config("llama-3.1-8b"), get_gpu("h100-sxm"))
    assert kv.weight_bytes_per_gpu == 16_060_522_496
    assert kv.activation_bytes_per_gpu == 838_860_800 + 262_668_288
    assert kv.bytes_per_kv_token == 131_072
    assert kv.kv_bytes_per_gpu == 60_147_359_744 and kv.kv_capacity_tokens == 458_880
    smaller = vllm_kv_capacity(load_model_config("llama-3.1-8b"), get_gpu("h100-sxm"), gpu_memory_utilization=0.5)
    assert smaller.kv_capacity_tokens < kv.kv_capacity_tokens
    with pytest.raises(ConfigError, match="no room"):
        vllm_kv_capacity(load_model_config("llama-3.1-70b"), get_gpu("h100-sxm"), 1)


# ---------------------------------------------------------------------------- floors, every preset
def _floor_model(preset) -> RooflineCost:
    """The roofline of the preset's model and GPU: its floors are the preset's."""
    config = preset.model if isinstance(preset.model, ModelConfig) else load_model_config(preset.model.name)
    return RooflineCost(config, get_gpu(preset.gpu), preset.tensor_parallel, "fp16", UNIT)


BATCHES = ([decode(n, n * c) for n in (1, 2, 4, 8, 32, 128, 256, 512) for c in (1, 1000, 4000)]
           + [prefill(p, k) for p in (1, 128, 512, 2048, 8192) for k in (0, 3000)]
           + [BatchStats(num_prefill_tokens=512, num_prefill_seqs=1, prefill_context_tokens=512,
                         prefill_attention_work=512 * 512, num_decode_seqs=64, decode_context_tokens=64_000)])


@pytest.mark.parametrize("name", list_presets())
def test_no_preset_beats_the_memory_or_compute_floor(name):
    preset = get_preset(name)
    floor = _floor_model(preset)
    for batch in BATCHES:
        t = preset.cost.iteration_time(batch)
        assert t >= floor.memory_floor_time(), f"{name}: {t * 1e3:.3f} ms < memory floor at {batch}"
        assert t >= floor.compute_floor_time(batch), f"{name}: {t * 1e3:.3f} ms < compute floor at {batch}"


def test_the_floors_hand_worked():
    """Llama-2-7B, A100-80GB: (32 · 202,375,168 + 131,072,000) · 2 B = 13,214,154,752 B / 2.039 TB/s = 6.48 ms."""
    floor = _floor_model(get_preset("llama2-7b-a100"))
    assert floor.memory_floor_time() == pytest.approx(13_214_154_752 / 2.039e12)
    flops = 32 * (2 * 1024 * 202_375_168 + 4 * 128 * 32 * 1024 * 1025 / 2) + 2 * 131_072_000
    assert floor.compute_floor_time(prefill(1024)) == pytest.approx(flops / 312e12)


@pytest.mark.parametrize("gpu", sorted(GPUS))
@pytest.mark.parametrize("config", ["llama-3.1-8b", "qwen2.5-72b"])
def test_the_fitted_roofline_respects_its_floors_on_every_gpu(gpu, config):
    cost = build_roofline(config, gpu, 8 if "72b" in config else 1)
    for batch in BATCHES:
        t = cost.iteration_time(batch)
        assert t >= cost.memory_floor_time() and t >= cost.compute_floor_time(batch)


# ---------------------------------------------------------------------------- presets, fit
def test_roofline_presets_state_capacity_and_a100_error():
    roofline = [get_preset(n) for n in list_presets() if get_preset(n).cost_model == "roofline"]
    assert {p.name for p in roofline} >= {"llama-3.1-70b-h100-sxm-tp4", "llama-3.1-8b-h100-sxm",
                                          "qwen2.5-72b-h100-sxm-tp4"}
    for p in roofline:
        assert isinstance(p.cost, RooflineCost) and p.activation_bytes_per_gpu > 0
        assert p.kv_capacity_tokens * p.bytes_per_kv_token <= p.kv_bytes_per_gpu
        assert set(p.fit_error) == set(PARTS) - ({"all_reduce"} if p.tensor_parallel == 1 else set())


def test_shipped_efficiencies_are_physical_with_held_out_errors():
    fit = load_fit()
    efficiencies = Efficiencies.from_dict(fit["efficiencies"])   # PartFit validates (0, 1]
    assert efficiencies.gemm.compute < 1 and efficiencies.attn_decode.memory < 1
    errors = fit["held_out_mape"]
    assert set(errors["per_operator"]) == set(PARTS)
    assert all(0 < e["mape"] < 20 for e in errors["per_operator"].values())
    assert set(errors["cross_model"]["gemm"]) == {"llama-2-7b", "llama-2-70b", "llama-3-8b"}


@needs_profiles
def test_shipped_efficiencies_are_what_the_fit_script_writes(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("fit_roofline", REPO_ROOT / "scripts" / "fit_roofline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "roofline.json"
    assert module.main(["--profiles", str(PROFILES), "--output", str(out)]) == 0
    assert json.loads(out.read_text()) == load_fit()
    assert "cross-model" in capsys.readouterr().out


@st.composite
def batches(draw) -> BatchStats:
    """A batch as the engine builds it: prefill chunks after cached context, decodes with context."""
    chunks = draw(st.lists(st.tuples(st.integers(1, 4096), st.integers(0, 8192)), max_size=4))
    n = draw(st.integers(0 if chunks else 1, 300))
    per_decode = draw(st.integers(1, 8000))
    return BatchStats(num_prefill_tokens=sum(c for c, _ in chunks), num_prefill_seqs=len(chunks),
                      prefill_context_tokens=sum(c + k for c, k in chunks),
                      prefill_attention_work=sum(c * (c + k) for c, k in chunks),
                      num_decode_seqs=n, decode_context_tokens=n * per_decode)


@settings(max_examples=80, deadline=None)
@given(batch=batches(), config=st.sampled_from(["llama-3.1-8b", "qwen2.5-72b", "mistral-7b"]),
       gpu=st.sampled_from(sorted(GPUS)), tp=st.sampled_from([1, 2, 4, 8]))
def test_property_the_fitted_roofline_never_beats_its_floors(batch, config, gpu, tp):
    cost = build_roofline(config, gpu, tp)
    t = cost.iteration_time(batch)
    assert t >= cost.memory_floor_time() and t >= cost.compute_floor_time(batch)
    assert t == pytest.approx(sum(cost.breakdown(batch).values()))
