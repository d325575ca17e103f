"""The HTML report of a sweep: self-contained (each figure an SVG image in a data URI, so that the
figures' element ids cannot clash with each other's), figures also saved as files."""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from . import figures
from .stats import (MIN_CI_SEEDS, _multiples, by_panel, by_series_and_rate, mean_ci, num_seeds,
                    paired_ratios, series_label)

_CURVES = (("mean_latency", "mean latency (s)", "Mean end-to-end latency"),
           ("p99_latency", "p99 latency (s)", "p99 end-to-end latency"),
           ("mean_ttft", "mean TTFT (s)", "Mean time to first token"),
           ("throughput_tokens_per_s", "output tokens/s", "Throughput"))


def _svg(fig) -> str:
    """The figure as SVG text, its box grown to everything drawn (a legend below the panels may be
    wider than they are), with no date and fixed ids so that a rerun writes the same file."""
    import matplotlib
    import matplotlib.pyplot as plt
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "kvsched"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", pad_inches=0.1, metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.4g}"
    return html.escape(str(x))


def _table(headers: list[str], rows: list[list]) -> str:
    """Numbers right-aligned, text left-aligned, by column; in a box that scrolls sideways by
    itself if the table is wider than the page, so that the page never does."""
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(headers))]
    align = [' class="num"' if n else "" for n in numeric]
    head = "".join(f"<th{a}>{html.escape(h)}</th>" for h, a in zip(headers, align))
    body = "".join("<tr>" + "".join(f"<td{a}>{_fmt(c)}</td>" for c, a in zip(row, align)) + "</tr>"
                   for row in rows)
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _is_number(cell) -> bool:
    """A number, a missing value, or a number with its interval ("2.1 ± 0.3")."""
    if cell is None or isinstance(cell, (int, float)):
        return True
    try:
        float(str(cell).split(" ± ")[0])
        return True
    except ValueError:
        return False


def _summary_table(rows: list[dict]) -> str:
    out = []
    metrics = ("mean_latency", "p99_latency", "mean_ttft", "num_evictions", "recompute_ratio",
               "peak_kv_utilization")
    grouped = {m: by_series_and_rate(rows, m) for m in metrics}
    for label, per_rate in grouped["mean_latency"].items():
        for rate in sorted(per_rate):
            cells = []
            for m in metrics:
                mean, half, n = mean_ci(grouped[m][label][rate])
                cells.append(f"{mean:.4g}" + (f" ± {half:.2g}" if n >= MIN_CI_SEEDS else ""))
            out.append([label, rate, n] + cells)
    return _table(["policy", "rate", "seeds"] + list(metrics), out)


def _bound_table(rows: list[dict]) -> str:
    if not any(r.get("bound_value") for r in rows):
        return "<p>No bound was computed for this sweep (set <code>bound = \"ip\"</code> or \"fluid\").</p>"
    ratios = [dict(r, gap=r["total_latency"] / r["bound_value"]) for r in rows if r.get("bound_value")]
    out = []
    for label, per_rate in by_series_and_rate(ratios, "gap").items():
        for rate in sorted(per_rate):
            mean, half, n = mean_ci(per_rate[rate])
            out.append([label, rate, n, mean, _fmt_ci(half) if n >= MIN_CI_SEEDS else None])
    return _table(["policy", "rate", "seeds", "total latency / bound", "± 95% CI"], out)


def _cdf_section(requests, rows: list[dict], rate: float | None, fig_dir: Path) -> str:
    if requests is None or requests.num_rows == 0:
        return "<p>Per-request rows were not stored (set <code>per_request = true</code>).</p>"
    rates = sorted({r.get("rate") for r in rows if r.get("rate") is not None})
    if rate is None:
        rate = rates[len(rates) // 2] if rates else None
    hashes = np.asarray(requests.column("config_hash").to_pylist())
    latency = requests.column("latency").to_numpy(zero_copy_only=False)
    panels = []
    for title, panel_rows in by_panel([r for r in rows if r.get("rate") == rate]):
        multi = _multiples(panel_rows)
        pooled: dict[str, list] = {}
        for r in panel_rows:
            pooled.setdefault(series_label(r, *multi), []).append(latency[hashes == r["config_hash"]])
        panels.append((title, {k: np.concatenate(v) for k, v in pooled.items()}))
    fig = figures.latency_cdf(panels, rate or 0.0)
    return _save_and_embed(fig, fig_dir / "latency_cdf.svg", f"Latency CDF at {rate or 0.0:g} req/s")


def _check_cdf_rate(rows: list[dict], rate: float | None) -> None:
    rates = sorted({r.get("rate") for r in rows if r.get("rate") is not None})
    if rate is not None and rates and rate not in rates:
        raise ConfigError(f"--cdf-rate: got {rate:g}, expected one of the sweep's rates: "
                          f"{', '.join(f'{r:g}' for r in rates)}")


def _paired_section(rows: list[dict]) -> str:
    """Only the series that have pairs; a CI only with enough seeds, and a sentence saying so."""
    paired = paired_ratios(rows, "mean_latency") + paired_ratios(rows, "p99_latency")
    if not paired:
        return "<p>No two series ran on the same request streams; nothing to pair.</p>"
    grouped = any(p["panel"] for p in paired)
    headers = (["panel"] if grouped else []) + ["policy", "vs", "metric", "mean ratio", "± 95% CI",
                                                "pairs", "seeds"]
    body = [([p["panel"]] if grouped else []) + [p["series"], p["baseline"], p["metric"], p["mean_ratio"],
                                                  _fmt_ci(p["ci95"]), p["pairs"], p["seeds"]] for p in paired]
    seeds = num_seeds(rows)
    note = (f"<p>Ratios pool every rate and seed of a panel; baseline: the panel's first series. "
            f"A 95% CI is shown with at least {MIN_CI_SEEDS} seeds")
    note += ("." if seeds >= MIN_CI_SEEDS else
             f"; this sweep has {seeds} seed{'s' if seeds != 1 else ''}, so the ratios are point estimates.")
    return _table(headers, body) + note + "</p>"


def _fmt_ci(half: float) -> str | None:
    """A CI half-width to two significant figures, as in the summary table's "mean ± half"."""
    return None if math.isnan(half) else f"{half:.2g}"


def _save_and_embed(fig, path: Path, alt: str) -> str:
    svg = _svg(fig)
    path.write_text(svg)
    uri = "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return (f'<figure><img src="{uri}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(path.name)}</figcaption></figure>")


def write_report(sweep_dir: str | Path, out: str | Path, *, cdf_rate: float | None = None,
                 headline: tuple[str, list[str], list[list], str] | None = None) -> Path:
    """Write the HTML report of `sweep_dir` to `out` and its figures beside it; return `out`.

    ``headline``: (title, headers, rows, note) shown first, e.g. a reproduction's figures beside
    the paper's."""
    from ..experiments.store import load_requests, load_runs, load_spec_record
    sweep_dir, out = Path(sweep_dir), Path(out)
    _check_out(out)
    # In the spec's order, so that its first policy is the baseline of the paired comparison.
    rows = sorted(load_runs(sweep_dir).to_pylist(), key=lambda r: r.get("point_index") or 0)
    spec = load_spec_record(sweep_dir)
    if not rows:
        raise ConfigError(f"{sweep_dir}: the sweep has no finished points yet")
    requests = load_requests(sweep_dir)
    _check_cdf_rate(rows, cdf_rate)
    fig_dir = out.with_name(out.stem + "_figures")
    fig_dir.mkdir(exist_ok=True)
    sections = [f"<h1>kvsched report: {html.escape(spec.get('name', 'sweep'))}</h1>",
                f"<p>{len(rows)} runs from <code>{html.escape(str(sweep_dir))}</code>; spec hash "
                f"<code>{spec.get('hash')}</code>. {_ci_note(rows)}</p>"]
    if headline is not None:
        title, headers, table_rows, note = headline
        sections += [f"<h2>{html.escape(title)}</h2>", _table(headers, table_rows),
                     f"<p>{html.escape(note)}</p>"]
    for metric, ylabel, title in _CURVES:
        sections.append(f"<h2>{title}</h2>")
        fig = figures.metric_vs_rate(rows, metric, ylabel, title)
        sections.append(_save_and_embed(fig, fig_dir / f"{metric}_vs_rate.svg", title))
    sections.append("<h2>Latency CDF</h2>")
    sections.append(_cdf_section(requests, rows, cdf_rate, fig_dir))
    sections.append("<h2>Paired comparison (same requests and predictions)</h2>")
    sections.append(_paired_section(rows))
    sections.append("<h2>Gap to the bound</h2>")
    sections.append(_bound_table(rows))
    sections.append("<h2>All figures per policy and rate</h2>")
    sections.append(_summary_table(rows))
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>kvsched report</title><style>"
            "body{font-family:sans-serif;max-width:1280px;margin:2em auto;color:#222}"
            "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.num{text-align:right}"
            "th{background:#f3f3f3}div.table{overflow-x:auto}figure{margin:1em 0}"
            "figure img{max-width:100%;height:auto}"
            "</style></head><body>" + "\n".join(sections) + "</body></html>")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _ci_note(rows: list[dict]) -> str:
    seeds = num_seeds(rows)
    if seeds >= MIN_CI_SEEDS:
        return f"Bands and ± are 95% confidence intervals across the {seeds} seeds."
    return (f"This sweep has {seeds} seed{'s' if seeds != 1 else ''}: figures and tables show means only "
            f"(confidence intervals need at least {MIN_CI_SEEDS} seeds).")


def _check_out(out: Path) -> None:
    """Before any work: the report goes to a file in an existing, writable folder."""
    folder = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; expected the HTML file to write, e.g. {out / 'report.html'}")
    if not folder.is_dir():
        raise ConfigError(f"--out {out}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"--out {out}: folder {str(folder)!r} is not writable")
