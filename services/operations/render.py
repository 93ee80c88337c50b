"""Plain-text views for the terminal: the audit timeline, dead letters, replay diffs. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import orjson

from libs.events.dlq import DeadLetter
from services.operations.audit import Audit
from services.operations.replay import DryRunReport, ReplayRun, RunReport
from services.operations.timeline import Entry, FieldChange

MAX_VALUE = 60


def when(moment: datetime) -> str:
    """``2025-03-01 12:00:00.123Z`` (UTC, milliseconds)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def value(text: str | None) -> str:
    """A field value for a terminal line: quoted, shortened, ``(none)`` when absent."""
    if text is None:
        return "(none)"
    shown = text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"
    return '"' + shown.replace("\n", "\\n") + '"'


def change_line(change: FieldChange) -> str:
    return f"{change.field}: {value(change.old)} → {value(change.new)}"


def short(identifier: str | None) -> str:
    return identifier[:8] if identifier else "-"


def entry_lines(entry: Entry) -> list[str]:
    who = entry.actor + (f"/{entry.source}" if entry.source else "")
    lines = [
        f"#{entry.position:<8} {when(entry.recorded_at)}  {entry.step.value:<12} {entry.type:<28} {who}",
        f"          {entry.summary}" + (f"   [{entry.stream}]" if entry.related else ""),
    ]
    lines.extend(f"          {change_line(c)}" for c in entry.changes)
    if entry.chain:
        chain = " ← ".join(f"#{link.position} {link.type}" if link.position else link.event_id[:8] for link in entry.chain)
        lines.append(f"          caused by: {chain}")
    lines.append(f"          event {short(entry.event_id)}  correlation {short(entry.correlation_id)}")
    return lines


def audit_text(audit: Audit) -> str:
    lines = [f"Audit of {audit.record} (connection {audit.connection})"]
    if audit.linked:
        lines.append("Linked: " + ", ".join(f"{link.record} (via {link.via})" for link in audit.linked))
    else:
        lines.append("Linked: no record on the other side yet")
    lines.append("Streams: " + ", ".join(audit.streams))
    if audit.truncated:
        lines.append("(older events left out; raise --limit to see them)")
    lines.append("")
    if not audit.entries:
        lines.append("No events recorded for this record. Check the id and --connection.")
    for entry in audit.entries:
        lines.extend(entry_lines(entry))
    return "\n".join(lines)


def correlation_text(correlation_id: str, entries: Sequence[Entry]) -> str:
    lines = [f"Correlation {correlation_id}: {len(entries)} events", ""]
    if not entries:
        lines.append("No event carries this correlation id.")
    for entry in entries:
        lines.extend(entry_lines(entry))
    return "\n".join(lines)


def dead_letters_table(entries: Sequence[DeadLetter]) -> str:
    if not entries:
        return "No dead letters match."
    header = f"{'ID':>6}  {'STATUS':<9} {'SOURCE':<18} {'CONNECTION':<12} {'RECORD':<28} {'TRIES':>5}  {'PARKED':<24} REASON"
    rows = [header]
    for e in entries:
        reason = e.reason if len(e.reason) <= 70 else e.reason[:69] + "…"
        rows.append(
            f"{e.id:>6}  {e.status:<9} {e.source:<18} {e.connection:<12} {e.record:<28} {e.attempts:>5}  "
            f"{when(e.created_at):<24} {reason}"
        )
    return "\n".join(rows)


def dead_letter_text(entry: DeadLetter) -> str:
    lines = [
        f"Dead letter {entry.id} ({entry.status})",
        f"  source:     {entry.source}",
        f"  connection: {entry.connection}",
        f"  record:     {entry.record}   (kleer-sync audit {entry.record} --connection {entry.connection})",
        f"  parked:     {when(entry.created_at)}   updated {when(entry.updated_at)}   attempts {entry.attempts}",
        f"  cause:      event {entry.event_id or '-'} at position {entry.event_position or '-'}",
        f"  reason:     {entry.reason}",
        "  detail:",
        _indent(orjson.dumps(entry.detail, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()),
        "  payload:",
        _indent(orjson.dumps(entry.payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()),
    ]
    return "\n".join(lines)


def _indent(text: str, by: str = "    ") -> str:
    return "\n".join(by + line for line in text.splitlines())


def dead_letter_json(entry: DeadLetter) -> dict[str, object]:
    return {
        "id": entry.id,
        "source": entry.source,
        "connection": entry.connection,
        "record": entry.record,
        "status": entry.status,
        "attempts": entry.attempts,
        "reason": entry.reason,
        "detail": entry.detail,
        "payload": entry.payload,
        "event_id": str(entry.event_id) if entry.event_id else None,
        "event_position": entry.event_position,
        "created_at": entry.created_at.isoformat(),
        "updated_at": entry.updated_at.isoformat(),
    }


# --- replay -------------------------------------------------------------------------------------------------


def dry_run_text(report: DryRunReport, *, show: int = 50) -> str:
    counts = report.counts()
    lines = [
        f"Replay dry run ({report.selector.describe()}), nothing written.",
        f"{report.events_scanned} events selected up to position {report.up_to} → {report.records} records.",
        "",
    ]
    shown = 0
    for diff in report.diffs:
        if diff.action == "same":
            continue
        if shown >= show:
            lines.append(f"… more differences not shown (--show {show}; --json lists all)")
            break
        shown += 1
        target = f"{diff.hubspot_object} {diff.hubspot_id}" if diff.hubspot_id else diff.hubspot_object
        verb = {"create": "would create in", "update": "would update", "remove": "would remove from HubSpot:",
                "skip": "cannot replay:"}.get(diff.action, diff.action)
        lines.append(f"{diff.record}: {verb} {target}" + (f" ({diff.note})" if diff.note else ""))
        lines.extend(f"    {change_line(c)}" for c in diff.changes)
    if shown:
        lines.append("")
    lines.append(
        "Summary: "
        + ", ".join(f"{counts.get(k, 0)} {label}" for k, label in (
            ("create", "to create"), ("update", "to update"), ("same", "already as replay would write them"),
            ("remove", "to remove"), ("skip", "that cannot be replayed"),
        ))
    )
    return "\n".join(lines)


def run_text(report: RunReport) -> str:
    inbound = report.selector.to_json().get("direction") == "inbound"
    lines = [
        f"Replay {report.run_id} {report.status}" + (" (resumed)" if report.resumed else "")
        + f": {report.selector.describe()}",
        f"{report.events_scanned} events selected up to position {report.up_to} → {report.records} records: "
        f"{report.pushed} {'written to Kleer' if inbound else 'pushed'}, {report.unchanged} unchanged, "
        f"{report.failed} failed"
        + (f" ({report.skipped_already_pushed} had been pushed before the interruption)"
           if report.skipped_already_pushed else ""),
    ]
    if report.failures:
        source = "inbound-handlers" if inbound else "outbound-pusher"
        lines.append(f"Failures (parked in the dead-letter queue; `kleer-sync dlq list --source {source}`):")
        lines.extend(f"  {f}" for f in report.failures[:20])
    lines.append(f"Audit: kleer-sync audit <record>; events of this run share correlation {report.run_id}.")
    return "\n".join(lines)


def run_json(run: ReplayRun) -> dict[str, object]:
    return {
        "id": run.id,
        "connection": run.connection,
        "selector": run.selector,
        "status": run.status,
        "total": run.total,
        "pushed": run.pushed,
        "unchanged": run.unchanged,
        "failed": run.failed,
        "cursor_position": run.cursor_position,
        "up_to_position": run.up_to_position,
        "actor": run.actor,
        "last_error": run.last_error,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def runs_table(runs: Sequence[ReplayRun]) -> str:
    if not runs:
        return "No replay runs yet."
    rows = [f"{'RUN':<12}  {'STATUS':<9} {'DONE':>11}  {'FAILED':>6}  {'STARTED':<24} {'ACTOR':<16} SELECTION"]
    for run in runs:
        rows.append(
            f"{run.id:<12}  {run.status:<9} {run.done:>5}/{run.total:<5}  {run.failed:>6}  {when(run.started_at):<24} "
            f"{run.actor:<16} {orjson.dumps(run.selector).decode()[:80]}"
        )
    return "\n".join(rows)
