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
    result = run("reproduce", "wait-limits", "--models", "llama2-7b", "--policies", "wait",
                 "--num-requests", "1000", "--num-seeds", "1", "--precision", "0.1")
    assert result.exit_code == 0, result.output[-2000:]
    assert "R5: stability limits" in result.stdout and "≈ 23" in result.stdout and "paper:" in result.stdout
    result = run("reproduce", "wait-limits", "--models", "llama2-7b", "--policies", "wait",
                 "--num-requests", "1000", "--num-seeds", "1", "--precision", "0.1", "--json")
    data = json.loads(result.stdout)["llama2-7b"]
    assert data["capacity"] == 118_784 and data["wait_threshold"] == 11
    (row,) = data["rows"]
    assert row["policy"] == "wait" and row["paper"] == 23 and row["limit"] < row["unstable"]


@pytest.mark.parametrize("option, value", [("--models", "gpt-9"), ("--policies", "fcfs"), ("--policies", ",")])
def test_unknown_names_are_one_line_errors(option, value):
    result = run("reproduce", "wait-limits", option, value)
    assert result.exit_code == 2 and f"error: {option}" in result.output
