"""`kvsched sweep` and `kvsched report`."""

from __future__ import annotations

import contextlib
import math
import signal
from pathlib import Path
from typing import List, Optional

import typer

from . import common as cc
from ..errors import ConfigError
from ..experiments.spec import MAX_NUM_REQUESTS


def _progress_bar(description: str):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.console import Console
    # On stderr, and only on a terminal: stdout holds only the results, and an error is one line.
    console = Console(stderr=True)
    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), transient=True, console=console,
                    disable=not console.is_terminal)


@cc.user_errors
def sweep(spec_file: Path = typer.Argument(..., help="Sweep spec (TOML)."),
          out: Path = typer.Option(..., "--out", help="Result directory (created; resumable)."),
          executor: str = typer.Option("local", "--executor", help="local | ray"),
          jobs: int = typer.Option(1, "--jobs", min=1, max=1024,
                                   help="Parallel processes (local) or CPUs (ray)."),
          ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                                    help="Ray cluster address (default: a local one).")):
    """Run every point of a sweep; finished points are skipped on a rerun."""
    from ..experiments import load_spec, run_sweep
    from ..experiments.store import ResultStore
    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor: expected local or ray, got {executor!r}")
    if ray_address is not None and executor != "ray":
        raise ConfigError("--ray-address: only with --executor ray")
    spec = load_spec(spec_file)
    store = ResultStore.open(out, spec)
    with _stop_on_sigterm(), _progress_bar(f"sweep {spec.name}") as bar:
        task = bar.add_task("points", total=len(spec.points()))

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        ran, skipped = run_sweep(spec, store, executor=executor, jobs=jobs, ray_address=ray_address,
                                 progress=progress)
    typer.echo(f"ran {ran} points, skipped {skipped} already finished; results in {out}")


@contextlib.contextmanager
def _stop_on_sigterm():
    """SIGTERM raises SystemExit(143) in the driver, so the worker pool's ``with`` block ends
    and terminates its workers (without this, Python dies at once and the workers run on)."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@cc.user_errors
def report(sweep_dir: Path = typer.Argument(..., help="A sweep's result directory."),
           out: Path = typer.Option(Path("report.html"), "--out", help="HTML file to write."),
           cdf_rate: Optional[float] = typer.Option(None, "--cdf-rate",
                                                    help="Arrival rate of the latency CDF.")):
    """Write a self-contained HTML report (figures also saved beside it)."""
    from ..report import write_report
    if cdf_rate is not None and not (math.isfinite(cdf_rate) and cdf_rate >= 0):
        raise ConfigError(f"--cdf-rate: got {cdf_rate}, expected one of the sweep's rates (a number >= 0)")
    path = write_report(sweep_dir, out, cdf_rate=cdf_rate)
    typer.echo(f"wrote {path} (figures in {path.with_name(path.stem + '_figures')})")


def register(app: typer.Typer, bound_app: typer.Typer) -> None:
    app.command("sweep")(sweep)
    app.command("report")(report)


def _reproduce(target: str, out: Path, jobs: int, horizons=None, rates=None) -> None:
    """Run a bundled reproduction sweep (resumable), write its report, print ours beside the paper's."""
    from rich.table import Table

    from ..experiments.reproduce import reproduce
    with _stop_on_sigterm(), _progress_bar(target) as bar:
        task = bar.add_task("points", total=None)
        title, headers, rows, note = reproduce(
            target, out, jobs=jobs, horizons=horizons, rates=rates, progress=lambda done, total: bar.update(task, completed=done, total=total))
    table = Table(title=title)
    for header in headers:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    console = cc.console()
    console.print(table)
    console.print(note)
    console.print(f"report: {out / 'report.html'}")


@cc.user_errors
def reproduce_mcsf_real_trace(
        out: Path = typer.Option(Path("results/r2-mcsf-lmsys"), "--out", help="Result directory."),
        jobs: int = typer.Option(1, "--jobs", min=1, max=1024, help="Parallel processes."),
        horizons: Optional[List[int]] = typer.Option(
            None, "--horizons", min=1, max=MAX_NUM_REQUESTS,
            help="Horizon (requests per run); repeat for each, at least two distinct "
                 "(default: the bundled spec's 1000, 2000, 3000). Another sweep: give it its own --out."),
        rates: Optional[List[float]] = typer.Option(
            None, "--rates",        # checked by with_rates (one message for 0, nan and inf alike)
            help="Arrival rate (req/s); repeat for each (default: the bundled spec's 10 and 50). "
                 "Another sweep: give it its own --out.")):
    """R2: MC-SF vs its benchmarks on an LMSYS-like stream (Llama-2-70B TP2, M = 16,492)."""
    _reproduce("mcsf-real-trace", out, jobs, horizons or None, rates or None)


@cc.user_errors
def reproduce_amin_intervals(
        out: Path = typer.Option(Path("results/r3-amin-intervals"), "--out", help="Result directory."),
        jobs: int = typer.Option(1, "--jobs", min=1, max=1024, help="Parallel processes.")):
    """R3: A_min and A_max vs hindsight shortest-first under interval predictions."""
    _reproduce("amin-intervals", out, jobs)
