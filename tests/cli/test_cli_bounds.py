"""`kvsched bound <method>` and `kvsched reproduce mcsf-synthetic` (registered on a bare app)."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from kvsched.cli import bounds as cli_bounds, reproduce as cli_reproduce
from kvsched.experiments.mcsf_synthetic import paper_instance, reproduce


def _app() -> typer.Typer:
    app = typer.Typer()
    bound_app = typer.Typer()
    app.add_typer(bound_app, name="bound")
    cli_bounds.register(app, bound_app)
    cli_reproduce.register(app, bound_app)
    return app


def test_bound_ip_json_on_a_small_paper_instance():
    result = CliRunner().invoke(_app(), ["bound", "ip", "--workload", "paper-zero", "--num-requests", "5",
                                         "--seed", "2", "--time-limit", "20", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["status"] == "optimal" and data["objective"] == data["bound"] and data["gap"] == 0
    assert len(data["plan"]) == 5


def test_bound_reports_an_unfit_request_with_exit_2():
    result = CliRunner().invoke(_app(), ["bound", "ip", "--workload", "paper-zero", "--num-requests", "5",
                                         "--kv-capacity", "3"])
    assert result.exit_code == 2
    assert "infeasible" in result.output and "KV capacity is 3 tokens" in result.output


def test_bound_bad_option_is_one_line_exit_2():
    result = CliRunner().invoke(_app(), ["bound", "ip", "--workload", "nope"])
    assert result.exit_code == 2
    assert "--workload" in result.output and "Traceback" not in result.output


def test_paper_instance_follows_the_paper_ranges():
    import numpy as np
    rng = np.random.default_rng(0)
    for model in ("zero", "poisson"):
        w, M = paper_instance(rng, model)
        assert 30 <= M <= 50 and 40 <= len(w) <= 60
        assert w.num_prompt_tokens.min() >= 1 and w.num_prompt_tokens.max() <= 5
        assert (w.num_prompt_tokens + w.true_output_tokens <= M).all()
        assert (w.arrival_time == np.floor(w.arrival_time)).all()


def test_reproduce_runs_skips_unknown_policies_and_counts_certified(monkeypatch):
    import kvsched.experiments.mcsf_synthetic as rm
    notes = []
    small = lambda rng, model, *a: paper_instance(rng, model, 5, 20)   # noqa: E731
    monkeypatch.setattr(rm, "paper_instance", small)
    report = reproduce(trials=2, seed=1, method="ip", time_limit=20,
                       policies=("vllm", "no-such-policy"), note=notes.append)
    assert any("no-such-policy" in n for n in notes)
    for model in ("zero", "poisson"):
        data = report[model]
        assert data["num_certified"] == 2
        row = data["rows"][1]
        assert row["policy"] == "vllm" and row["mean_vs_bound"] >= row["mean"] - 1e-12


def test_mcsf_rule_row_is_never_below_the_optimum(monkeypatch):
    import kvsched.experiments.mcsf_synthetic as rm
    monkeypatch.setattr(rm, "paper_instance", lambda rng, model, *a: paper_instance(rng, model, 6, 25))
    report = reproduce(trials=3, seed=4, method="exact", time_limit=20, policies=(), note=lambda _: None)
    for data in report.values():
        row = data["rows"][0]
        assert row["policy"] == rm.RULE
        assert row["mean"] >= 1.0 and row["worst"] >= row["mean"]


def test_reproduce_command_prints_both_tables(monkeypatch):
    import kvsched.experiments.mcsf_synthetic as rm
    monkeypatch.setattr(rm, "paper_instance", lambda rng, model, *a: paper_instance(rng, model, 5, 20))
    result = CliRunner().invoke(_app(), ["reproduce", "mcsf-synthetic", "--trials", "2", "--time-limit", "10",
                                         "--policies", "vllm"])
    assert result.exit_code == 0, result.output
    assert "all requests at t = 0" in result.output and "Poisson arrivals" in result.output
    assert "MC-SF (paper)" in result.output and "1.005" in result.output and "1.227" in result.output
    assert "certified optimal: 2/2" in result.output


def test_reproduce_command_refuses_an_unknown_policy():
    """A policy the user names and we do not have is a mistake (exit 2), not a silent skip."""
    result = CliRunner().invoke(_app(), ["reproduce", "mcsf-synthetic", "--trials", "1",
                                         "--policies", "vllm,not-registered"])
    assert result.exit_code == 2 and "unknown policy 'not-registered'" in result.output


def test_reproduce_command_rejects_bad_options():
    result = CliRunner().invoke(_app(), ["reproduce", "mcsf-synthetic", "--trials", "0"])
    assert result.exit_code == 2 and "--trials" in result.output
