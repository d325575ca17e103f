"""R4 (`kvsched reproduce fluid-example`): the worked example's fluid numbers and FCFS's loss, beside the paper's."""

from __future__ import annotations

import json
import re

from cli_helpers import run


def test_the_target_prints_ours_beside_the_paper():
    result = run("reproduce", "fluid-example", "--num-requests", "1000")
    assert result.exit_code == 0, result.output[-2000:]
    out = result.stdout
    assert "R4: the fluid benchmark's worked example" in out and "paper:" in out
    row = next(line for line in out.splitlines() if "M* (fluid memory" in line)
    assert re.findall(r"│\s*([\d.]+)\s*", row)[-2:] == ["12", "12"]          # ours, paper
    loss_row = next(line for line in out.splitlines() if "FCFS throughput loss" in line)
    ours = float(re.search(r"([\d.]+)%", loss_row).group(1)) / 100
    assert "12%–25%" in loss_row and 0.12 <= ours <= 0.25


def test_json_has_every_row_with_the_papers_value():
    data = json.loads(run("reproduce", "fluid-example", "--num-requests", "1000", "--json").stdout)
    rows = {r["quantity"]: r for r in data["rows"]}
    assert rows["τ* (iteration time)"]["ours"] == 1 and rows["prompts per stage τ*·λ"]["ours"] == 4
    assert rows["WAIT evictions"]["ours"] == 0 and data["fcfs_evictions"] > 0
