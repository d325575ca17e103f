"""R5 (`kvsched reproduce wait-limits`): the WAIT authors' Vidur settings, and the target's plumbing."""

from __future__ import annotations

import json

import pytest

import kvsched.experiments.wait_limits as wl
from kvsched.cost.presets import LLAMA2_7B, LLAMA3_8B, get_preset
from cli_helpers import run


def test_vidur_memory_planner_capacity_by_hand():
    # Llama-2-7B: hidden 4096, 32 heads of 128 (MHA), MLP 11008, 32 layers. Weights per layer
    # 4096·128·(2·32 + 2·32) + 3·4096·11008 = 67,108,864 + 135,266,304 = 202,375,168 parameters,
    # fp16 x 32 layers = 12,952,010,752 bytes; free = 0.9·80 GiB − that = 64,357,400,576 bytes.
    # A 4096-token slot: 2 (K, V) · 2 bytes · 128 · 32 heads · 4096 · 32 layers = 2,147,483,648 bytes:
    # 29.97 → 29 slots = 29 · 4096 = 118,784 tokens. With half the GPU: 29,997,662,208 / slot → 13.
    assert wl.vidur_kv_capacity(LLAMA2_7B) == 118_784
    assert wl.vidur_kv_capacity(LLAMA3_8B) == 483_328      # GQA: 8 KV heads, 118 slots
    assert wl.vidur_kv_capacity(LLAMA2_7B, margin=0.5) == 13 * 4096


def test_the_papers_capacity_by_hand():
    # The authors' paper-facing runner: margin 0.01, max_tokens = 512 + 20 = 532. Free =
    # 0.99 · 80 GiB − 12,952,010,752 = 72,088,341,708.8 bytes; a 532-token slot is
    # 2 · 2 · 128 · 32 · 532 · 32 = 278,921,216 bytes: 258.45 → 258 slots of 532 // 16 = 33 blocks,
    # 258 · 33 · 16 = 136,224 tokens (the paper: "approximately 1.37 × 10^5").
    assert wl.paper_capacity(LLAMA2_7B, 512, 20) == 136_224
    assert wl.paper_capacity(LLAMA2_7B, 512, 20) == wl.vidur_kv_capacity(LLAMA2_7B, margin=0.01, max_tokens=532)
    assert wl.VIDUR_SARATHI["max_num_seqs"] == 256 and wl.VIDUR_V0["max_num_seqs"] == 128


def test_each_model_runs_in_the_settings_of_the_forks_runs_of_it():
    # llama2-7b: the paper-facing runner (margin 0.01, vLLM's default cap 128, Sarathi512_cap256, untrimmed
    # mean); llama3-8b: Figure B's experiments.db rows (scripts/profile_baselines.py: margin 0.1, vLLM and
    # Sarathi caps 512, the mean over requests [n/4, n - 500)).
    l2, l3 = wl.SETTINGS["llama2-7b"], wl.SETTINGS["llama3-8b"]
    assert (l2.memory_margin, l2.vllm_max_num_seqs, l2.sarathi_max_num_seqs, l2.trimmed) == (0.01, 128, 256, False)
    assert (l3.memory_margin, l3.vllm_max_num_seqs, l3.sarathi_max_num_seqs, l3.trimmed) == (0.1, 512, 512, True)
    # Figure B's capacity by hand: weights 2 bytes * 32 layers * (4096*128*(2*32 + 2*8) + 3*4096*14336)
    # = 13,958,643,712 bytes; free = 0.9 * 80 GiB - that = 63,350,767,616; a 532-token slot is
    # 2*2*128*8*532*32 = 69,730,304 bytes: 908.5 -> 908 slots of 33 blocks of 16.
    assert wl.paper_capacity(LLAMA3_8B, 512, 20, margin=0.1) == 479_424 == 908 * 33 * 16
    assert l3.reference is wl.PAPER_LATENCY and l2.reference is wl.AUTHORS_LLAMA2_LATENCY
    assert wl.PAPER_LATENCY["vllm"][22] == 18.227 and wl.AUTHORS_LLAMA2_LATENCY["vllm"] == {}
    factories = wl.policy_factories(l3, 7)
    assert factories["vllm"]().max_num_seqs == 512 and factories["sarathi"]().max_num_seqs == 512
    factories = wl.policy_factories(l2, 7)
    assert factories["vllm"]().max_num_seqs == 128 and factories["sarathi"]().max_num_seqs == 256


def test_trimmed_mean_is_figure_bs_window():
    import numpy as np
    x = np.arange(2000, dtype=float)                 # [500, 1500): mean 999.5
    assert wl.trimmed_mean(x) == pytest.approx(999.5)
    assert wl.trimmed_mean(np.arange(8, dtype=float)) == 2.0     # n - 500 < n/4 + 1: the one request n // 4


def test_latency_table_is_the_mean_over_seeds_beside_the_paper():
    from kvsched.engine.simulator import Simulator
    from kvsched.policies import make
    from kvsched.workload.typed import parse_mix, synthesize_typed
    import numpy as np
    cost = get_preset("llama2-7b-a100").cost
    sim = Simulator(cost, 136_224, block_size=16)
    mix = parse_mix(wl.WORKLOAD)
    factory = lambda: make("sarathi", **wl.VIDUR_SARATHI)      # noqa: E731
    rows = wl.latency_table(sim, factory, mix, "sarathi", (22, 5), 200, 2)
    runs = [sim.run(synthesize_typed(mix.with_total_rate(22), 200, np.random.default_rng(s)), factory())
            for s in (0, 1)]
    assert rows[0]["mean_latency"] == pytest.approx(sum(r.summary().mean_latency for r in runs) / 2)
    assert (rows[0]["rate"], rows[0]["paper"]) == (22, 1.853) and rows[1]["paper"] is None
    trimmed = wl.latency_table(sim, factory, mix, "sarathi", (22,), 200, 2, trimmed=True,
                               reference=wl.AUTHORS_LLAMA2_LATENCY)
    by_hand = [wl.trimmed_mean(r.finish_time - r.arrival_time) for r in runs]
    assert trimmed[0]["mean_latency"] == pytest.approx(sum(by_hand) / 2) != rows[0]["mean_latency"]
    assert trimmed[0]["paper"] == 0.9847


def test_the_wait_threshold_maximises_n_over_tau_within_the_capacity():
    cost = get_preset("llama2-7b-a100").cost
    n = wl.authors_wait_threshold(cost, 118_784, 512, 19)
    rate = lambda k: k / cost.iteration_time(wl.wait_batch(k, 512, 19))    # noqa: E731
    per_request = sum(-(-(512 + s) // 16) * 16 for s in range(20))          # blocks of 16 per stage
    assert n * per_request <= 118_784
    assert all(rate(n) >= rate(k) for k in range(1, 118_784 // per_request + 1))
    assert wl.authors_wait_threshold(cost, per_request * 3, 512, 19) <= 3   # the capacity binds


def test_wait_batch_is_n_prompts_and_n_requests_per_stage():
    b = wl.wait_batch(2, 10, 3)
    assert (b.num_prefill_tokens, b.num_prefill_seqs, b.num_decode_seqs) == (20, 2, 6)
    assert b.decode_context_tokens == 2 * (11 + 12 + 13)


def test_the_target_runs_and_prints_beside_the_paper():
    args = ("reproduce", "wait-limits", "--models", "llama2-7b", "--policies", "wait", "--num-requests", "1000",
            "--num-seeds", "1", "--precision", "0.1", "--latency-requests", "300")
    result = run(*args)
    assert result.exit_code == 0, result.output[-2000:]
    assert "R5: stability limits" in result.stdout and "≈ 23" in result.stdout and "paper:" in result.stdout
    # the paper-protocol table: each of our latencies beside the authors' Llama-2 rerun (WAIT 0.9505 s
    # and 1.2062 s at λ = 22 and 23)
    assert "the paper's protocol" in result.stdout and "Llama-2 rerun" in result.stdout
    lines = [line for line in result.stdout.splitlines() if line.strip("│ ").startswith("wait")]
    assert any("0.9505" in line for line in lines) and any("1.2062" in line for line in lines)
    result = run(*args, "--json")
    data = json.loads(result.stdout)["llama2-7b"]
    assert data["capacity"] == 136_224 and data["wait_threshold"] == wl.authors_wait_threshold(
        get_preset("llama2-7b-a100").cost, 136_224, 512, 19)
    (row,) = data["rows"]
    assert row["policy"] == "wait" and row["paper"] == 23 and row["limit"] < row["unstable"]
    assert [(r["rate"], r["paper"]) for r in data["latency"]] == [(20, 0.7436), (22, 0.9505), (23, 1.2062),
                                                                     (24, 1.7354)]
    assert (data["memory_margin"], data["vllm_max_num_seqs"], data["trimmed"]) == (0.01, 128, False)
    assert all(r["mean_latency"] > 0 for r in data["latency"]) and data["latency_requests"] == 300


@pytest.mark.parametrize("option, value", [("--models", "gpt-9"), ("--policies", "fcfs"), ("--policies", ",")])
def test_unknown_names_are_one_line_errors(option, value):
    result = run("reproduce", "wait-limits", option, value)
    assert result.exit_code == 2 and f"error: {option}" in result.output


@pytest.mark.parametrize("value", ["nan", "0", "0.9", "-0.1", "inf"])
def test_a_precision_outside_its_range_says_so(value):
    result = run("reproduce", "wait-limits", "--precision", value)
    assert result.exit_code == 2 and "error: --precision: got" in result.output and "[0.001, 0.5]" in result.output
