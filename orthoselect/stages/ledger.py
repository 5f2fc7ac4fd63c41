"""The failed-shard ledger and the run's status.

Every failure of a shard step is recorded under `ledger/<attempt>/` (one small JSON file per failure,
so concurrent writers never collide, on S3 too): shard, step, error class, message, run attempt and
task try. A shard counts as failed while its latest recorded failure is newer than any completion of
that step; a completion marker is the only proof of done."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from orthoselect.data.storage import Storage
from orthoselect.stages import RunContext, shard_steps
from orthoselect.stages.done import tally, unit_done

LEDGER_RETRIES = 8  # ~1 minute of backoff


def new_attempt() -> str:
    """A sortable id for one invocation of the pipeline on a run directory."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


def record_failure(ctx: RunContext, step: str, shard_id: str, error: BaseException, task_try: int = 1) -> dict:
    entry = {
        "shard": shard_id,
        "step": step,
        "error": type(error).__name__,
        "message": str(error)[:2000],
        "attempt": str(ctx.attempt),
        "try": task_try,
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "details": getattr(error, "details", None),  # e.g. ratings done and missing, for `status`
    }
    # a failure often comes from the storage itself being down: wait longer than a step would
    durable = Storage(ctx.storage.root, ctx.storage.options, retries=max(ctx.storage.retries, LEDGER_RETRIES))
    durable.write_json(f"ledger/{ctx.attempt}/{step}--{shard_id}--{task_try}.json", entry)
    return entry


def record_resolved(ctx: RunContext, step: str, shard_id: str) -> None:
    """A shard that had failed completed in this attempt (run, or found done: a marker can land even
    when the write that made it was reported failed): its failure is closed."""
    entry = {
        "shard": shard_id,
        "step": step,
        "resolved": True,
        "attempt": str(ctx.attempt),
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    }
    ctx.storage.write_json(f"ledger/{ctx.attempt}/{step}--{shard_id}--resolved.json", entry)


def _when(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp)


def _entries(ctx: RunContext) -> list[dict]:
    """Every ledger entry (failures and resolutions), oldest first."""
    entries = []
    for attempt in ctx.storage.list("ledger"):
        for name in ctx.storage.list(f"ledger/{attempt}"):
            entries.append(json.loads(ctx.storage.read_bytes(f"ledger/{attempt}/{name}")))
    return sorted(entries, key=lambda e: e["at"])


def failures(ctx: RunContext) -> list[dict]:
    """Every recorded failure, oldest first."""
    return [e for e in _entries(ctx) if not e.get("resolved")]


STOPPED = "the run was asked to stop"  # in the message of a unit that a stop request ended (llm/breaker.py)
INTERRUPTION_ERRORS = ("RunInterrupted", "RatingsIncomplete", "EndpointDown")


def is_interruption(entry: dict) -> bool:
    """Whether a recorded failure is a unit that the run's stop (SIGTERM, Ctrl-C) ended, not a failure of
    the unit: it did not start, or stopped sending requests when asked. A rerun resumes it."""
    if entry.get("error") not in INTERRUPTION_ERRORS:
        return False
    reason = (entry.get("details") or {}).get("reason", "") if isinstance(entry.get("details"), dict) else ""
    return entry["error"] == "RunInterrupted" or STOPPED in reason or STOPPED in entry.get("message", "")


def open_failures(ctx: RunContext) -> dict[str, dict[str, dict]]:
    """{step: {shard: latest failure}} for shards of today's manifest neither completed nor resolved
    since they last failed, nor done for today's inputs (orthoselect.stages.done: a shard repaired back to
    the content its marker was made from is done again, not failed); a shard removed from the dataset is
    no longer failed. A shard whose latest entry is an interruption (`is_interruption`) is not failed: it
    is pending (`open_interruptions`)."""
    return {
        step: kept
        for step, units in _open_entries(ctx).items()
        if (kept := {u: e for u, e in units.items() if not is_interruption(e)})
    }


def open_interruptions(ctx: RunContext) -> dict[str, dict[str, dict]]:
    """{step: {shard: the entry}} for shards that a stop of the run ended and no attempt finished since."""
    return {
        step: kept
        for step, units in _open_entries(ctx).items()
        if (kept := {u: e for u, e in units.items() if is_interruption(e)})
    }


def _open_entries(ctx: RunContext) -> dict[str, dict[str, dict]]:
    """{step: {shard: latest entry}}: failures and interruptions not closed since (see open_failures)."""
    from orthoselect.stages import STEPS

    ctx = ctx.strict_view()
    current = {s.id for s in ctx.shards()} | {"run"}
    latest: dict[tuple[str, str], dict] = {}
    for entry in _entries(ctx):
        if entry["shard"] in current:
            latest[(entry["step"], entry["shard"])] = entry
    open_: dict[str, dict[str, dict]] = {}
    for (step, shard), entry in latest.items():
        if entry.get("resolved"):
            continue
        marker = ctx.read_marker(step, shard)
        if marker is not None and _when(marker["finished_at"]) >= _when(entry["at"]):
            continue  # completed since
        if step in STEPS and unit_done(STEPS[step], ctx, None if shard == "run" else ctx.shard(shard)):
            continue
        open_.setdefault(step, {})[shard] = entry
    return open_


def status(ctx: RunContext) -> dict[str, dict]:
    """Per shard step: shards done for today's inputs (orthoselect.stages.done), failed (open in this
    ledger), pending, and stale (a marker of other inputs: pending too); under `stopped`, why the run last
    stopped on purpose (its budget, a stop request), or None; under `last_attempt`, how it went."""
    ctx = ctx.frozen_markers(strict=True)
    failed, stopped = open_failures(ctx), open_interruptions(ctx)
    report: dict[str, Any] = {}
    for step in shard_steps():
        t = tally(step, ctx, failed)
        listed = set(ctx.completed_units(step.name))
        pending = set(t.pending)
        report[step.name] = {
            "shards": len(t.units),
            "done": t.done,
            "failed": sorted(t.failed),
            "pending": t.pending,
            "stale": [u for u in t.units if u in listed and u not in set(t.done)],
            "errors": t.failed,
            # pending shards that the run's stop ended (a rerun resumes them): one line each
            "interrupted": {u: interruption_line(e) for u, e in stopped.get(step.name, {}).items() if u in pending},
        }
    report["stopped"] = stop_reason(ctx)
    report["last_attempt"] = last_attempt(ctx)
    return report


def interruption_line(entry: dict) -> str:
    """An interrupted shard in a line: what it had done (ratings obtained, cached) and the attempt."""
    d = entry.get("details") if isinstance(entry.get("details"), dict) else {}
    if entry["error"] == "RunInterrupted":  # its last try did not start; an earlier one may have rated some
        done = "stopped when the run was asked to stop; answers obtained before are cached"
    elif d and "ratings" in d:
        done = f"{d.get('ok', 0)} of {d['ratings']} ratings obtained (cached), the rest not asked"
    else:
        done = "stopped sending requests"
    return f"{done} (attempt {entry.get('attempt', '?')})"


def record_stop(ctx: RunContext, reason: str, message: str) -> None:
    """Mark the run as stopped on purpose (e.g. by its budget), for `status` to say so."""
    ctx.storage.write_json(
        "stopped.json",
        {
            "reason": reason,
            "message": message,
            "attempt": str(ctx.attempt),
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    )


def stop_reason(ctx: RunContext) -> dict | None:
    return ctx.storage.read_json("stopped.json", default=None)


def clear_stop(ctx: RunContext) -> None:
    ctx.storage.remove("stopped.json")


def record_attempt(ctx: RunContext, outcome: str) -> None:
    """How this attempt on the run went: "started" when it begins, then "completed", "failed",
    "stopped by budget" or "interrupted". An attempt still "started" was killed (or is running)."""
    path = f"attempts/{ctx.attempt}.json"
    entry = ctx.storage.read_json(path, default=None) or {
        "attempt": ctx.attempt,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    entry.update(outcome=outcome, at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    ctx.storage.write_json(path, entry)


def last_attempt(ctx: RunContext) -> dict | None:
    """The latest attempt's record, with `note` saying what an unfinished one means."""
    names = sorted(ctx.storage.list("attempts"))
    if not names:
        return None
    entry = ctx.storage.read_json(f"attempts/{names[-1]}")
    if entry.get("outcome") == "started":
        entry["note"] = "did not finish: killed (SIGKILL, machine lost), or still running"
    return entry


def attempt_summary(ctx: RunContext) -> list[str]:
    """This attempt's end in a few lines, for its log: how it ended, the failures still open and how to
    re-run only them, and the run's result when it is current for today's inputs."""
    from orthoselect.stages import STEPS

    view = ctx.frozen_markers(strict=True)
    record = ctx.storage.read_json(f"attempts/{ctx.attempt}.json", default=None) or {}
    lines = [f"attempt {ctx.attempt}: {record.get('outcome', 'not recorded')}"]
    failed = open_failures(view)
    if failed:
        shown = "; ".join(f"{step}: {', '.join(sorted(units))}" for step, units in failed.items())
        lines.append(
            f"failed, still open: {shown}; re-run only these with `orthoselect retry-failed {ctx.cfg.run_dir}` "
            "(or the deployment's Run form with only_failed: true)"
        )
    stopped = open_interruptions(view)
    if stopped:
        shown = "; ".join(f"{step}: {', '.join(sorted(units))}" for step, units in stopped.items())
        lines.append(
            f"interrupted, pending: {shown}; run the same command again to resume (answers obtained are cached)"
        )
    manifest = ctx.storage.read_json("manifest.json", default=None)
    if manifest is None:
        return lines
    if not unit_done(STEPS["manifest"], view, None):
        lines.append(f"the results in {ctx.cfg.run_dir} are not today's (inputs changed, or a step failed since)")
        return lines
    counts, spend = manifest["counts"], manifest.get("spend", {})
    lines.append(
        f"selected {counts['selected']:,} of {counts['valid']:,} documents with {len(manifest['chosen_rules'])} "
        f"rules; results of attempt {(view.read_marker('manifest') or {}).get('attempt', '?')} in "
        f"{ctx.cfg.run_dir} (report.md, report.html)"
    )
    if spend:
        lines.append(
            f"cost of the outputs ${spend.get('cost_usd', 0):.4f}; paid over all attempts "
            f"${spend.get('spent_by_attempts_usd', 0):.4f}"
        )
    return lines
