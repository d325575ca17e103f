"""Sweep specs, the result store (crash safety, resume) and the executors."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from kvsched.errors import ConfigError
from kvsched.experiments import load_runs, load_spec, run_sweep
from kvsched.experiments.spec import parse_spec
from kvsched.experiments.store import ResultStore

from sweep_helpers import SPEC, _write


def _rows(directory) -> list[dict]:
    """Stored rows without their wall time; NaN (a metric not measured, e.g. token gaps without
    iteration records) as None, so that equal rows compare equal."""
    def same(v):
        return None if isinstance(v, float) and math.isnan(v) else v
    drop = {"wall_time"}
    return sorted(({k: same(v) for k, v in r.items() if k not in drop}
                   for r in load_runs(directory).to_pylist()), key=lambda r: r["config_hash"])


def test_points_are_the_product_of_the_grid(tmp_path):
    spec = load_spec(_write(tmp_path))
    points = spec.points()
    assert len(points) == 2 * 3 * 1 * 2      # rates × policy variants × predictors × seeds
    labels = {p["label"] for p in points}
    assert labels == {"vllm(watermark=0.0)", "vllm(watermark=0.05)", "sarathi"}
    assert len({p["seed"] for p in points}) == 2


@pytest.mark.parametrize("edit, key", [
    ('colour = "red"\n', "colour"),
    ('seeds = "zero"\n', "seeds"),
    ("", "workload.rates"),
    ("", "policy[0].params.watermark"),
    ("", "policy[1].params.nonsense"),
    ("", "engine.kv_capacity"),
])
def test_bad_specs_name_the_key(tmp_path, edit, key):
    text = edit + SPEC
    if key == "seeds":
        text = text.replace("seeds = [0, 1]\n", "")
    if key == "workload.rates":
        text = text.replace("rates = [2.0, 8.0]", "rates = []")
    if key == "policy[0].params.watermark":
        text = text.replace("watermark = [0.0, 0.05]", "watermark = []")
    if key == "policy[1].params.nonsense":
        text = text.replace('id = "sarathi"', 'id = "sarathi"\nparams = { nonsense = 1 }')
    if key == "engine.kv_capacity":
        text = text.replace("kv_capacity = 6000\n", "")
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_spec(_write(tmp_path, text))


def test_rerun_skips_finished_points_and_repeats_none(tmp_path):
    spec = load_spec(_write(tmp_path))
    out = tmp_path / "out"
    store = ResultStore.open(out, spec)
    assert run_sweep(spec, store) == (12, 0)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    assert run_sweep(spec, ResultStore.open(out, spec)) == (0, 12)
    assert {p: p.stat().st_mtime_ns for p in (out / "points").iterdir()} == stamps
    assert pq.read_table(out / "runs.parquet").num_rows == 12


def test_parallel_and_serial_give_the_same_rows(tmp_path):
    spec = load_spec(_write(tmp_path))
    run_sweep(spec, ResultStore.open(tmp_path / "a", spec), jobs=1)
    run_sweep(spec, ResultStore.open(tmp_path / "b", spec), jobs=2)
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")


def test_a_directory_of_another_sweep_is_refused_untouched(tmp_path):
    spec = load_spec(_write(tmp_path))
    out = tmp_path / "out"
    run_sweep(spec, ResultStore.open(out, spec))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*"))
    other = load_spec(_write(tmp_path, SPEC.replace('name = "tiny"', 'name = "other"'), "other.toml"))
    with pytest.raises(ConfigError, match="different sweep"):
        ResultStore.open(out, other)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*")) == before


def test_sigkill_mid_sweep_then_resume_gives_one_row_per_point(tmp_path):
    slow = SPEC.replace("num_requests = 60", "num_requests = 400").replace("seeds = [0, 1]",
                                                                             "seeds = [0, 1, 2]")
    spec_path = _write(tmp_path, slow)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "kvsched", "sweep", str(spec_path), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = list((out / "points").glob("*.parquet")) if (out / "points").exists() else []
        if len(done) >= 3:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = len(list((out / "points").glob("*.parquet")))
    spec = load_spec(spec_path)
    assert 3 <= finished_before < len(spec.points()), "the kill must land mid-sweep"
    for path in (out / "points").glob("*.parquet"):
        assert pq.read_table(path).num_rows == 1           # no corrupt or partial file
    ran, skipped = run_sweep(spec, ResultStore.open(out, spec))
    assert skipped == finished_before and ran == len(spec.points()) - finished_before
    table = load_runs(out)
    hashes = table.column("config_hash").to_pylist()
    assert len(hashes) == len(set(hashes)) == len(spec.points())
    assert not list(out.rglob(".*.tmp-*"))


def test_paired_points_share_requests_and_predictions(tmp_path):
    from kvsched.experiments.runner import build_workload
    spec = parse_spec({**__import__("tomllib").loads(SPEC), "predictors": ["exact"]})
    points = [p for p in spec.points() if p["seed"] == 1 and p["workload"]["rate"] == 8.0]
    streams = [build_workload(p) for p in points]
    assert len(streams) == 3
    for other in streams[1:]:
        assert (other.arrival_time == streams[0].arrival_time).all()
        assert (other.predicted_hi == streams[0].predicted_hi).all()


@pytest.fixture
def ray_env(tmp_path, monkeypatch):
    """A local Ray cluster that stays on loopback and writes nothing into the real home."""
    pytest.importorskip("ray", reason="the 'ray' extra is not installed")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    yield


def test_ray_executor_matches_local(tmp_path, ray_env):
    spec = load_spec(_write(tmp_path))
    run_sweep(spec, ResultStore.open(tmp_path / "local", spec), jobs=1)
    run_sweep(spec, ResultStore.open(tmp_path / "ray", spec), executor="ray", jobs=2)
    assert len(_rows(tmp_path / "ray")) == 12
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")


@pytest.mark.parametrize("edit", [
    lambda t: 'colour = "red"\n' + t,                                  # unknown key
    lambda t: t.replace("num_requests = 60", 'num_requests = "many"'),  # wrong type
    lambda t: t.replace("watermark = [0.0, 0.05]", "watermark = []"),   # empty grid
])
def test_cli_bad_spec_exits_2_and_writes_nothing(tmp_path, edit):
    spec_path = _write(tmp_path, edit(SPEC))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "kvsched", "sweep", str(spec_path), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr and not out.exists()


def test_cli_refuses_an_output_directory_of_another_sweep(tmp_path):
    spec = load_spec(_write(tmp_path))
    out = tmp_path / "out"
    run_sweep(spec, ResultStore.open(out, spec))
    before = sorted(p.name for p in out.rglob("*"))
    other = _write(tmp_path, SPEC.replace('name = "tiny"', 'name = "other"'), "other.toml")
    proc = subprocess.run([sys.executable, "-m", "kvsched", "sweep", str(other), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "different sweep" in proc.stderr
    assert sorted(p.name for p in out.rglob("*")) == before


# --------------------------------------------------------------------------- issue 19

def _cli_sweep(spec_path, out, *extra, cwd=None):
    return subprocess.run([sys.executable, "-m", "kvsched", "sweep", str(spec_path), "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def test_a_run_time_spec_error_leaves_no_spec_json_and_the_corrected_rerun_runs(tmp_path):
    """A KV cache smaller than every request is found when the first point builds its workload
    (as `kvsched simulate` finds it); the folder the failed run created is taken back."""
    bad = SPEC.replace("kv_capacity = 6000", "kv_capacity = 16")
    out = tmp_path / "out"
    proc = _cli_sweep(_write(tmp_path, bad), out)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "engine.kv_capacity" in proc.stderr and "every request would be rejected" in proc.stderr
    assert not out.exists()
    proc = _cli_sweep(_write(tmp_path, SPEC.replace('name = "tiny"', 'name = "fixed"')), out)
    assert proc.returncode == 0, proc.stderr
    assert len(load_runs(out)) == 12


def test_a_failed_run_keeps_a_folder_that_holds_finished_points(tmp_path):
    """Only a run that stored nothing is taken back: finished points are never deleted."""
    spec = load_spec(_write(tmp_path))
    out = tmp_path / "out"
    store = ResultStore.open(out, spec)
    run_sweep(spec, store)
    store.discard_if_unused()
    assert (out / "spec.json").exists() and len(list((out / "points").glob("*.parquet"))) == 12


def _children(pid: int) -> set[int]:
    """Child processes of `pid` (Linux /proc), without psutil."""
    out = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out.update(int(c) for c in f.read().split())
    return out


def _running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the workers")
def test_sigterm_stops_the_sweep_and_its_workers(tmp_path):
    # Points of several seconds each: the sweep must stop now, not after the points in flight.
    slow = SPEC.replace("num_requests = 60", "num_requests = 20000").replace(
        "seeds = [0, 1]", "seeds = [0, 1, 2, 3]").replace("kv_capacity = 6000", "kv_capacity = 12288")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "kvsched", "sweep", str(_write(tmp_path, slow)), "--out",
                             str(out), "--jobs", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while time.monotonic() < deadline and len(workers) < 2:
        workers = _children(proc.pid)
        time.sleep(0.05)
    assert len(workers) >= 2, "the pool must be running before the signal"
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_running(p) for p in workers):
        time.sleep(0.05)
    assert not [p for p in workers if _running(p)], "workers still running after the driver stopped"
    finished = list((out / "points").glob("*.parquet"))
    assert len(finished) < len(load_spec(_write(tmp_path, slow)).points())
    for path in finished:
        assert pq.read_table(path).num_rows == 1


def test_trace_paths_resolve_against_the_spec_folder(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "trace.csv").write_text("num_prompt_tokens,num_output_tokens\n10,5\n20,3\n7,9\n")
    text = SPEC.replace('kind = "default"\nrates = [2.0, 8.0]', 'kind = "trace"\npath = "trace.csv"\nrates = [2.0]')
    spec_path = _write(folder, text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = _cli_sweep(spec_path, tmp_path / "out", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    rows = load_runs(tmp_path / "out").to_pylist()
    assert {r["workload_path"] for r in rows} == {str(folder / "trace.csv")}
    assert {r["num_requests"] for r in rows} == {3}
    missing = _write(folder, text.replace("trace.csv", "absent.csv"), "missing.toml")
    with pytest.raises(ConfigError, match="workload.path.*absent.csv"):
        load_spec(missing)


def test_a_sweeps_default_cost_is_the_command_lines(tmp_path):
    """Without engine.cost a point runs the CLI's default cost: its summary equals `kvsched
    simulate` with the same options."""
    import json

    from kvsched.experiments.runner import run_point
    from kvsched.experiments.scenario import DEFAULT_COST
    text = SPEC.replace('cost = "linear:d0=0.01,d1=2e-7"\n', "")
    spec = load_spec(_write(tmp_path, text))
    assert spec.engine["cost"] == DEFAULT_COST
    point = next(p for p in spec.points() if p["label"] == "sarathi" and p["seed"] == 1
                 and p["workload"]["rate"] == 8.0)
    row, _ = run_point(point)
    proc = subprocess.run([sys.executable, "-m", "kvsched", "simulate", "--policy", "sarathi", "--rate", "8",
                           "--num-requests", "60", "--kv-capacity", "6000", "--block-size", "16",
                           "--seed", "1", "--json"], capture_output=True, text=True, timeout=120)
    cli = json.loads(proc.stdout)
    for key in ("mean_latency", "p99_latency", "mean_ttft", "total_latency", "num_evictions"):
        assert row[key] == pytest.approx(cli[key], rel=1e-12), key


@pytest.mark.parametrize("edit, key", [
    (lambda t: t.replace("seeds = [0, 1]", "seeds = [-1]"), "seeds"),
    (lambda t: t.replace("kv_capacity = 6000", 'kv_capacity = "big"'), "engine.kv_capacity"),
    (lambda t: t.replace("kv_capacity = 6000", "kv_capacity = 6000.5"), "engine.kv_capacity"),
    (lambda t: t.replace("block_size = 16", "block_size = 16\nmax_num_batched_tokens = -5"),
     "engine.max_num_batched_tokens"),
    (lambda t: t.replace("per_request = true", 'per_request = "no"'), "per_request"),
    (lambda t: 'predictors = [5]\n' + t, "predictors"),
    (lambda t: 'predictors = ["psychic"]\n' + t, r"predictors\[0\]"),
    (lambda t: t.replace("watermark = [0.0, 0.05]", "watermark = [0.0, 2.0]"), r"policy\[0\].params"),
    (lambda t: t.replace("rates = [2.0, 8.0]", "rates = [inf]"), "workload.rates"),
    (lambda t: t.replace('cost = "linear:d0=0.01,d1=2e-7"', 'cost = "quadratic"'), "engine"),
])
def test_bad_values_are_refused_when_the_spec_is_read(tmp_path, edit, key):
    with pytest.raises(ConfigError, match=f"key '{key}"):
        load_spec(_write(tmp_path, edit(SPEC)))
