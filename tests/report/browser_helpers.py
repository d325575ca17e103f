"""Headless Chromium for the rendered-page tests: load a page with a probe script appended and
return what the probe measured (layout as the browser computed it, in CSS pixels).

The probe runs on the window's load event and writes its findings as JSON into a <pre id="probe">,
which `--dump-dom` prints with the rest of the DOM.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import tempfile
from pathlib import Path

#: Flags for a closed network: without the background-networking ones Chromium keeps opening
#: connections that are refused, many at a time; a fresh profile per run keeps runs independent.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars")

#: Seconds one page may take to load and dump before the test fails.
TIMEOUT_S = 60

# What the report page looks like to a reader: images, tables, the page's width.
REPORT_PROBE = """
addEventListener("load", () => {
  const box = e => e.getBoundingClientRect();
  const heading = t => {
    let e = t.closest("div.table") || t;
    while (e && e.tagName !== "H2") e = e.previousElementSibling;
    return e ? e.textContent : null;
  };
  const wrapper = t => t.closest("div.table") || t.parentElement;
  report({
    innerWidth: innerWidth,
    scrollWidth: document.documentElement.scrollWidth,
    headings: [...document.querySelectorAll("h2")].map(h => h.textContent),
    images: [...document.images].map(i => ({
      alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth,
      naturalHeight: i.naturalHeight, width: box(i).width, height: box(i).height})),
    tables: [...document.querySelectorAll("table")].map(t => ({
      heading: heading(t),
      rows: t.tBodies[0].rows.length,
      shownRows: [...t.tBodies[0].rows].filter(r => box(r).height > 0).length,
      cells: [...t.tBodies[0].rows].map(r => [...r.cells].map(c => c.textContent)),
      hiddenWidth: wrapper(t).scrollWidth - wrapper(t).clientWidth})),
  });
});
"""

# Each matplotlib SVG drawn inline in its own <div class="figure">: text that spills out of the
# figure (clipped in the image) and legends that cover an axes' plotting area.
FIGURE_PROBE = """
addEventListener("load", () => {
  const box = e => e.getBoundingClientRect();
  const outside = (b, r) => b.width > 0 &&
    (b.left < r.left - 1 || b.right > r.right + 1 || b.top < r.top - 1 || b.bottom > r.bottom + 1);
  const overlap = (a, b) =>
    Math.max(0, Math.min(a.right, b.right) - Math.max(a.left, b.left)) *
    Math.max(0, Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top));
  report({figures: [...document.querySelectorAll("div.figure")].map(d => {
    const svg = d.querySelector("svg"), frame = box(svg);
    const texts = [...svg.querySelectorAll("g[id^=text_], g[id^=legend_]")];
    const plots = [...svg.querySelectorAll("g[id^=axes_]")]
      .map(a => a.querySelector(":scope > g[id^=patch_]")).filter(p => p).map(box);
    const legends = [...svg.querySelectorAll("g[id^=legend_]")].map(box);
    // tick labels of one axis drawn over each other (e.g. too many bars for the panel's height)
    const ticks = [...svg.querySelectorAll("g[id^='matplotlib.axis_']")].map(
      axis => [...axis.querySelectorAll("g[id^=text_]")].map(box).filter(b => b.width > 0));
    const tickOverlaps = ticks
      .map(t => t.filter((a, i) => t.slice(i + 1).some(b => overlap(a, b) > 1)).length)
      .reduce((a, b) => a + b, 0);
    return {name: d.dataset.name, width: frame.width, height: frame.height,
            texts: texts.length, textsOutside: texts.filter(t => outside(box(t), frame)).length,
            legends: legends.length, plots: plots.length, tickOverlaps: tickOverlaps,
            legendOverPlot: Math.max(0, ...legends.flatMap(l => plots.map(p => overlap(l, p))))};
  })});
});
"""

_REPORT_FN = """
function report(found) {
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(found);
  document.body.append(pre);
}
"""


def probe_page(chromium: str, page: Path, probe: str, *, width: int, height: int = 1000) -> dict:
    """Load `page` (a copy with `probe` appended, beside the original so that relative links
    still resolve) in a `width` × `height` window and return the probe's findings."""
    text = page.read_text(encoding="utf-8")
    script = f"<script>{_REPORT_FN}{probe}</script>"
    copy = page.with_name(f".probe-{page.name}")
    copy.write_text(text.replace("</body>", script + "</body>") if "</body>" in text else text + script,
                    encoding="utf-8")
    try:
        dom = _dump_dom(chromium, copy, width, height)
    finally:
        copy.unlink(missing_ok=True)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    if found is None:
        raise AssertionError(f"the probe did not run on {page} (no <pre id=probe> in the dumped DOM; "
                             f"{len(dom)} characters dumped)")
    return json.loads(html.unescape(found.group(1)))


def _dump_dom(chromium: str, page: Path, width: int, height: int) -> str:
    with tempfile.TemporaryDirectory(prefix="kvsched-chromium-") as profile:
        argv = [chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                "--dump-dom", page.resolve().as_uri()]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S)
    if done.returncode != 0:
        raise AssertionError(f"chromium exited with {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def figures_page(svgs: dict[str, str], path: Path) -> Path:
    """A page drawing each SVG inline in its own <div class="figure" data-name=NAME>."""
    body = "".join(f'<div class="figure" data-name="{html.escape(name)}">{svg[svg.index("<svg"):]}</div>'
                   for name, svg in svgs.items())
    path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{body}</body></html>",
                    encoding="utf-8")
    return path


#: Smallest on-screen scale of a figure (rendered width / its own width) that keeps the legend's
#: and ticks' small font readable.
MIN_FIGURE_SCALE = 0.8


def page_problems(found: dict, expected_rows: dict[str, int], *, check_scale: bool = True) -> list[str]:
    """What is wrong on a probed report page: broken or shrunken images, a page wider than the
    window, a missing or short table (`expected_rows`: heading → number of body rows)."""
    problems = []
    if found["scrollWidth"] > found["innerWidth"]:
        problems.append(f"page scrolls sideways: {found['scrollWidth']} px wide "
                        f"in a {found['innerWidth']} px window")
    for image in found["images"]:
        if not (image["complete"] and image["naturalWidth"] > 0 and image["naturalHeight"] > 0):
            problems.append(f"image {image['alt']!r} did not load")
        elif check_scale and image["width"] / image["naturalWidth"] < MIN_FIGURE_SCALE:
            problems.append(f"image {image['alt']!r} shrunk to {image['width'] / image['naturalWidth']:.2f}")
    tables = {t["heading"]: t for t in found["tables"]}
    for heading, rows in expected_rows.items():
        table = tables.get(heading)
        if table is None:
            problems.append(f"no table under {heading!r}")
        elif table["rows"] != rows or table["shownRows"] != rows:
            problems.append(f"table {heading!r}: {table['shownRows']} of {table['rows']} rows shown, "
                            f"expected {rows}")
    return problems


def figure_problems(found: dict) -> list[str]:
    """What is wrong in probed figures: text cut off by the figure's edge, tick labels drawn over
    each other, a legend over a plotting area."""
    problems = []
    for fig in found["figures"]:
        if fig["width"] <= 0 or fig["height"] <= 0 or fig["texts"] == 0:
            problems.append(f"{fig['name']}: empty ({fig['width']} × {fig['height']} px, "
                            f"{fig['texts']} texts)")
        if fig["textsOutside"]:
            problems.append(f"{fig['name']}: {fig['textsOutside']} texts cut off at the figure's edge")
        if fig["tickOverlaps"]:
            problems.append(f"{fig['name']}: {fig['tickOverlaps']} tick labels overlap")
        if fig["legendOverPlot"] > 1:
            problems.append(f"{fig['name']}: legend covers {fig['legendOverPlot']:.0f} px² of a plot")
    return problems
