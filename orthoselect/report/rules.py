"""Markdown about a rule choice (`rule_selection.json`): the chosen rules with their quality, the
label-free evidence (fidelity and rho beside random subsets, the fidelity curve), warnings, the weakest
rules and the redundancy clusters. Used by the run report."""

from __future__ import annotations

from orthoselect.choice.dpp import LOW_QUALITY


def pct(value: float | None) -> str:
    """A percentage (already in percent) for reports; n/a when unknown."""
    return "n/a" if value is None else f"{value:.1f} %"


def num(value: float | None, digits: int = 3) -> str:
    """A number for reports; n/a when unknown."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def shared_clusters(rules: list[dict]) -> list[list[str]]:
    """The rule ids of each redundancy cluster holding more than one rule."""
    clusters: dict[int, list[str]] = {}
    for r in rules:
        if r["cluster"] is not None:
            clusters.setdefault(r["cluster"], []).append(r["id"])
    return [ids for ids in clusters.values() if len(ids) > 1]


def rule_table(rows: list[dict], with_pick: bool) -> list[str]:
    head = ("| pick " if with_pick else "") + "| rule | quality q | agreement | cluster | sd | failed |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        failed = row.get("failure_rate")
        lines.append(
            ("| " + str(row["pick"]) + " " if with_pick else "")
            + f"| `{row['id']}` {_cell(row.get('text', ''))} | {num(row['quality'])} | "
            f"{num(row['agreement'], 2)} | {row['cluster'] if row['cluster'] is not None else '-'} | "
            f"{num(row['sd'], 3)} | {'n/a' if failed is None else f'{100 * failed:.1f} %'} |"
        )
    return lines


def curve_line(curve: list[dict], marks: int = 8) -> str:
    """`r=1 0.81 (0.45) · r=2 ...`: a few points of the fidelity curve, random median in brackets."""
    if not curve:
        return "n/a"
    step = max(1, len(curve) // marks)
    points = curve[::step] + ([curve[-1]] if (len(curve) - 1) % step else [])
    return " · ".join(f"r={p['r']} {num(p['fidelity'], 2)} ({num(p['random_p50'], 2)})" for p in points)


def _reference(sel: dict, total: int) -> str:
    n = sel.get("fidelity_reference", total)
    return f"all {total} rules" if n == total else f"the {n} of {total} rules with q >= {LOW_QUALITY:g}"


def rule_choice_markdown(sel: dict, sample_docs: int | None = None) -> list[str]:
    """Report lines for one rule choice."""
    rules = sel.get("rules", [])
    chosen = sorted((r for r in rules if r.get("pick")), key=lambda r: r["pick"])
    k, total = len(sel["chosen_ids"]), len(rules)
    rnd_f, rnd_r = sel.get("random_fidelity") or {}, sel.get("random_rhos") or {}
    docs = f"the {sample_docs:,} rated sample documents" if sample_docs else "the rated sample"
    lines = [f"## {k} rules chosen by the DPP ({sel['kernel']} kernel, {sel['method']})", ""]
    lines += rule_table(chosen, with_pick=True)
    lines += [
        "",
        "q is the share of a rule's variance explained by the consensus of the other rules (its own "
        "redundancy cluster left out); near 0: noise, near-constant, off-topic or contrarian.",
        "",
        f"## Is the choice better than chance? (label-free, on {docs})",
        "",
        f"- fidelity, the Spearman correlation of the chosen rules' mean score with the mean of "
        f"{_reference(sel, total)}: "
        f"**{num(sel.get('fidelity'))}**; random {k}-rule subsets: median {num(rnd_f.get('p50'))} "
        f"(p5 {num(rnd_f.get('p5'))}, p95 {num(rnd_f.get('p95'))}); random subsets at least as faithful: "
        f"**{pct(sel.get('fidelity_percentile'))}**",
        f"- fidelity by number of rules, in pick order (random median): {curve_line(sel.get('fidelity_curve', []))}",
        f"- orthogonality rho = ||C - I||_F / r: chosen {num(sel['rho_chosen'], 4)}, all rules "
        f"{num(sel['rho_all'], 4)}, random median {num(rnd_r.get('p50'), 4)}; random subsets at least as "
        f"orthogonal: {pct(sel.get('percentile'))} (a diagnostic only: a noise rule is perfectly orthogonal)",
    ]
    if sel.get("warnings"):
        lines += ["", "### Warnings", ""] + [f"- {w}" for w in sel["warnings"]]
    weakest = sorted((r for r in rules if not r.get("pick") and r["quality"] is not None), key=lambda r: r["quality"])[
        :5
    ]
    if weakest:
        lines += ["", "### Lowest-quality rules (not chosen)", ""] + rule_table(weakest, with_pick=False)
    shared = shared_clusters(rules)
    if shared:
        lines += ["", f"### Redundancy clusters (correlation above {sel.get('duplicate_correlation', 0.8):g})", ""]
        lines += [f"- {len(ids)} rules: " + ", ".join(f"`{i}`" for i in ids) for ids in shared]
    if sel.get("dropped_constant"):
        lines += ["", "Constant on the sample, never chosen: " + ", ".join(f"`{i}`" for i in sel["dropped_constant"])]
    return lines
