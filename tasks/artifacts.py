"""Prefect artifacts: what a person watching the UI needs after each whole-run step."""
from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from orthoselect.rule_report import rule_choice_markdown
from orthoselect.stages import RunContext


def _key(ctx: RunContext, what: str) -> str:
    return what  # artifact keys version across runs: the UI shows their history


def _rounded(row: dict, keys: tuple[str, ...]) -> dict:
    return {k: round(row[k], 4) if isinstance(row.get(k), float) else row.get(k) for k in keys}


def publish_rule_choice(ctx: RunContext, sel: dict) -> None:
    """The chosen rules, every rule's statistics, the fidelity curve and the evidence summary."""
    fid, rnd = sel.get("fidelity"), (sel.get("random_fidelity") or {}).get("p50")
    chosen = sorted((r for r in sel["rules"] if r.get("pick")), key=lambda r: r["pick"])
    create_table_artifact(
        [{"pick": r["pick"], **_rounded(r, ("id", "text", "quality", "cluster", "sd", "failure_rate"))} for r in chosen],
        key=_key(ctx, "orthoselect-chosen-rules"),
        description=f"fidelity {fid if fid is None else round(fid, 3)} (random subsets' median "
                    f"{rnd if rnd is None else round(rnd, 3)}); {len(sel['warnings'])} warnings")
    create_table_artifact(
        [_rounded(r, ("id", "text", "quality", "agreement", "cluster", "sd", "missing", "failure_rate", "pick"))
         for r in sel["rules"]],
        key=_key(ctx, "orthoselect-rule-statistics"),
        description="Every candidate rule on the rated sample: quality q, agreement with the other rules' "
                    "consensus, redundancy cluster, spread, missing and failed shares")
    create_table_artifact(sel.get("fidelity_curve", []), key=_key(ctx, "orthoselect-fidelity-curve"),
                          description="Fidelity of the first r rules in pick order, beside random r-subsets' median")
    create_markdown_artifact("\n".join(rule_choice_markdown(sel, sel.get("sample_docs"))),
                             key=_key(ctx, "orthoselect-rule-choice"), description="Why these rules")
    create_markdown_artifact("```\n" + ctx.storage.read_bytes("correlation.csv").decode() + "```",
                             key=_key(ctx, "orthoselect-rule-correlation"),
                             description="Pearson correlation of the rules' sample scores")


def publish(step_name: str, ctx: RunContext, stats: dict) -> None:
    if step_name == "dpp":
        publish_rule_choice(ctx, ctx.storage.read_json("rule_selection.json"))
    elif step_name == "manifest":
        create_markdown_artifact(ctx.storage.read_bytes("report.md").decode(), key=_key(ctx, "orthoselect-report"),
                                 description="Run report")
    elif step_name == "sample":
        create_markdown_artifact(
            f"Pool {stats['pool']} documents; sample {stats['sampled']}; duplicate ids {stats['duplicates']}",
            key=_key(ctx, "orthoselect-sample"), description="Sample drawn for rule selection")


def publish_eval(outcome: dict) -> None:
    """The eval comparison as a table, and its full markdown (with where the plots were written)."""
    from orthoselect.eval_report import chooser_rows, eval_markdown

    result, counts, files = outcome["result"], outcome["counts"], outcome["files"]
    create_table_artifact([{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
                           for row in chooser_rows(result)], key="orthoselect-eval",
                          description=f"Choosers against labels on {counts['labelled']} sample documents (r = "
                                      f"{result['k']}); MSE lower is better")
    create_markdown_artifact(eval_markdown(result, counts, "labels") + "\nFiles: " + ", ".join(files),
                             key="orthoselect-eval-report", description="Rule choosers against ground truth")
