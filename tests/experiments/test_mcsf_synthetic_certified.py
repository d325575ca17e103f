"""R1's certified small-n table and paper-protocol row (kvsched.experiments.mcsf_synthetic)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

import kvsched.experiments.mcsf_synthetic as rm
from kvsched.bounds import BoundResult, compute_bound, instance_for
from kvsched.bounds.greedy import mcsf_schedule


def test_a_hand_worked_instance_mcsf_seven_the_optimum_six():
    # M = 4, all at t = 0, EMITTED (a request holds s + j while emitting token j):
    #   A: s=1, o=1 (holds 2)   B: s=1, o=2 (holds 2, 3)   C: s=2, o=1 (holds 3).
    # MC-SF (shortest output first; ties by prompt: A, C, B) admits A at round 0; C next would need
    # 2 + 3 > 4, so it stops. Round 1: C (3), then B would need 3 + 2 > 4. Round 2..3: B.
    # Completions 1, 2, 4: total 7. The optimum runs A and B together (2 + 2, then B alone 3) and C
    # at round 2: completions 1, 2, 3, total 6. No schedule does better: C fits beside nobody
    # (3 + 2 > 4), so it has a round to itself; with C in round 0 the others end at >= 2 and 3, and
    # with C later it cannot be in round 1 beside B's second round or A, so C >= 3 (A >= 1, B >= 2).
    from kvsched.workload.synthetic import Workload
    w = Workload.build(np.zeros(3), np.array([1, 1, 2]), np.array([1, 2, 1]), name="hand")
    inst = instance_for(w, rm._round_simulator(4))
    assert inst.objective(mcsf_schedule(inst)) == 7
    for method in ("exact", "ip", "ip-strong", "semionline", "bruteforce"):
        res = compute_bound(method, w, rm._round_simulator(4), 30)
        assert res.status == "optimal" and res.objective == 6 and res.bound == pytest.approx(6), method
    assert rm.certified_ratio(w, 4, time_limit=30) == pytest.approx(7 / 6)
    assert rm.certified_ratio(w, 4, method="ip-strong", check="bruteforce", time_limit=30) == pytest.approx(7 / 6)


def test_small_n_rows_are_the_mean_of_certified_ratios_from_the_tables_own_stream():
    rows = rm.certified_small_n(seed=0, sizes=(4, 5), trials=3, time_limit=60)
    for row in rows:
        n = row["num_requests"]
        rng = np.random.default_rng([0, 2, n])          # the table's own instance stream
        ratios = []
        for _ in range(3):
            workload, capacity = rm.paper_instance(rng, "zero", n)
            sim = rm._round_simulator(capacity)
            ip = compute_bound("ip", workload, sim, 60)      # HiGHS alone, MIP gap 0
            assert ip.status == "optimal" and ip.gap == 0
            inst = instance_for(workload, sim)
            ratios.append(inst.objective(mcsf_schedule(inst)) / ip.objective)
        assert row["num_certified"] == 3 and row["method"] == "exact"
        assert row["mean"] == pytest.approx(np.mean(ratios)) and row["worst"] == pytest.approx(max(ratios))
        assert row["num_optimal"] == sum(r <= 1 + 1e-9 for r in ratios)
        assert all(r >= 1 - 1e-9 for r in ratios)


def test_two_proofs_that_disagree_stop_the_run(monkeypatch):
    import kvsched.bounds as bounds
    real = bounds.compute_bound

    def fake(method, *a, **k):
        res = real(method, *a, **k)
        return res if method == "exact" else BoundResult(method, 5.0, 5.0, 0.0, "optimal", 0.0, None, 3)
    monkeypatch.setattr(bounds, "compute_bound", fake)
    from kvsched.workload.synthetic import Workload
    w = Workload.build(np.zeros(3), np.array([1, 1, 2]), np.array([1, 2, 1]), name="hand")
    with pytest.raises(RuntimeError, match="different optima"):
        rm.certified_ratio(w, 4, time_limit=30)


def test_an_unproven_instance_is_counted_and_left_out(monkeypatch):
    import kvsched.bounds as bounds
    # a time-limited result holds a schedule and a bound 10% below it: never certified
    unproven = BoundResult("exact", 100.0, 90.0, 0.1, "time_limit", 1.0, None, 5)
    monkeypatch.setattr(bounds, "compute_bound", lambda *a, **k: unproven)
    (row,) = rm.certified_small_n(seed=0, sizes=(5,), trials=2)
    assert row["num_trials"] == 2 and row["num_certified"] == 0
    assert row["mean"] is None and row["worst"] is None and row["num_optimal"] == 0   # JSON has no NaN
    out = io.StringIO()
    rm._render_small_n([row], rm.PAPER_FIGURES["zero"], Console(file=out, width=200))
    assert "0/2" in out.getvalue()


def test_the_paper_protocol_starts_at_mcsf_so_it_never_reports_worse(monkeypatch):
    small = rm.paper_instance
    monkeypatch.setattr(rm, "paper_instance", lambda rng, model, *a: small(rng, model, 8))
    row = rm.paper_protocol(seed=0, trials=2, time_limit=8)
    assert row["num_trials"] == 2 and row["worst"] >= row["mean"] >= 1.0
    assert 0 <= row["num_optimal"] <= 2 and row["mean_gap"] >= 0
    # the IP's best schedule costs at least the optimum, so its "ratio" never exceeds the true one
    rng = np.random.default_rng([0, 3])          # paper_protocol's own stream
    true = []
    for w, c in (small(rng, "zero", 8) for _ in range(2)):
        opt = compute_bound("semionline", w, rm._round_simulator(c), 60)
        assert opt.status == "optimal"
        inst = instance_for(w, rm._round_simulator(c))
        true.append(inst.objective(mcsf_schedule(inst)) / opt.objective)
    assert row["mean"] <= np.mean(true) + 1e-9 and row["worst"] <= max(true) + 1e-9
    if row["num_certified"] == 2:
        assert row["mean"] == pytest.approx(np.mean(true))


def test_reproduce_holds_and_renders_both_for_the_zero_model_only(monkeypatch):
    small = rm.paper_instance
    monkeypatch.setattr(rm, "paper_instance", lambda rng, model, *a: small(rng, model, 5, 20))
    report = rm.reproduce(trials=2, time_limit=10, policies=("mcsf",), small_sizes=(4, 5), note=lambda t: None)
    assert [r["num_requests"] for r in report["zero"]["certified_small_n"]] == [4, 5]
    assert report["zero"]["certified_small_n"][0]["num_trials"] == 2        # capped by trials
    assert report["zero"]["paper_protocol"]["num_trials"] == 2
    assert "certified_small_n" not in report["poisson"] and "paper_protocol" not in report["poisson"]
    out = io.StringIO()
    rm.render(report, Console(file=out, width=200))
    text = out.getvalue()
    assert "paper protocol" in text and "certified: MC-SF / proven optimum" in text and "40–60 (paper)" in text


def test_zero_trials_leave_the_additions_out(monkeypatch):
    small = rm.paper_instance
    monkeypatch.setattr(rm, "paper_instance", lambda rng, model, *a: small(rng, model, 5, 20))
    report = rm.reproduce(trials=1, time_limit=10, policies=("mcsf",), arrival_models=("zero",),
                          small_n_trials=0, protocol_trials=0, note=lambda t: None)
    assert "certified_small_n" not in report["zero"] and "paper_protocol" not in report["zero"]


def test_a_policy_that_evicts_gets_a_restart_row_that_never_beats_the_bound(monkeypatch):
    small = rm.paper_instance
    monkeypatch.setattr(rm, "paper_instance", lambda rng, model, *a: small(rng, model, 10, 20))
    report = rm.reproduce(trials=2, time_limit=5, policies=("mcsf", "vllm"), arrival_models=("zero",),
                          small_n_trials=0, protocol_trials=0, note=lambda t: None)
    rows = {r["policy"]: r for r in report["zero"]["rows"]}
    assert "mcsf" + rm.RESTART not in rows                 # MC-SF never evicts: one row stands for both
    restart = rows["vllm" + rm.RESTART]                   # vLLM evicts on these memory-bound instances
    assert restart["mean_vs_bound"] >= 1 - 1e-9 and restart["mean"] > rows["vllm"]["mean"]
    for inst in report["zero"]["instances"]:
        assert inst["total_latency"]["vllm" + rm.RESTART] >= inst["bound"] - 1e-6
    out = io.StringIO()
    rm.render(report, Console(file=out, width=200))
    assert "vllm (restart)" in out.getvalue()
