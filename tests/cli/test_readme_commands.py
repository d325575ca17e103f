"""The README's example commands run as written (issue 19).

Every line of a ```sh block that starts with ``kvsched `` (a trailing ``\\`` joins the next line;
``# ...`` is a comment) runs here in order, in a fresh folder holding a copy of ``examples/`` (the
sample trace and sweep the README names), in-process through typer's CliRunner. The few that take
minutes or need vLLM are in `SLOW`, each with the test that runs it (smaller) elsewhere.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
from pathlib import Path

import pytest

from cli_helpers import run

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

#: README command → the test that covers it (the command itself takes minutes or needs vLLM).
SLOW = {
    "kvsched reproduce mcsf-synthetic --trials 20 --time-limit 20":
        "tests/cli/test_cli_bounds.py::test_reproduce_command_prints_both_tables",
    "kvsched reproduce mcsf-real-trace": "tests/cli/test_readme_commands.py::test_reproduce_sweep_targets",
    "kvsched reproduce amin-intervals": "tests/cli/test_readme_commands.py::test_reproduce_sweep_targets",
    "kvsched reproduce wait-limits":
        "tests/experiments/test_reproduce_wait_limits.py::test_the_target_runs_and_prints_beside_the_paper",
    "kvsched reproduce past-future":
        "tests/experiments/test_reproduce_past_future.py::test_every_distribution_and_rule_beside_the_artifacts_figures",
    "kvsched engine-run --tiny-model --policy mcsf --predictor exact --num-requests 20 --prompt-tokens 20:200 "
    "--output-tokens 10:100":
        "tests/integrations/vllm/test_cli_engine_run.py::test_the_readme_engine_run_line_runs_as_written",
}


def readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if not line.startswith("kvsched "):     # other tools' lines (curl, python) need not parse
                continue
            words = shlex.split(line, comments=True)
            if words[:1] == ["kvsched"]:
                commands.append(shlex.join(words))
    return commands


def test_the_readme_has_commands_and_every_slow_one_is_in_it():
    commands = readme_commands()
    assert len(commands) >= 15
    assert set(SLOW) <= set(commands), set(SLOW) - set(commands)
    for covered_by in set(SLOW.values()):
        path, _, name = covered_by.partition("::")
        assert f"def {name}(" in (ROOT / path).read_text(encoding="utf-8"), covered_by


def test_every_cheap_readme_command_runs_as_written(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    ran = 0
    for command in readme_commands():
        if command in SLOW:
            continue
        result = run(*shlex.split(command)[1:])
        assert result.exit_code == 0, (command, result.output[-2000:])
        assert "error:" not in result.stderr, (command, result.stderr)
        ran += 1
    assert ran >= 12
    assert (tmp_path / "report.html").exists() and (tmp_path / "results" / "spec.json").exists()


@pytest.mark.parametrize("target, horizons", [("mcsf-real-trace", (60, 120)), ("amin-intervals", (80,))])
def test_reproduce_sweep_targets(target, horizons, tmp_path, monkeypatch):
    """`kvsched reproduce` R2/R3 through the CLI on their bundled specs with short horizons."""
    from kvsched.experiments import reproduce as module
    real = module.bundled_spec
    monkeypatch.setattr(module, "bundled_spec",
                        lambda name: dataclasses.replace(real(name), num_requests=horizons))
    out = tmp_path / "out"
    result = run("reproduce", target, "--out", str(out), "--jobs", "2")
    assert result.exit_code == 0, result.output[-2000:]
    assert "paper:" in result.stdout and "…" not in result.stdout
    assert "(paper)" in result.stdout                     # a column of the paper's figure beside ours
    paper_cells = {"mcsf-real-trace": ("1/8 ≈ 0.125", "1/3 ≈ 0.333"), "amin-intervals": ("≈ 1", "up to 5")}[target]
    assert all(cell in result.stdout for cell in paper_cells)
    assert (out / "report.html").exists()
