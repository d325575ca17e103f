"""`kvsched sweep` and `kvsched report`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _progress_bar(description: str):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), transient=False)


def sweep(spec_file: Path = typer.Argument(..., help="Sweep spec (TOML)."),
          out: Path = typer.Option(..., "--out", help="Result directory (created; resumable)."),
          executor: str = typer.Option("local", "--executor", help="local | ray"),
          jobs: int = typer.Option(1, "--jobs", min=1, help="Parallel processes (local) or CPUs (ray)."),
          ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                                    help="Ray cluster address (default: a local one).")):
    """Run every point of a sweep; finished points are skipped on a rerun."""
    from .experiments import load_spec, run_sweep
    from .experiments.store import ResultStore
    spec = load_spec(spec_file)
    if executor not in ("local", "ray"):
        from .errors import ConfigError
        raise ConfigError(f"--executor: expected local or ray, got {executor!r}")
    store = ResultStore.open(out, spec)
    with _progress_bar(f"sweep {spec.name}") as bar:
        task = bar.add_task("points", total=len(spec.points()))

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        ran, skipped = run_sweep(spec, store, executor=executor, jobs=jobs, ray_address=ray_address,
                                 progress=progress)
    typer.echo(f"ran {ran} points, skipped {skipped} already finished; results in {out}")


def report(sweep_dir: Path = typer.Argument(..., help="A sweep's result directory."),
           out: Path = typer.Option(Path("report.html"), "--out", help="HTML file to write."),
           cdf_rate: Optional[float] = typer.Option(None, "--cdf-rate",
                                                    help="Arrival rate of the latency CDF.")):
    """Write a self-contained HTML report (figures also saved beside it)."""
    from .report import write_report
    path = write_report(sweep_dir, out, cdf_rate=cdf_rate)
    typer.echo(f"wrote {path} (figures in {path.with_name(path.stem + '_figures')})")


def register(app: typer.Typer, bound_app: typer.Typer) -> None:
    app.command("sweep")(sweep)
    app.command("report")(report)
