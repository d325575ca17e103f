"""``kvsched engine-run`` (registered by `kvsched.cli_engine.register`)."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from kvsched.cli_engine import register


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
    result = CliRunner().invoke(_app(), ["engine-run", "--model", str(tmp_path), "--clock", "bogus"])
    assert result.exit_code == 2
    assert "error:" in _text(result) and "Traceback" not in _text(result)


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
