"""report.html and its plots: a small run in process writes it beside report.md, both opening with the headline
result; headless Chromium renders it (the chosen rules in the DOM, every plot an embedded PNG that the page
shows); the plots on their own; and `orthoselect report [--html]` on finished, old and unfinished runs."""

from __future__ import annotations

import base64
import html
import io
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from orthoselect.config import Config
from orthoselect.report import plots
from orthoselect.report.html import read_score_counts, render_html
from orthoselect.stages import STEPS, RunContext, run_local
from orthoselect.stages.headline import excerpt
from support.configs import small_config
from support.corpus import run_texts

PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = {"fidelity curve", "correlation heatmap", "rule quality", "score histogram"}


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes every pixel: a truncated or corrupt PNG raises
        return image.size


# --- the run ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(corpus_dir, tmp_path_factory):
    ctx = RunContext(Config.model_validate(small_config(corpus_dir, tmp_path_factory.mktemp("run"))))
    return ctx, run_local(ctx)


def test_every_run_writes_report_html_beside_report_md(finished):
    ctx, m = finished
    assert ctx.storage.exists("report.md") and "report.html" in STEPS["manifest"].writes
    page = ctx.storage.read_bytes("report.html").decode()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert "http://" not in page and "https://" not in page  # self-contained: nothing to fetch
    for rule in m["chosen_rules"]:
        assert html.escape(rule["text"]) in page
    shown = {a.key: a for a in STEPS["manifest"].artifacts(ctx, {})}
    assert f"`{ctx.storage.path('report.html')}`" in shown["orthoselect-report"].data


def test_the_report_opens_with_the_headline(finished):
    """Documents kept of how many, the score shift (means, medians, the kept share above the pool's
    median) and the top kept and lowest-scored dropped documents with their text, from the run's files."""
    ctx, m = finished
    h = m["headline"]
    selection = ctx.storage.read_parquet("selection.parquet").sort_values("rank")
    pool = pd.concat([ctx.storage.read_parquet(f"scores/{s.id}.parquet").assign(shard=s.id) for s in ctx.shards()])
    rated = pool[pool.score.notna()]
    median = float(np.median(rated.score))
    assert (h["kept"], h["of"], h["rated"]) == (100, 1200, len(rated))
    assert h["score_mean_pool"] == pytest.approx(rated.score.mean())
    assert h["score_mean_selected"] == pytest.approx(selection.score.mean())
    assert h["score_median_pool"] == pytest.approx(median, abs=1e-4)
    assert h["selected_above_pool_median"] == pytest.approx((selection.score > median).mean())
    assert [e["doc_id"] for e in h["kept_examples"]] == list(selection.doc_id[:3])
    dropped = rated[~rated.doc_id.isin(selection.doc_id)].nsmallest(3, "score")
    assert [e["doc_id"] for e in h["dropped_examples"]] == list(dropped.doc_id)
    texts = run_texts(ctx, ctx.shards())
    for e in h["kept_examples"] + h["dropped_examples"]:
        assert e["text"] == excerpt(texts[e["doc_id"]]) and len(e["text"]) <= 160

    report = ctx.storage.read_bytes("report.md").decode()
    head = report[: report.index("## Run")]
    assert head.startswith("# OrthoSelect run report\n\n## Result\n\n**Kept 100 of 1,200 documents** (8.3 %")
    assert all(f"`{e['doc_id']}`" in head for e in h["kept_examples"] + h["dropped_examples"])
    page = ctx.storage.read_bytes("report.html").decode()
    assert page.index("<b>Kept 100 of 1,200 documents</b>") < page.index("rules chosen by the DPP")
    assert html.escape(h["kept_examples"][0]["text"]) in page


def test_score_counts_are_the_histogram_of_every_score(finished):
    ctx, m = finished
    counts = read_score_counts(ctx.storage)
    pool = np.concatenate([ctx.storage.read_parquet(f"scores/{n}").score for n in ctx.storage.list("scores")])
    assert counts.pool.sum() == m["counts"]["rated"] and counts.unrated == m["counts"]["unrated"]
    assert (counts.pool == np.histogram(pool[np.isfinite(pool)], bins=plots.SCORE_EDGES)[0]).all()
    assert counts.selected.sum() == m["counts"]["selected"]


def test_rule_text_is_escaped(finished):
    ctx, m = finished
    sel = ctx.storage.read_json("rule_selection.json")
    sel["rules"][0]["text"] = "Evil: <script>alert(1)</script> & co"
    page = render_html(m, sel, "", None)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    assert 'data-plot="correlation heatmap"' not in page and 'data-plot="score histogram"' not in page


# --- headless Chromium -----------------------------------------------------------------------------
def _install_chromium() -> str:
    """apt-get install chromium (as root, non-interactive); '' when it worked, else why not."""
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    if os.geteuid() != 0:
        return "not root, cannot apt-get install chromium"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends", "chromium"]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:  # stale package lists: refresh once
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=300)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    return "" if done.returncode == 0 else f"apt-get install chromium failed: {done.stderr.strip()[-300:]}"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing; the test is skipped where it cannot be."""
    if shutil.which("chromium") is None:
        why = _install_chromium()
        if shutil.which("chromium") is None:
            pytest.skip(f"chromium is not installed and could not be: {why or 'not on PATH after apt-get'}")
    return str(shutil.which("chromium"))


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))


def _headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
    command += [f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.integration  # Chromium listens on a Unix socket of its own (its process singleton)
def test_chromium_shows_the_chosen_rules_and_every_plot(finished, chromium, tmp_path):
    ctx, m = finished
    url = Path(ctx.storage.path("report.html")).as_uri()
    dom = _headless(chromium, tmp_path / "profile", "--dump-dom", url)
    assert dom.returncode == 0 and "</html>" in dom.stdout, dom.stderr[-2000:]
    for rule in m["chosen_rules"]:
        assert html.escape(rule["text"], quote=False) in dom.stdout
    parser = _Images()
    parser.feed(dom.stdout)
    assert {i["data-plot"] for i in parser.images} == PLOTS
    for image in parser.images:
        src = image["src"] or ""
        assert src.startswith("data:image/png;base64,"), image["data-plot"]
        width, height = _png_size(base64.b64decode(src.split(",", 1)[1], validate=True))
        assert width > 300 and height > 200, image["data-plot"]

    shot = tmp_path / "page.png"
    done = _headless(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,7000", url)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.std() > 20, "the screenshot is blank"
    # the plots' colours, which the page's own CSS never uses: the chosen rules' red and the others' grey
    for colour, least in ((plots.CHOSEN, 2000), (plots.OTHER, 5000)):
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        near = (np.abs(pixels - rgb).max(axis=2) <= 12).sum()
        assert near >= least, f"{colour}: {near} pixels, the plots are not shown"


# --- the plots on their own ------------------------------------------------------------------------
def _selection(n: int, chosen: list[int], seed: int = 0) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = [f"r{i:03d}" for i in range(n)]
    picks = {i: p + 1 for p, i in enumerate(chosen)}
    rules = [
        {"id": ids[i], "text": f"Rule {i}: a rule", "quality": float(rng.uniform()), "pick": picks.get(i)}
        for i in range(n)
    ]
    curve = [{"r": r, "fidelity": 1 - 1 / (r + 1), "random_p50": 1 - 2 / (r + 2)} for r in range(1, n + 1)]
    sel = {"rules": rules, "chosen_ids": [ids[i] for i in chosen], "fidelity": 0.9, "fidelity_curve": curve}
    return sel, rng.normal(size=(200, n))


def _csv(sel: dict, corr: np.ndarray) -> str:
    ids = [r["id"] for r in sel["rules"]]
    lines = ["," + ",".join(ids)] + [ids[i] + "," + ",".join(f"{v:.4f}" for v in row) for i, row in enumerate(corr)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("n", [50, 200])
def test_plots_are_png(n):
    sel, scores = _selection(n, chosen=list(range(0, n, n // 8)))
    corr = np.corrcoef(scores.T)
    assert _png_size(plots.correlation_heatmap_png(sel, _csv(sel, corr)))[0] > 600
    if n == 50:
        assert _png_size(plots.rule_quality_png(sel))[0] > 600
        assert _png_size(plots.fidelity_curve_png(sel))[0] > 600
        pool = np.r_[np.random.default_rng(1).uniform(size=1000), np.nan]
        raw = plots.score_histograms_png(pool, np.sort(pool[:-1])[-100:])
        counts = plots.score_histograms_png(
            plots.score_counts(pool), plots.score_counts(np.sort(pool[:-1])[-100:]), plots.SCORE_EDGES
        )
        assert _png_size(raw) == _png_size(counts)


def test_score_counts_clip_and_skip_missing():
    counts = plots.score_counts([-0.5, 0.0, 0.5, 1.0, 1.5, np.nan])
    assert counts.sum() == 5 and counts[0] == 2 and counts[-1] == 2


def test_heatmap_order_puts_a_planted_cluster_together():
    n, planted = 40, [3, 11, 19, 27, 35]
    rng = np.random.default_rng(0)
    base = rng.normal(size=(500, n))
    base[:, planted] = rng.normal(size=(500, 1)) + 0.3 * base[:, planted]
    order = plots.cluster_order(np.corrcoef(base.T))
    assert sorted(order) == list(range(n))
    where = sorted(order.index(i) for i in planted)
    assert where[-1] - where[0] == len(planted) - 1, f"planted rules at {where}"


# --- the command -----------------------------------------------------------------------------------
def test_report_command(finished, tmp_path):
    from flows.cli import app

    ctx, _ = finished
    runner = CliRunner()
    done = runner.invoke(app, ["report", ctx.cfg.run_dir])
    assert done.exit_code == 0 and "OrthoSelect run report" in done.output
    html_file = Path(ctx.storage.path("report.html"))
    page = html_file.read_bytes()
    html_file.unlink()  # a run finished before report.html existed: written from its manifest
    done = runner.invoke(app, ["report", ctx.cfg.run_dir, "--html"])
    assert done.exit_code == 0 and done.output.strip() == str(html_file) and html_file.exists()
    assert len(html_file.read_bytes()) > 0.9 * len(page)

    unfinished = tmp_path / "unfinished"
    (unfinished / "_markers").mkdir(parents=True)
    for where, says in ((unfinished, "has not finished"), (tmp_path / "nothing", "no such run directory")):
        for args in ([], ["--html"]):
            bad = runner.invoke(app, ["report", str(where), *args])
            assert bad.exit_code == 1 and isinstance(bad.exception, SystemExit), bad.output
            assert says in bad.output and len(bad.output.strip().splitlines()) == 1 and "Traceback" not in bad.output
