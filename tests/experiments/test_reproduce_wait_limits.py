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
    by_hand = [sim.run(synthesize_typed(mix.with_total_rate(22), 200, np.random.default_rng(s)),
                       factory()).summary().mean_latency for s in (0, 1)]
    assert rows[0]["mean_latency"] == pytest.approx(sum(by_hand) / 2)
    assert (rows[0]["rate"], rows[0]["paper"]) == (22, 1.85) and rows[1]["paper"] is None


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
    # the paper-protocol table: each of our latencies beside the paper's (1.03 s and 1.29 s for WAIT)
    assert "the paper's protocol" in result.stdout
    lines = [line for line in result.stdout.splitlines() if line.strip("│ ").startswith("wait")]
    assert any("1.03" in line for line in lines) and any("1.29" in line for line in lines)
    result = run(*args, "--json")
    data = json.loads(result.stdout)["llama2-7b"]
    assert data["capacity"] == 136_224 and data["wait_threshold"] == wl.authors_wait_threshold(
        get_preset("llama2-7b-a100").cost, 136_224, 512, 19)
    (row,) = data["rows"]
    assert row["policy"] == "wait" and row["paper"] == 23 and row["limit"] < row["unstable"]
    assert [(r["rate"], r["paper"]) for r in data["latency"]] == [(20, None), (22, 1.03), (23, 1.29)]
    assert all(r["mean_latency"] > 0 for r in data["latency"]) and data["latency_requests"] == 300


@pytest.mark.parametrize("option, value", [("--models", "gpt-9"), ("--policies", "fcfs"), ("--policies", ",")])
def test_unknown_names_are_one_line_errors(option, value):
    result = run("reproduce", "wait-limits", option, value)
    assert result.exit_code == 2 and f"error: {option}" in result.output
