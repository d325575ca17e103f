"""`kvsched compare` with the prediction-based policies (MC-SF, A_max, A_min, H-SF) on the default
workload, beside vLLM and Sarathi."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from kvsched.cli.app import app

try:                                   # click < 8.2 mixes stderr into output unless told not to
    runner = CliRunner(mix_stderr=False)
except TypeError:
    runner = CliRunner()

POLICIES = ["vllm", "sarathi", "mcsf", "amax", "amin", "hsf"]


def test_compare_prediction_policies_on_the_default_workload(tmp_path):
    """`kvsched compare --policies vllm,sarathi,mcsf,amax,amin,hsf --predictor interval:alpha=0.5`
    (with ``--output`` to read the figures back as JSON)."""
    out = tmp_path / "compare.json"
    result = runner.invoke(app, ["compare", "--policies", ",".join(POLICIES),
                                 "--predictor", "interval:alpha=0.5", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert all(name in result.stdout for name in POLICIES)
    rows = {row["policy"]: row for row in json.loads(out.read_text())}
    assert list(rows) == POLICIES
    for row in rows.values():
        assert row["num_requests"] == 1000 and row["num_rejected"] == 0
        assert row["num_finished"] == 1000
        assert 0 < row["peak_kv_utilization"] <= 1.0
    # The interval holds the truth and its point is hi ≥ o: MC-SF, A_max and H-SF never
    # underestimate, so their check holds and they never evict; the default workload is
    # memory-bound, so vLLM does evict.
    for name in ("mcsf", "amax", "hsf"):
        assert rows[name]["num_evictions"] == 0, name
    assert rows["vllm"]["num_evictions"] > 0
    # MC-SF on the point prediction hi is A_max on the upper bounds: the same schedule.
    same = {k: v for k, v in rows["mcsf"].items() if k not in ("policy", "wall_time")}
    assert same == {k: v for k, v in rows["amax"].items() if k not in ("policy", "wall_time")}
