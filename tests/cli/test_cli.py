"""The command line: commands, options, the default scenario and every bad-input exit path."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from kvsched.cli import common as cc
from kvsched.errors import ConfigError

from cli_helpers import assert_user_error, run
from kvsched.workload.synthetic import LMSYS_OUTPUT, LMSYS_PROMPT

SMALL = ["--num-requests", "60"]
REQUIRED_KEYS = {"policy", "mean_latency", "p50_latency", "p99_latency", "mean_ttft", "total_latency",
                 "throughput_tokens_per_s", "num_evictions", "num_rejected", "peak_kv_utilization"}




def write_trace(tmp_path: Path, rows: list[tuple[int, int]], name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text("num_prompt_tokens,num_output_tokens\n" + "".join(f"{s},{o}\n" for s, o in rows))
    return path


# --------------------------------------------------------------------------- the default scenario

def test_default_compare_is_memory_bound():
    """`kvsched compare --policies vllm,sarathi` on the default workload queues and evicts."""
    result = run("compare", "--policies", "vllm,sarathi", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["policy"] for r in rows] == ["vllm", "sarathi"]
    for row in rows:
        assert REQUIRED_KEYS <= set(row)
        assert row["num_requests"] == 1000 and row["num_rejected"] == 0
        assert row["peak_kv_utilization"] == pytest.approx(1.0, abs=0.01)   # memory is the limit
        assert row["mean_ttft"] > 0.5          # requests wait for memory (a decode step is ~30 ms)
    assert rows[0]["num_evictions"] > 0


def test_compare_table():
    result = run("compare", *SMALL)
    assert result.exit_code == 0, result.output
    assert "vllm" in result.stdout and "sarathi" in result.stdout and "evictions" in result.stdout


def test_default_workload_matches_published_means():
    rng = np.random.default_rng(0)
    prompts, outputs = LMSYS_PROMPT.sample(200_000, rng), LMSYS_OUTPUT.sample(200_000, rng)
    assert prompts.mean() == pytest.approx(69.5, rel=0.03)     # Zheng et al. 2023, Table 1
    assert outputs.mean() == pytest.approx(214.5, rel=0.03)
    assert outputs.std() / outputs.mean() == pytest.approx(0.86, abs=0.1)


# --------------------------------------------------------------------------- simulate / compare

def test_simulate_json_and_policy_parameters():
    result = run("simulate", "--policy", "sarathi:chunk_size=256", "--json", *SMALL)
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["policy"] == "sarathi:chunk_size=256" and row["num_requests"] == 60


def test_policy_list_with_parameters():
    policies = cc.parse_policies("vllm:watermark=0.01,max_num_seqs=8,sarathi:chunk_size=256")
    assert [label for label, _ in policies] == ["vllm:watermark=0.01,max_num_seqs=8", "sarathi:chunk_size=256"]
    vllm, sarathi = (p for _, p in policies)
    assert (vllm.watermark, vllm.max_num_seqs, sarathi.chunk_size) == (0.01, 8, 256)
    result = run("compare", "--policies", "vllm:watermark=0.01,sarathi:chunk_size=256", "--json", *SMALL)
    assert result.exit_code == 0, result.output
    assert [r["policy"] for r in json.loads(result.stdout)] == ["vllm:watermark=0.01", "sarathi:chunk_size=256"]


def test_compare_runs_identical_stream_with_predictions(tmp_path):
    trace = write_trace(tmp_path, [(30, 20), (10, 5), (50, 40)] * 10)
    result = run("compare", "--policies", "vllm,vllm:max_num_seqs=1", "--trace", str(trace),
                 "--predictor", "exact", "--rate", "2", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["num_requests"] for r in rows} == {30}
    # one request at a time cannot be faster than vLLM's batching on the same stream
    assert rows[1]["total_latency"] >= rows[0]["total_latency"]


def test_unit_cost_and_emitted_convention():
    result = run("simulate", "--cost", "unit", "--kv-convention", "emitted", "--rate", "0", "--json", *SMALL)
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    # all arrive at 0 under unit time: the makespan is a whole number of rounds
    assert row["makespan"] == int(row["makespan"]) > 0


def test_rate_zero_puts_all_arrivals_at_zero(tmp_path):
    w = cc.build_workload(rate=0, num_requests=20)
    assert np.all(w.arrival_time == 0)
    trace = write_trace(tmp_path, [(5, 5)] * 4)
    assert np.all(cc.build_workload(trace=trace, rate=0).arrival_time == 0)


def test_output_file_written_whole(tmp_path):
    out = tmp_path / "res.json"
    result = run("compare", *SMALL, "--output", str(out))
    assert result.exit_code == 0, result.output
    assert [r["policy"] for r in json.loads(out.read_text())] == ["vllm", "sarathi"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.json"]


def test_no_output_file_on_error(tmp_path):
    out = tmp_path / "res.json"
    result = run("compare", "--policies", "vllm,nope", *SMALL, "--output", str(out))
    assert_user_error(result, "unknown policy 'nope'")
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_leaves_nothing_on_failure(tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(cc.os, "replace", broken_replace)
    with pytest.raises(ConfigError, match="disk full"):       # a one-line user error, not a traceback
        cc.write_atomic(tmp_path / "x.json", "{}")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- bad input → exit 2

@pytest.mark.parametrize("args, fragments", [
    (["simulate", "--policy", "nope"], ["unknown policy 'nope'", "vllm"]),
    (["compare", "--policies", "vllm:foo=1"], ["has no parameter 'foo'", "watermark"]),
    (["compare", "--policies", "vllm:watermark=2"], ["watermark must be in [0, 1)"]),
    (["compare", "--policies", "sarathi:chunk_size=big"], ["'chunk_size'", "'big'"]),
    (["compare", "--policies", "vllm,vllm"], ["listed twice"]),
    (["simulate", "--policy", "vllm,sarathi"], ["--policy: expected one policy"]),
    (["simulate", "--cost", "linear:d0=1"], ["--cost"]),
    (["simulate", "--cost", "quadratic"], ["--cost: unknown cost"]),
    (["simulate", "--cost", "linear:d0=0,d1=0"], ["--cost", "not both 0"]),
    (["simulate", "--kv-convention", "both"], ["--kv-convention", "'computed' or 'emitted'"]),
    (["simulate", "--kv-capacity", "8"], ["--kv-capacity", "at least one block"]),
    (["simulate", "--block-size", "0"], ["--block-size"]),
    (["simulate", "--rate", "-1"], ["--rate"]),
    (["simulate", "--num-requests", "0"], ["--num-requests"]),
    (["simulate", "--workload", "huge"], ["--workload: unknown workload 'huge'"]),
    (["simulate", "--predictor", "psychic"], ["--predictor", "psychic"]),
])
def test_bad_options_exit_2_with_one_line(args, fragments):
    assert_user_error(run(*args), *fragments)


def test_kv_capacity_smaller_than_every_request(tmp_path):
    trace = write_trace(tmp_path, [(100, 10), (200, 5)])
    assert_user_error(run("simulate", "--trace", str(trace), "--kv-capacity", "64"),
                      "--kv-capacity", "64 tokens is smaller than every request", "needs 112")


def test_some_requests_too_large_is_a_warning(tmp_path):
    trace = write_trace(tmp_path, [(10, 10), (500, 5)])
    result = run("simulate", "--trace", str(trace), "--kv-capacity", "64", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["num_rejected"] == 1
    assert "warning: 1 of 2 requests" in result.stderr


@pytest.mark.parametrize("body, fragments", [
    ("num_prompt_tokens,num_output_tokens\n5,5\n5,-2\n", ["row 2", "'num_output_tokens'", "got -2"]),
    ("num_prompt_tokens\n5\n", ["'num_output_tokens'", "missing column"]),
    ("", ["empty file"]),
])
def test_bad_trace_exit_2(tmp_path, body, fragments):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    assert_user_error(run("compare", "--trace", str(path)), str(path), *fragments)


def test_unknown_trace_extension(tmp_path):
    path = tmp_path / "bad.xlsx"
    path.write_text("x")
    assert_user_error(run("simulate", "--trace", str(path)), "unknown extension '.xlsx'")


def test_subprocess_error_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "kvsched", "simulate", "--policy", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown policy 'nope'; expected one of: " + \
        ", ".join(__import__("kvsched.policies", fromlist=["registered"]).registered())
    assert proc.stdout == ""


# --------------------------------------------------------------------------- policies, check-policy

def test_policies_lists_ids_parameters_defaults():
    result = run("policies", "--json")
    assert result.exit_code == 0
    entries = {e["id"]: e for e in json.loads(result.stdout)}
    assert entries["vllm"]["parameters"]["watermark"] == 0.0
    assert entries["sarathi"]["parameters"]["chunk_size"] == 512
    assert all(e["description"] for e in entries.values())
    table = run("policies")
    assert "vllm" in table.stdout and "chunk_size=512" in table.stdout


IDLE_POLICY = """
from dataclasses import dataclass
from typing import ClassVar

from kvsched.policies.base import Policy
from kvsched.state import Decision


@dataclass(kw_only=True)
class Idle(Policy):
    \"\"\"Never schedules anything: the conformance suite's liveness check must fail.\"\"\"
    name: ClassVar[str] = "idle"

    def schedule(self, view):
        return Decision(num_tokens={})
"""


def test_check_policy_pass_fail_and_import_error(tmp_path, monkeypatch):
    """The real conformance suite (`kvsched.testing`) behind the command."""
    passed = run("check-policy", "kvsched.policies.vllm:VLLMPolicy", "--json")
    assert passed.exit_code == 0, passed.output
    checks = json.loads(passed.stdout)
    assert all(c["passed"] for c in checks)
    assert {"well_formed", "feasible", "liveness", "tags_honest"} <= {c["name"] for c in checks}
    table = run("check-policy", "kvsched.policies.vllm:VLLMPolicy")
    assert f"{len(checks)}/{len(checks)} passed" in table.stdout
    (tmp_path / "kvsched_idle_policy.py").write_text(IDLE_POLICY)
    monkeypatch.syspath_prepend(str(tmp_path))
    failed = run("check-policy", "kvsched_idle_policy:Idle", "--json")
    assert failed.exit_code == 1, failed.output
    checks = {c["name"]: c for c in json.loads(failed.stdout)}
    assert not checks["liveness"]["passed"] and "scheduled nothing" in checks["liveness"]["detail"]
    assert checks["well_formed"]["passed"]
    assert_user_error(run("check-policy", "no_such_module_xyz:Policy"), "cannot import policy")
    assert_user_error(run("check-policy", "kvsched.workload.synthetic:Workload"), "not a kvsched Policy")


# --------------------------------------------------------------------------- presets and bounds

def test_preset_capacity_applies_unless_overridden():
    from kvsched.cost.presets import get_preset
    preset = get_preset("llama2-7b-a100")
    sim = cc.build_simulator(cc.parse_cost("preset:llama2-7b-a100"))
    assert (sim.kv_capacity_tokens, sim.block_size) == (preset.kv_capacity_tokens, preset.block_size)
    assert sim.cost == preset.cost
    sim = cc.build_simulator(cc.parse_cost("preset:llama2-7b-a100"), kv_capacity=8192, block_size=32)
    assert (sim.kv_capacity_tokens, sim.block_size) == (8192, 32)
    assert_user_error(run("simulate", "--cost", "preset:huge"), "unknown preset 'huge'")
    assert run("simulate", "--cost", "preset:llama2-7b-a100", *SMALL).exit_code == 0


def test_compare_with_bound_ratio(tmp_path):
    """`--bound ip` on a tiny all-at-zero unit-time instance: the IP proves the optimum, which
    brute force confirms, and each row's ratio is its total latency over that bound."""
    from kvsched.bounds.bruteforce import optimal_nonpreemptive_total_latency
    from kvsched.workload.synthetic import Workload
    rows = [(2, 6), (1, 9), (3, 4), (2, 3), (1, 7)]
    trace = write_trace(tmp_path, rows)
    options = ["--trace", str(trace), "--rate", "0", "--cost", "unit", "--kv-capacity", "16",
               "--block-size", "1", "--kv-convention", "emitted", "--policies", "vllm,mcsf",
               "--predictor", "exact"]
    result = run("compare", *options, "--bound", "ip", "--bound-time-limit", "30", "--json")
    assert result.exit_code == 0, result.output
    workload = Workload.build([0.0] * 5, [s for s, _ in rows], [o for _, o in rows])
    optimum = optimal_nonpreemptive_total_latency(workload, 16)
    for row in json.loads(result.stdout):
        assert row["bound_ratio"] == pytest.approx(row["total_latency"] / optimum)
    assert "total / ip" in run("compare", *options, "--bound", "ip").stdout


# --------------------------------------------------------------------------- progress

def test_progress_bar_appears_only_after_a_second():
    now = [0.0]
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80)
    with cc.ProgressReporter("vllm", console=console, enabled=True, clock=lambda: now[0]) as reporter:
        now[0] = 0.5
        reporter(10, 100)
        assert reporter.progress is None
        now[0] = 1.5
        reporter(50, 100)
        assert reporter.progress is not None
        assert reporter.progress.tasks[0].completed == 50
    disabled = cc.ProgressReporter("x", console=console, enabled=False, clock=lambda: 99.0)
    disabled(1, 2)
    assert disabled.progress is None


# --------------------------------------------------------------------------- the README

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_starts_with_the_two_setup_commands():
    lines = README.read_text(encoding="utf-8").splitlines()[:40]
    commands = [line for line in lines if line.startswith(("pip", "python", "kvsched", "pytest"))]
    assert commands[:2] == ["pip install . && kvsched compare --policies vllm,sarathi",
                            "pip install -e '.[test]' && pytest -q"]


def test_readme_policy_example_runs(tmp_path):
    """The README's policy example, saved as my_policy.py, runs from the command line (in a
    subprocess, so that its @register does not leak into this process's registry)."""
    text = README.read_text(encoding="utf-8")
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my_policy.py").write_text(code)
    proc = subprocess.run([sys.executable, "-m", "kvsched", "compare", "--policies",
                           "vllm,my_policy:GreedyFCFS:chunk_size=256", "--num-requests", "300",
                           "--kv-capacity", "4096", "--json"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows[1]["policy"] == "my_policy:GreedyFCFS:chunk_size=256"
    assert rows[1]["num_finished"] == 300 and rows[1]["num_evictions"] > 0
