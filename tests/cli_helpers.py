"""Command-line test helpers: a typer runner and the one-line exit-2 check every bad input gets."""

from __future__ import annotations

from typer.testing import CliRunner

from kvsched.cli.app import app

try:                                   # click < 8.2 mixes stderr into output unless told not to
    runner = CliRunner(mix_stderr=False)
except TypeError:
    runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def assert_user_error(result, *fragments: str) -> None:
    """Exit 2, exactly one line 'error: ...' on stderr naming the fragments, nothing on stdout."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout.strip() == ""
