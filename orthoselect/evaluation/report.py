"""What `orthoselect eval` writes: `eval.json`, a markdown table (`eval.md`) and two PNG plots
(`eval_mse_vs_random.png`: each chooser's MSE against the random-subset distribution;
`eval_mse_vs_r.png`: MSE against the number of rules)."""

from __future__ import annotations

import io

from orthoselect.data.storage import Storage
from orthoselect.report.artifacts import Artifact

FILES = ("eval.json", "eval.md", "eval_mse_vs_random.png", "eval_mse_vs_r.png")


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _share(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def chooser_rows(result: dict) -> list[dict]:
    """One row per chooser, then all rules and the random subsets' median: the comparison table."""
    rows = []
    for c in result["choosers"]:
        name = c["chooser"] + (" (default)" if c["default"] else "")
        if "error" in c:
            rows.append({"set": name, "error": c["error"]})
            continue
        rows.append(
            {
                "set": name,
                **{k: c.get(k) for k in ("mse", "spearman", "auc", "precision_top", "fidelity", "rho", "win_rate")},
            }
        )
    rows.append(
        {
            "set": f"all {result['rules']} rules",
            **{k: result["all_rules"].get(k) for k in ("mse", "spearman", "auc", "precision_top", "fidelity", "rho")},
            "win_rate": None,
        }
    )
    rnd = result.get("random") or {}
    if rnd:
        rows.append(
            {
                "set": f"random {result['k']}-subsets (median of {rnd['mse']['n']})",
                **{
                    k: (rnd.get(k) or {}).get("p50")
                    for k in ("mse", "spearman", "auc", "precision_top", "fidelity", "rho")
                },
                "win_rate": 0.5,
            }
        )
    return rows


def eval_markdown(result: dict, counts: dict, labels: str) -> str:
    top = f"precision top {result['top_fraction']:.0%}"
    lines = [
        "# OrthoSelect eval: rule choosers against ground-truth labels",
        "",
        f"- labels: `{labels}`; {counts['labelled']} of {counts['sample_docs']} sample documents labelled "
        f"({counts['labels_outside_sample']} labels outside the sample ignored)",
        f"- r = {result['k']} of {result['rules']} rules; seed {result['seed']}; MSE is between the standardised "
        "mean score of a set's rules and the standardised labels (lower is better); win rate is the share of "
        "random r-subsets with a worse MSE",
        "",
        f"| set | MSE | Spearman | AUC | {top} | fidelity | rho | win rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in chooser_rows(result):
        if "error" in row:
            lines.append(f"| {row['set']} | {row['error']} | | | | | | |")
            continue
        lines.append(
            f"| {row['set']} | {_f(row['mse'])} | {_f(row['spearman'])} | {_f(row['auc'])} | "
            f"{_f(row['precision_top'])} | {_f(row['fidelity'])} | {_f(row['rho'], 4)} | "
            f"{_share(row['win_rate'])} |"
        )
    lines += [
        "",
        "Across the random subsets, does a label-free diagnostic predict the MSE? "
        f"Pearson(rho, MSE) = {_f(result['pearson_rho_mse'])} (positive: more orthogonal sets rate better); "
        f"Pearson(fidelity, MSE) = {_f(result['pearson_fidelity_mse'])} (negative: more faithful sets rate better).",
        "",
        "MSE by number of rules (default chooser, in pick order; random median): "
        + " · ".join(f"r={p['r']} {_f(p['mse'])} ({_f(p['random_p50'])})" for p in result["mse_by_r"]),
    ]
    return "\n".join(lines) + "\n"


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def plots(result: dict) -> dict[str, bytes]:
    """The two PNG plots, by file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if result["random_mse"]:
        ax.hist(result["random_mse"], bins=40, color="#bbbbbb", label=f"random {result['k']}-subsets")
    colours = plt.get_cmap("tab10")
    for i, c in enumerate(x for x in result["choosers"] if "error" not in x):
        ax.axvline(
            c["mse"],
            color=colours(i),
            lw=3 if c["default"] else 1.5,
            label=c["chooser"] + (" (default)" if c["default"] else ""),
        )
    ax.axvline(result["all_rules"]["mse"], color="black", ls="--", label=f"all {result['rules']} rules")
    ax.set_xlabel("MSE to the labels (standardised; lower is better)")
    ax.set_ylabel("random subsets")
    ax.legend(fontsize=8)
    out["eval_mse_vs_random.png"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    curve = result["mse_by_r"]
    ax.plot([p["r"] for p in curve], [p["mse"] for p in curve], marker="o", label="default chooser, pick order")
    ax.plot(
        [p["r"] for p in curve],
        [p["random_p50"] for p in curve],
        marker=".",
        color="gray",
        label="random subsets (median)",
    )
    ax.axhline(result["all_rules"]["mse"], color="black", ls="--", label=f"all {result['rules']} rules")
    ax.axvline(result["k"], color="red", ls=":", label=f"r = {result['k']}")
    ax.set_xscale("log")
    ax.set_xlabel("number of rules r")
    ax.set_ylabel("MSE to the labels")
    ax.legend(fontsize=8)
    out["eval_mse_vs_r.png"] = _png(fig)
    plt.close(fig)
    return out


def write_eval(result: dict, counts: dict, labels: str, out: Storage) -> list[str]:
    """Write every eval file into `out`; returns their URLs."""
    out.write_json("eval.json", {**result, "counts": counts, "labels": labels})
    out.write_text("eval.md", eval_markdown(result, counts, labels))
    for name, data in plots(result).items():
        out.write_bytes(name, data)
    return [out.url(name) for name in FILES]


def eval_artifacts(outcome: dict) -> list[Artifact]:
    """The comparison as a table, and its full markdown with where the files were written."""
    result, counts, files = outcome["result"], outcome["counts"], outcome["files"]
    rows = [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in chooser_rows(result)]
    return [
        Artifact(
            "orthoselect-eval",
            "table",
            rows,
            f"Choosers against labels on {counts['labelled']} sample documents (r = {result['k']}); "
            "MSE lower is better",
        ),
        Artifact(
            "orthoselect-eval-report",
            "markdown",
            eval_markdown(result, counts, outcome.get("labels", "labels")) + "\nFiles: " + ", ".join(files),
            "Rule choosers against ground truth",
        ),
    ]
