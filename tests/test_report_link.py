"""report.html of a run directory on S3, reachable from the Prefect UI: a presigned link a browser opens
without credentials, valid for a documented time, served as HTML (moto's S3 API on loopback)."""

from __future__ import annotations

import urllib.request
from urllib.parse import parse_qs, urlparse

import pytest

from orthoselect.data.storage import Storage
from orthoselect.stages.shown_report import REPORT_LINK_SECONDS, report_artifacts
from support.s3 import s3_options

pytestmark = pytest.mark.integration


def test_report_html_of_an_s3_run_is_a_presigned_link(s3_endpoint):
    storage = Storage("s3://test-bucket/runs/linked", s3_options(s3_endpoint))
    page = "<!DOCTYPE html>\n<html><body><h1>OrthoSelect run report</h1></body></html>\n"
    storage.write_text("report.html", page)
    storage.write_text("report.md", "# OrthoSelect run report\n")
    storage.write_json("manifest.json", {"calls": {}, "timings": {}, "spend": {}, "rule_failures": []})

    shown = {a.key: a for a in report_artifacts(storage)}
    link = shown["orthoselect-report-html"]
    assert link.kind == "link" and link.data.startswith(f"{s3_endpoint}/test-bucket/runs/linked/report.html?")
    assert parse_qs(urlparse(link.data).query)["X-Amz-Expires"] == [str(REPORT_LINK_SECONDS)] == ["604800"]
    assert "valid until" in link.description and f"]({link.data})" in shown["orthoselect-report"].data
    with urllib.request.urlopen(link.data, timeout=30) as answer:  # a plain GET: the signature is the access
        assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/html")
        assert answer.read().decode() == page
