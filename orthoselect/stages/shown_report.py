"""What the whole-run steps show a person watching the run: the report (its text, where report.html is and
a link a browser can open), LLM usage per step in pipeline order, failed ratings, and the plots. The plots
are shown once per attempt, on the parent pipeline run (`orthoselect.stages.shown.run_artifacts`), from the
palette PNGs the report keeps in the run directory (`orthoselect.report.data`)."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import socket
from collections.abc import Callable

from orthoselect.data.storage import Storage, is_remote
from orthoselect.report.artifacts import Artifact
from orthoselect.report.data import SCORE_COUNTS, SCORE_PLOT, ScoreCounts, plot_png
from orthoselect.report.files import HTML_REPORT, location
from orthoselect.report.text import in_step_order

log = logging.getLogger("orthoselect")
SHARD_ROWS = 500
REPORT_LINK_SECONDS = 7 * 24 * 3600  # a presigned report.html link's life (S3's longest for SigV4)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _png(storage: Storage, name: str, alt: str, **data) -> str:
    """A plot (drawn once per content and kept in the run directory) inside markdown, or one line saying
    why it is missing: a plot never fails what shows it."""
    try:
        _, png = plot_png(storage, name, **data)
        return image_markdown(png, alt)
    except Exception as e:  # noqa: BLE001
        log.warning("%s not drawn (%s: %s)", alt, type(e).__name__, e)
        return f"_{alt} not drawn: {type(e).__name__}: {_cell(str(e))[:200]}_"


def image_markdown(png: bytes, alt: str) -> str:
    """A PNG inside markdown (a data URI): the Prefect UI shows it in the artifact, nothing to host."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def rule_plot_artifacts(storage: Storage) -> list[Artifact]:
    """The rule-correlation heatmap (clustered, rule names, chosen rules marked), rule quality and the
    fidelity curve, as images (palette PNGs, the run's only copy in the UI: the parent run's)."""
    sel = storage.read_json("rule_selection.json")
    csv = storage.read_bytes("correlation.csv").decode()
    return [
        Artifact(
            "orthoselect-rule-correlation",
            "markdown",
            _png(storage, "correlation heatmap", "rule correlation heatmap", selection=sel, correlation_csv=csv)
            + "\n\nPearson correlation of the rules' scores on the sample, in hierarchical-clustering order; "
            "chosen rules in red (the matrix: `correlation.csv` in the run directory).",
            "Rule correlation heatmap",
        ),
        Artifact(
            "orthoselect-rule-plots",
            "markdown",
            _png(storage, "rule quality", "rule quality", selection=sel)
            + "\n\n"
            + _png(storage, "fidelity curve", "fidelity curve", selection=sel),
            "Each rule's quality q (chosen in red); fidelity of the first r rules against random r-subsets",
        ),
    ]


def score_plot_artifacts(storage: Storage) -> list[Artifact]:
    """The histograms of the pool's and the selection's scores (the report's own plot file)."""
    counts = storage.read_json(SCORE_COUNTS, default=None)
    histogram = "_no binned scores in this run directory_"
    if counts is not None:
        histogram = _png(storage, SCORE_PLOT, "score histograms", scores=ScoreCounts.from_dict(counts))
    return [
        Artifact(
            "orthoselect-scores",
            "markdown",
            histogram + "\n\nDocument scores of the pool (grey) and of the selected documents (red).",
            "Pool vs selected scores",
        )
    ]


PLOTS: dict[str, Callable[[Storage], list[Artifact]]] = {"dpp": rule_plot_artifacts, "manifest": score_plot_artifacts}


def _step_order() -> list[str]:
    from orthoselect.stages import STEPS  # the registry imports this module

    return list(STEPS)


def usage_table(manifest: dict) -> Artifact:
    """Per step: LLM calls, tokens, cost and cache hits (this run's outputs, and all attempts), and time."""
    calls, timings = manifest.get("calls", {}), manifest.get("timings", {})
    rows = []
    for step in in_step_order({**timings, **calls}, manifest.get("step_order") or _step_order()):
        c, t = calls.get(step, {}), timings.get(step, {})
        rows.append(
            {
                "step": step,
                "requests": c.get("requests"),
                "cache_hits": c.get("cache_hits"),
                "tokens_in": c.get("tokens_in"),
                "tokens_out": c.get("tokens_out"),
                "tokens_cached": c.get("tokens_cached"),
                "cost_usd": c.get("cost_usd"),
                "requests_all_attempts": c.get("requests_all_attempts"),
                "cost_usd_all_attempts": c.get("cost_usd_all_attempts"),
                "wall_seconds": t.get("wall_seconds"),
                "busy_seconds": t.get("busy_seconds"),
            }
        )
    spend = manifest.get("spend", {})
    return Artifact(
        "orthoselect-usage",
        "table",
        rows,
        "LLM calls, tokens (tokens_cached: input read from the provider's prompt cache), cost and cache hits "
        f"per step (cost of the outputs ${spend.get('cost_usd', 0):.4f}; "
        f"paid over all attempts ${spend.get('spent_by_attempts_usd', 0):.4f}); wall seconds of the latest "
        "attempt that ran the step, busy seconds added over its units",
    )


def failures_artifact(manifest: dict) -> Artifact:
    """Failed ratings per rule and per shard, by status (parse_error: no usable answer; error, refused: the
    endpoint's answer). Transport failures fail their shard instead: see the failed-shards artifact."""
    rules = [r for r in manifest.get("rule_failures", []) if r["failed"]]
    shards = manifest.get("shard_failures", [])
    if not rules:
        return Artifact("orthoselect-rating-failures", "markdown", "No rating failed.", "Failed ratings: none")
    statuses = sorted({s for r in rules for s in r.get("by_status", {})} | {"parse_error"})
    lines = [
        "Final failures of ratings (their documents are scored by the other rules); transport failures are "
        "retried and fail their shard instead (see the failed-shards artifact).",
        "",
        "| rule | ratings | failed | share | " + " | ".join(statuses) + " |",
        "|---|---|---|---|" + "---|" * len(statuses),
        *(
            f"| {_cell(r['text'] or r['id'])[:80]} | {r['ratings']} | {r['failed']} | "
            f"{100 * r['failure_rate']:.1f} % | "
            + " | ".join(str(r.get("by_status", {}).get(s, 0)) for s in statuses)
            + " |"
            for r in rules
        ),
    ]
    if shards:
        lines += [
            "",
            "| step | shard | ratings | " + " | ".join(statuses) + " |",
            "|---|---|---|" + "---|" * len(statuses),
            *(
                f"| {row['step']} | {row['shard']} | {row['ratings']} | "
                + " | ".join(str(row.get(s, 0)) for s in statuses)
                + " |"
                for row in shards[:SHARD_ROWS]
            ),
        ]
    failed = sum(r["failed"] for r in rules)
    return Artifact("orthoselect-rating-failures", "markdown", "\n".join(lines), f"{failed} failed ratings")


def signed_link(storage: Storage, rel: str, seconds: int = REPORT_LINK_SECONDS) -> str | None:
    """A URL a browser opens for a file of a remote run directory without credentials (a presigned GET,
    valid `seconds`; on S3 signed with SigV4 and served as HTML), or None where the filesystem cannot sign
    (a local one, or a store without presigned URLs)."""
    if not is_remote(storage.root):
        return None
    fs, extra = storage.fs, {}
    if "s3" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        import fsspec  # a signer of its own: botocore may presign with SigV2, which S3 no longer takes

        options = dict(storage.options)
        options["config_kwargs"] = {**options.get("config_kwargs", {}), "signature_version": "s3v4"}
        fs, extra = fsspec.filesystem("s3", **options), {"ResponseContentType": "text/html; charset=utf-8"}
    try:
        return str(fs.sign(storage.path(rel), expiration=seconds, **extra))
    except NotImplementedError:
        return None
    except Exception as e:  # noqa: BLE001 - no link, the report's text is still shown
        log.warning("no link to %s (%s: %s)", storage.url(rel), type(e).__name__, e)
        return None


def report_artifacts(storage: Storage) -> list[Artifact]:
    """The report (report.md, then where report.html is), report.html reachable from the UI (a presigned
    link for a remote run directory; for a local one, on which host and where the file is: the UI cannot
    open a file of the worker), the usage per step and the failed ratings."""
    link = signed_link(storage, HTML_REPORT)
    if link is not None:
        until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=REPORT_LINK_SECONDS)
        where = (
            f"report.html: [{storage.url(HTML_REPORT)}]({link}) (a presigned link, valid until "
            f"{until:%Y-%m-%d %H:%M} UTC; `orthoselect report RUN_DIR --html` prints where it is)"
        )
        html_report = Artifact(
            "orthoselect-report-html", "link", link, f"report.html (link valid until {until:%Y-%m-%d %H:%M} UTC)"
        )
    else:
        host = socket.gethostname()
        kind = "a file on the host" if not is_remote(storage.root) else "an object at"
        where = (
            f"report.html is {kind} `{host}`: `{location(storage, HTML_REPORT)}` (the Prefect UI cannot open it; "
            f"the report's text is the `orthoselect-report` artifact; `orthoselect report RUN_DIR --html` on "
            "that host prints where it is)"
            if not is_remote(storage.root)
            else f"report.html is at `{storage.url(HTML_REPORT)}` (this storage gives no link a browser opens)"
        )
        html_report = Artifact("orthoselect-report-html", "markdown", where, "Where report.html is")
    manifest = storage.read_json("manifest.json")
    report = storage.read_bytes("report.md").decode().rstrip() + f"\n\n{where}\n"
    return [
        Artifact("orthoselect-report", "markdown", report, "Run report"),
        html_report,
        usage_table(manifest),
        failures_artifact(manifest),
    ]
