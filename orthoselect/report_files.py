"""A finished run's report files as the `orthoselect report` command finds them: where they are, report.md's
text, and report.html written on demand for a run that predates it. Light on purpose: the command answers
without loading what draws the plots."""

from __future__ import annotations

import os

from orthoselect.storage import Storage

HTML_REPORT = "report.html"


class ReportMissing(FileNotFoundError):
    """The run directory has no report: the run has not finished (or there is no run there)."""


def location(storage: Storage, name: str = HTML_REPORT) -> str:
    """Where a file of the run is: its URL, or for a local run its absolute path."""
    url = storage.url(name)
    return url if "://" in url else os.path.abspath(url)


def report_markdown(storage: Storage) -> str:
    """A finished run's report.md; ReportMissing (one line) when it has none."""
    try:
        return storage.read_bytes("report.md").decode()
    except FileNotFoundError:
        raise ReportMissing(_missing(storage)) from None


def report_html(storage: Storage) -> str:
    """Where a finished run's report.html is, written from its manifest first when the run predates it;
    ReportMissing (one line) when the run has not finished."""
    if storage.exists(HTML_REPORT):
        return location(storage)
    if not storage.exists("manifest.json"):
        raise ReportMissing(_missing(storage))
    from orthoselect.html_report import write_html_report

    return write_html_report(storage)


def _missing(storage: Storage) -> str:
    if not storage.exists(""):
        return f"{storage.url()}: no such run directory"
    return f"{storage.url()}: no report: the run has not finished (see `orthoselect status`)"
