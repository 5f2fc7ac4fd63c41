"""Prefect artifacts: what a person watching the UI needs after each whole-run step."""
from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from orthoselect.stages import RunContext


def _key(ctx: RunContext, what: str) -> str:
    return what  # artifact keys version across runs: the UI shows their history


def publish(step_name: str, ctx: RunContext, stats: dict) -> None:
    if step_name == "dpp":
        sel = ctx.storage.read_json("rule_selection.json")
        rows = [{"pick": i + 1, "rule_id": r["id"], "rule": r["text"]} for i, r in enumerate(sel["chosen_rules"])]
        create_table_artifact(rows, key=_key(ctx, "orthoselect-chosen-rules"),
                              description=f"rho chosen {sel['rho_chosen']:.4f} vs all {sel['rho_all']:.4f}; "
                                          f"percentile among random subsets {sel['percentile']:.1f} %")
        create_markdown_artifact("```\n" + ctx.storage.read_bytes("correlation.csv").decode() + "```",
                                 key=_key(ctx, "orthoselect-rule-correlation"),
                                 description="Pearson correlation of the rules' sample scores")
    elif step_name == "manifest":
        create_markdown_artifact(ctx.storage.read_bytes("report.md").decode(), key=_key(ctx, "orthoselect-report"),
                                 description="Run report")
    elif step_name == "sample":
        create_markdown_artifact(
            f"Pool {stats['pool']} documents; sample {stats['sampled']}; duplicate ids {stats['duplicates']}",
            key=_key(ctx, "orthoselect-sample"), description="Sample drawn for rule selection")
