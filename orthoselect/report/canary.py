"""The canary check of the rater (`canary.json`, the manifest's `canary`) in the run report: the win share
of originals over their degraded twins against chance, per family, what was blamed, and one row per chosen
rule. Used by `report.md` (`canary_markdown`) and `report.html` (`canary_section`)."""

from __future__ import annotations

from orthoselect.choice.canary import canary_summary
from orthoselect.report.html_sections import _e, _table


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _rows(c: dict) -> tuple[list[str], list[list[str]]]:
    families = [f["family"] for f in c["families"]]
    head = ["rule", "all twins", *families, "verdict", "text"]
    rows = [
        [
            r["id"],
            _share(r["share"]),
            *(_share(r["families"][f]["share"]) for f in families),
            r["verdict"],
            r.get("text", ""),
        ]
        for r in c["rules"]
    ]
    return head, rows


def _lines(c: dict) -> list[str]:
    out = [canary_summary(c)]
    out += c.get("problems", [])
    if c.get("untouched_rules"):
        out.append(f"rules no twin moved (not blamed): {', '.join(c['untouched_rules'])}")
    out.append(f"mode {c['mode']}; {c['requests']} requests, {c['cache_hits']} from the cache")
    return out


def canary_markdown(c: dict | None) -> list[str]:
    if not c or not c.get("checked"):
        return []
    head, rows = _rows(c)
    lines = ["", "## Canary check of the rater", "", *(f"- {line}" for line in _lines(c)), ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def canary_section(m: dict) -> list[str]:
    c = m.get("canary")
    if not c or not c.get("checked"):
        return []
    head, rows = _rows(c)
    return [
        "<h2>Canary check of the rater</h2>",
        *(f"<p>{_e(line)}</p>" for line in _lines(c)),
        _table(head, [[_e(cell) for cell in row] for row in rows]),
    ]
