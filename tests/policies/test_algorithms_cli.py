"""The 2025–2026 policies run in `kvsched compare` and are listed by `kvsched policies`."""

import json

from cli_helpers import run

NEW = ("sorted-f", "svf", "svf-1bit", "trail", "past-future", "repredict")


def test_compare_runs_every_new_policy_on_one_stream():
    result = run("compare", "--policies", ",".join(NEW), "--predictor", "logt:scale=0.5",
                 "--num-requests", "60", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["policy"] for r in rows] == list(NEW)
    assert all(r["num_rejected"] == 0 and r["mean_latency"] > 0 for r in rows)


def test_policies_lists_each_with_its_source():
    result = run("policies", "--json")
    assert result.exit_code == 0, result.output
    described = {e["id"]: e["description"] for e in json.loads(result.stdout)}
    for name, source in (("sorted-f", "2508.06133"), ("svf", "2606.22327"), ("svf-1bit", "2606.22327"),
                         ("trail", "2410.01035"), ("past-future", "2507.10150"), ("repredict", "2604.00499")):
        assert source in described[name], (name, described[name])
