"""A finished run's report files as the `orthoselect report` command finds them: where they are, report.md's
text. Light on purpose: the command answers without loading what draws the plots (report.html written on
demand for a run that predates it is `orthoselect.report.html.report_html`)."""

from __future__ import annotations

import os

from orthoselect.data.storage import Storage

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
        raise ReportMissing(missing(storage)) from None


def missing(storage: Storage) -> str:
    if not storage.exists(""):
        return f"{storage.url()}: no such run directory"
    return f"{storage.url()}: no report: the run has not finished (see `orthoselect status`)"
