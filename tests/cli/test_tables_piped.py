"""Tables are never cut when stdout is not a terminal (issue 19: `reproduce` tables were cut at
80 columns, "0.070…"). rich marks a cut cell with "…"; a piped table must print whole."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cli_helpers import run

LONG = "vllm:watermark=0.01,max_num_seqs=64,sarathi:chunk_size=256,mcsf"


def test_a_wide_compare_table_prints_whole_through_a_pipe():
    proc = subprocess.run([sys.executable, "-m", "kvsched", "compare", "--policies", LONG, "--num-requests", "40",
                           "--predictor", "exact", "--slo", "ttft=2,tpot=0.1,e2e=30"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    assert "vllm:watermark=0.01,max_num_seqs=64" in proc.stdout      # the label in one piece
    assert "goodput req/s" in proc.stdout
    widest = max(len(line) for line in proc.stdout.splitlines())
    assert widest > 160                                              # wider than the old cap


@pytest.mark.parametrize("args", [
    ["presets"],
    ["policies"],
    ["simulate", "--policy", "vllm:watermark=0.01,max_num_seqs=64", "--num-requests", "30"],
    ["bound", "fluid", "--types", "p512d20@0.7+p512d50@0.3", "--rate", "20"],
])
def test_other_tables_are_not_cut_either(args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
