"""`report.html`: the run report (what `report.md` says, `orthoselect.stages.manifest.render_report`) as one
self-contained page: inline CSS, the plots of `orthoselect.report.plots` embedded as base64 PNG data URIs, no
script and no external resource. Written by the manifest step beside report.md, written again from the
manifest at the end of every later attempt (attempt counts, a notice when the latest did not complete:
`orthoselect.stages.manifest.refresh_attempts`) with the plots it recorded (`orthoselect.report.data`),
and by `orthoselect report --html` for a run that finished before it existed."""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping

from orthoselect.data.storage import Storage
from orthoselect.report.canary import canary_section
from orthoselect.report.data import (
    RULE_PLOTS,
    SCORE_COUNTS,
    SCORE_PLOT,
    ScoreCounts,
    draw,
    plot_png,
    read_score_counts,
)
from orthoselect.report.files import HTML_REPORT, ReportMissing, location, missing
from orthoselect.report.grouping import grouping_section
from orthoselect.report.html_sections import (
    calls_section,
    choice_section,
    counts_section,
    failures_section,
    header_section,
    rules_section,
)

__all__ = ["SCORE_COUNTS", "ScoreCounts", "read_score_counts", "render_html", "write_html_report"]
log = logging.getLogger(__name__)

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2933; margin: 2em auto;
       max-width: 1200px; padding: 0 1.5em; }
h1 { font-size: 1.6em; margin-bottom: 0.3em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #d9e2ec; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #d9e2ec; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f4f8; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.chosen td { background: #fdecea; } tr.flagged td { background: #fff4e5; }
code { font-size: 0.9em; color: #52606d; } .note { color: #52606d; font-size: 0.92em; }
.warnings { background: #fff4e5; border-left: 4px solid #f0b429; padding: 0.4em 1em; }
.notice { background: #fdecea; border-left: 4px solid #c0392b; padding: 0.4em 1em; }
.headline { font-size: 1.1em; background: #f0f4f8; padding: 0.5em 1em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #d9e2ec; }
figcaption { color: #52606d; font-size: 0.9em; } .scroll { overflow-x: auto; }
"""


def render_html(
    manifest: dict,
    selection: dict,
    correlation_csv: str,
    scores: ScoreCounts | None,
    figures: Mapping[str, bytes] | None = None,
) -> str:
    """The report page of a run: its manifest, `rule_selection.json`, `correlation.csv` (the heatmap is left
    out when empty and not in `figures`) and its binned document scores (`read_score_counts`; the histogram
    is left out when None). `figures`: PNGs already drawn, by plot name; a plot not in it is drawn now."""

    def png(name: str) -> bytes:
        if figures is not None and name in figures:
            return figures[name]
        return draw(name, selection, correlation_csv, scores)

    heatmap = bool(correlation_csv) or "correlation heatmap" in (figures or {})
    body = header_section(manifest)
    body += choice_section(selection, manifest["dpp"].get("sample_docs"), png)
    body += rules_section(selection, heatmap, png)
    body += canary_section(manifest)
    body += grouping_section(manifest)
    body += counts_section(manifest, scores, png)
    body += calls_section(manifest)
    body += failures_section(manifest)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>OrthoSelect run report: {html.escape(manifest['run_dir'])}</title>"
        f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def draw_figures(storage: Storage, selection: dict, correlation_csv: str, scores: ScoreCounts) -> dict[str, str]:
    """Every plot of the report drawn (or found drawn) in the run directory: {plot name: its file}. A plot
    that cannot be drawn is left out (the page says so)."""
    files = {}
    for name in (*RULE_PLOTS, SCORE_PLOT):
        if name == "correlation heatmap" and not correlation_csv:
            continue
        try:
            files[name], _ = plot_png(storage, name, selection, correlation_csv, scores)
        except Exception as e:  # noqa: BLE001 - the page names the plot that failed
            log.warning("report.html: the %s plot failed: %s: %s", name, type(e).__name__, e)
    return files


def write_html_report(storage: Storage, manifest: dict | None = None) -> str:
    """Write `report.html` into a finished run's directory from what it persisted, the binned scores it
    plots (`score_counts.json`) and its plots (`plots/`); returns the report's location. A manifest given
    gets the plots' files as `figures` (for `rewrite_html_report`)."""
    given = manifest is not None
    manifest = manifest if manifest is not None else storage.read_json("manifest.json")
    selection = storage.read_json("rule_selection.json", manifest["rule_choice"])
    correlation = storage.read_bytes("correlation.csv").decode() if storage.exists("correlation.csv") else ""
    scores = read_score_counts(storage)
    storage.write_json(SCORE_COUNTS, scores.to_dict())
    files = draw_figures(storage, selection, correlation, scores)
    if given:
        manifest["figures"] = files
    figures = {name: storage.read_bytes(path) for name, path in files.items()}
    storage.write_text(HTML_REPORT, render_html(manifest, selection, correlation, scores, figures))
    return location(storage)


def rewrite_html_report(storage: Storage, manifest: dict) -> None:
    """`report.html` again from an updated manifest, with the plots it recorded (`figures`), nothing drawn:
    what the end of every attempt does. A manifest older than `figures` is written in full instead."""
    if "figures" not in manifest:
        write_html_report(storage, manifest)
        return
    figures = {}
    for name, path in manifest["figures"].items():
        try:
            figures[name] = storage.read_bytes(path)
        except FileNotFoundError:
            log.warning("report.html: the %s plot %s is gone; drawn again", name, path)
    counts = storage.read_json(SCORE_COUNTS, default=None)
    scores = ScoreCounts.from_dict(counts) if counts is not None else None
    page = render_html(manifest, manifest["rule_choice"], "", scores, figures)
    storage.write_text(HTML_REPORT, page)


def report_html(storage: Storage) -> str:
    """Where a finished run's report.html is, written from its manifest first when the run predates it;
    ReportMissing (one line) when the run has not finished."""
    if storage.exists(HTML_REPORT):
        return location(storage)
    if not storage.exists("manifest.json"):
        raise ReportMissing(missing(storage))
    return write_html_report(storage)
