"""Running sweep points: locally in parallel processes, or on a Ray cluster.

`run_point(config)` is a pure function of the point's config (workload, engine, policy, predictor,
seed): the same config always gives the same summary, whichever executor runs it. Results are
written by the driver as they arrive (`ResultStore`), so a crash loses at most the points in flight.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from collections.abc import Callable, Iterable

import numpy as np

from ..errors import ConfigError
from .spec import SweepSpec, config_hash
from .store import ResultStore

Progress = Callable[[int, int], None]


def build_workload(config: dict):
    """The request stream of a point: depends on the workload, rate, seed and predictor only,
    so every policy at the same point sees the same requests and predictions (paired).
    A rate of 0 puts every arrival at time 0; no rate keeps a trace's own arrival times."""
    from .scenario import build_workload as build
    spec, seed, n = config["workload"], config["seed"], config["num_requests"]
    if spec["kind"] == "typed":
        from ..workload.predictors import apply_predictor
        from ..workload.typed import typed_workload
        workload = typed_workload(spec["types"], rate=spec.get("rate"), num_requests=n, seed=seed)
        return apply_predictor(workload, config.get("predictor"), seed)
    trace = Path(spec["path"]) if spec["kind"] == "trace" else None
    return build(trace=trace, rate=spec.get("rate"), num_requests=n, seed=seed,
                 predictor=config.get("predictor"))


def build_simulator(config: dict):
    from .scenario import DEFAULT_COST, build_simulator as build, parse_cost
    engine = config["engine"]
    simulator = build(parse_cost(engine.get("cost", DEFAULT_COST)), kv_capacity=engine.get("kv_capacity"),
                      block_size=engine.get("block_size"),
                      kv_convention=engine.get("kv_convention", "computed"),
                      eviction=engine.get("eviction", "recompute"))
    budget = engine.get("max_num_batched_tokens")
    return simulator if budget is None else dataclasses.replace(simulator, max_num_batched_tokens=budget)


def run_point(config: dict) -> tuple[dict, dict | None]:
    """Run one point; return its result row and, if asked, its per-request columns."""
    from .. import __version__
    from ..policies import make
    started = time.perf_counter()
    workload = build_workload(config)
    simulator = build_simulator(config)
    _check_fits(workload, simulator)
    result = simulator.run(workload, make(config["policy"], **config["params"]), seed=config["seed"])
    row = {"config_hash": config_hash(config), **_flatten(config), **result.summary().as_dict()}
    if config.get("bound"):
        from ..bounds import compute_bound
        bound = compute_bound(config["bound"], workload, simulator, 60.0)
        row.update(bound_name=config["bound"],
                   bound_value=None if bound.bound is None else float(bound.bound),
                   bound_status=str(bound.status))
    row.update(wall_time=time.perf_counter() - started, kvsched_version=__version__)
    requests = _requests(result, row["config_hash"]) if config.get("per_request") else None
    return row, requests


def _check_fits(workload, simulator) -> None:
    """As on the command line: a KV cache too small for every request is a spec error."""
    from .scenario import check_fits
    try:
        check_fits(workload, simulator)
    except ConfigError as exc:
        raise ConfigError(f"engine.kv_capacity: {str(exc).removeprefix('--kv-capacity: ')}") from None


def _flatten(config: dict) -> dict:
    w, e = config["workload"], config["engine"]
    return {"workload_kind": w["kind"], "workload_path": w.get("path"),
            "workload_types": json.dumps(w.get("types")) if w.get("types") else None,
            "rate": w.get("rate"), "cost": e.get("cost"), "kv_capacity": e.get("kv_capacity"),
            "block_size": e.get("block_size"), "kv_convention": e.get("kv_convention", "computed"),
            "max_num_batched_tokens": e.get("max_num_batched_tokens"), "eviction": e.get("eviction", "recompute"),
            "policy_id": config["policy"], "params": json.dumps(config["params"], sort_keys=True),
            "label": config["label"], "predictor": config.get("predictor"), "seed": config["seed"],
            "num_requests_config": config["num_requests"]}


def _requests(result, config_hash_: str) -> dict:
    w = result.workload
    return {"config_hash": [config_hash_] * len(w), "request_id": np.arange(len(w)),
            "arrival_time": w.arrival_time, "num_prompt_tokens": w.num_prompt_tokens,
            "true_output_tokens": w.true_output_tokens, "first_token_time": result.first_token_time,
            "finish_time": result.finish_time, "latency": result.finish_time - w.arrival_time,
            "ttft": result.first_token_time - w.arrival_time, "num_evictions": result.num_evictions,
            "num_recomputed_tokens": result.num_recomputed_tokens, "rejected": result.rejected}


def run_sweep(spec: SweepSpec, store: ResultStore, *, executor: str = "local", jobs: int = 1,
              ray_address: str | None = None, progress: Progress | None = None) -> tuple[int, int]:
    """Run every point not yet in `store`. Returns (points run now, points skipped as done)."""
    points = spec.points()
    hashes = [config_hash(p) for p in points]
    order = {h: i for i, h in enumerate(hashes)}
    todo = [p for p, h in zip(points, hashes) if not store.has(h)]
    skipped = len(points) - len(todo)
    if progress:
        progress(skipped, len(points))
    runners = {"local": _run_local, "ray": _run_ray}
    if executor not in runners:
        raise ConfigError(f"--executor: expected local or ray, got {executor!r}")
    done = skipped
    try:
        for row, requests in runners[executor](todo, jobs, ray_address):
            row["point_index"] = order[row["config_hash"]]    # the spec's order: the report's baseline
            store.write(row, requests)
            done += 1
            if progress:
                progress(done, len(points))
    except BaseException:
        store.discard_if_unused()     # a first run that stored nothing leaves no spec.json behind
        raise
    store.consolidate()
    return len(todo), skipped


def _run_local(points: list[dict], jobs: int, _address) -> Iterable[tuple[dict, dict | None]]:
    """Points in this process (jobs = 1) or in a pool of `jobs` worker processes.

    The pool is `multiprocessing.Pool`, not `concurrent.futures`: leaving the ``with`` block for
    any reason (an error, SIGTERM turned into SystemExit by the command, the generator closed)
    terminates the workers instead of waiting for them, and each worker also asks the kernel to
    end it when the driver dies (`_die_with_parent`), so no worker outlives its sweep.
    """
    if jobs <= 1 or len(points) <= 1:
        for point in points:
            yield run_point(point)
        return
    import multiprocessing
    with multiprocessing.get_context("fork").Pool(jobs, initializer=_die_with_parent) as pool:
        yield from pool.imap_unordered(run_point, points)


def _die_with_parent() -> None:
    """In a worker: default SIGTERM/SIGINT handling (the driver's handlers are inherited through
    fork) and, on Linux, SIGTERM when the driver dies (prctl PR_SET_PDEATHSIG)."""
    import signal
    import sys
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C reaches the driver, which terminates us
    if sys.platform.startswith("linux"):
        import ctypes
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG = 1
        except OSError:
            pass


def _run_ray(points: list[dict], jobs: int, address: str | None) -> Iterable[tuple[dict, dict | None]]:
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs the 'ray' extra: pip install 'kvsched[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, num_cpus=None if address else max(jobs, 1),
                 include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(run_point)
        pending = [remote.remote(p) for p in points]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            yield ray.get(ready[0])
    finally:
        if started_here:
            ray.shutdown()
