"""``kvsched engine-run`` (registered by `kvsched.cli.engine.register`)."""

from __future__ import annotations

import json

import pytest
import typer
from cli_helpers import assert_user_error, runner
from typer.testing import CliRunner

from kvsched.cli.engine import register


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def other() -> None:        # a second command keeps "engine-run" a subcommand
        pass

    register(app, None)
    return app


def _text(result) -> str:
    try:
        return result.output + (result.stderr or "")
    except ValueError:          # older click: stderr mixed into output
        return result.output


def test_bad_options_exit_2_with_one_line(tmp_path):
    result = runner.invoke(_app(), ["engine-run", "--model", str(tmp_path), "--clock", "bogus"])
    assert_user_error(result, "--clock")


# Options are checked before vLLM is imported, so these run (and fail the same way) without vLLM.
@pytest.mark.parametrize(("args", "option"), [
    (["--cost", "linear:d0=nan,d1=0"], "--cost"),          # NaN is refused (cli_common.parse_cost)
    (["--cost", "linear:d0=0.1"], "--cost"),
    (["--cost", "bogus"], "--cost"),
    (["--cost", "preset:llama2-7b-a100"], "--cost"),        # the KV cache comes from --num-gpu-blocks
    (["--prompt-tokens", "9:3"], "--prompt-tokens"),
    (["--output-tokens", "x"], "--output-tokens"),
    (["--num-requests", "0"], "--num-requests"),
    (["--rate", "-1"], "--rate"),
    (["--rate", "inf"], "--rate"),
])
def test_bad_option_is_named_in_one_line(tmp_path, args, option):
    assert_user_error(runner.invoke(_app(), ["engine-run", "--model", str(tmp_path), *args]), option)


def test_a_model_or_tiny_model_is_needed():
    assert_user_error(runner.invoke(_app(), ["engine-run", "--policy", "vllm"]), "--model")


@pytest.mark.parametrize("policy", ["mcsf", "amin", "mcsf:protection=0.1"])
def test_a_prediction_policy_without_predictor_names_the_option(tmp_path, policy):
    result = runner.invoke(_app(), ["engine-run", "--model", str(tmp_path), "--policy", policy])
    assert_user_error(result, "--predictor")


def test_missing_output_folder_fails_before_the_run_and_writes_nothing(tmp_path):
    out = tmp_path / "missing" / "run.json"
    assert_user_error(runner.invoke(_app(), ["engine-run", "--model", str(tmp_path), "-o", str(out)]), "--output")
    assert not out.parent.exists()


@pytest.mark.engine
def test_engine_run_reports_engine_and_simulator_summaries(tiny_model, tmp_path):
    out = tmp_path / "run.json"
    args = ["engine-run", "--model", tiny_model, "--num-requests", "8", "--prompt-tokens", "20:60",
            "--output-tokens", "10:40", "--num-gpu-blocks", "6", "--max-num-batched-tokens", "64",
            "--max-num-seqs", "8", "--policy", "vllm-default", "-o", str(out)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, _text(result)
    report = json.loads(out.read_text())
    assert report["comparison"]["matches"], report["comparison"]["differences"]
    assert report["engine"]["num_finished"] == 8
    assert report["engine"]["total_latency"] == report["simulator"]["total_latency"]
    assert "vLLM engine" in result.output
    # The simulator twin was given the engine's limits, and the report says which.
    assert report["engine_limits"] == {"max_num_seqs": 8, "max_num_batched_tokens": 64, "block_size": 32,
                                       "reserve_full_isl": True, "enable_chunked_prefill": True}
    assert report["policy_parameters"]["max_num_seqs"] == 8
    assert "engine limits (vLLM and the simulator): max_num_seqs=8" in result.output
    assert report["full_input_rule"] is True
    assert "the full-input rule (scheduler_reserve_full_isl) applies under this policy" in " ".join(result.output.split())


@pytest.mark.engine
def test_the_readme_engine_run_line_runs_as_written(tiny_model, tmp_path, monkeypatch):
    """README: kvsched engine-run --tiny-model --policy mcsf --predictor exact --num-requests 20."""
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    line = re.search(r"^kvsched (engine-run --tiny-model .*)$", readme, re.M)
    assert line, "README has no 'kvsched engine-run --tiny-model ...' line"
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(_app(), [*line.group(1).split(), "--json"])
    assert result.exit_code == 0, _text(result)
    report, _ = json.JSONDecoder().raw_decode(result.output[result.output.index("{"):])
    assert report["engine"]["num_finished"] == 20 and report["num_gaps"] == 0
    assert report["comparison"]["matches"], report["comparison"]["differences"]
    assert report["full_input_rule"] is False           # mcsf has no such rule (the vllm policy does)
