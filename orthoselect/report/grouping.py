"""The agreement check of grouped rating (`group_check.json`, the manifest's `grouping`) in the run report:
the figures beside their thresholds, how the pool was scored, and one row per chosen rule. Used by
`report.md` (`grouping_markdown`) and `report.html` (`grouping_section`)."""

from __future__ import annotations

from orthoselect.report.html_sections import _e, _table
from orthoselect.report.rules import num


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def grouping_summary(g: dict) -> str:
    """One line: rules per call, the figures against their thresholds, and how the pool was scored."""
    t = g["thresholds"]
    return (
        f"rules_per_call {g['rules_per_call']}: {g['docs_compared']} sample documents rated again grouped; "
        f"aggregate Spearman {num(g['aggregate_spearman'])} (needs {t['aggregate_spearman']:g}), "
        f"top {g['top_share']:.0%} overlap {_share(g['top_overlap'])} (needs {t['top_overlap']:.0%}): "
        f"{'passed' if g['passed'] else 'FAILED'}; pool scored {g['pool_mode']} "
        f"({g['requests']} requests for the check)"
    )


def _rows(g: dict) -> list[list[object]]:
    return [
        [r["id"], r["spearman"], r["mean_shift"], "yes" if r["agrees"] else "NO", r.get("text", "")] for r in g["rules"]
    ]


def grouping_markdown(g: dict | None) -> list[str]:
    if not g or not g.get("checked"):
        return []
    lines = ["", "## Grouped rating check", "", f"- {grouping_summary(g)}"]
    if g["disagreeing"]:
        lines.append(f"- rules that disagreed: {', '.join(g['disagreeing'])}")
    lines += ["", "| rule | Spearman | mean shift | agrees | text |", "|---|---|---|---|---|"]
    for rule_id, rho, shift, agrees, text in _rows(g):
        cell = str(text).replace("|", "\\|")
        lines.append(f"| {rule_id} | {num(rho)} | {num(shift)} | {agrees} | {cell} |")  # type: ignore[arg-type]
    return lines


def grouping_section(m: dict) -> list[str]:
    g = m.get("grouping")
    if not g or not g.get("checked"):
        return []
    return [
        "<h2>Grouped rating check</h2>",
        f"<p>{_e(grouping_summary(g))}</p>",
        *([f"<p>Rules that disagreed: {_e(', '.join(g['disagreeing']))}</p>"] if g["disagreeing"] else []),
        _table(
            ["rule", "Spearman", "mean shift", "agrees", "text"],
            [[_e(c) if isinstance(c, str) else c for c in row] for row in _rows(g)],
        ),
    ]
