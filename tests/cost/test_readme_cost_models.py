"""The README's "Cost models" commands run as written (the issue's `kvsched compare --cost roofline:...`)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvsched.cli.app import app

README = Path(__file__).resolve().parents[2] / "README.md"


def cost_model_commands() -> list[str]:
    text = README.read_text()
    section = text[text.index("### Cost models"):]
    section = section[:section.index("\n### ", 1)]
    return [line[len("$ kvsched "):] for line in section.splitlines() if line.startswith("$ kvsched ")]


def test_the_section_shows_the_issue_command():
    assert "compare --cost roofline:model=llama-3.1-70b,gpu=h100-sxm,tp=4" in cost_model_commands()


@pytest.mark.parametrize("command", cost_model_commands())
def test_readme_cost_model_commands_run(command):
    result = CliRunner().invoke(app, shlex.split(command), env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    if command.startswith("compare"):
        assert "cost roofline(" in result.output and "KV 502304 tokens" in result.output   # vLLM's capacity
        assert "vllm" in result.output and "sarathi" in result.output
