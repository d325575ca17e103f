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
