"""The admin replay pages: choose a selection, see the dry-run diff, then run it and watch its progress.

The run button only appears on the preview page, under the diff of the same
selection. A started run goes on in this process in the background and is
recorded in ``replay_runs``; its page shows the progress (and refreshes itself
while it runs, no JavaScript). A run cut short (the process stopped) stays
resumable: start the same selection again, here or with ``kleer-sync replay``.

The HubSpot reader and the pushers come from ``replay_tools(settings)``,
opened on first use, or from ``deps.extras["replay_tools"]`` (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from libs.mapping.objects import KLEER_OBJECT_TYPES
from services.inbound.admin.auth import USER
from services.inbound.admin.html import Markup, h, join, options, url
from services.inbound.admin.views import AdminPages, moment
from services.operations.replay import (
    DryRunReport,
    RecordDiff,
    ReplayError,
    ReplaySelector,
    ReplayTools,
    dry_run,
    get_run,
    parse_moment,
    recent_runs,
    replay_tools,
    run_replay,
)
from services.outbound.snapshots import changed_type, push_requested_type, removed_type

SHOWN_DIFFS = 200
PREVIEW_RECORDS = 1_000  # records the admin preview compares with HubSpot (the CLI compares all)
_FIELDS = ("connection", "record", "event_type", "since", "until", "from_position", "to_position")
EVENT_TYPES = [t for k in KLEER_OBJECT_TYPES for t in (changed_type(k), removed_type(k), push_requested_type(k))]


class ReplayPages:
    def __init__(self, pages: AdminPages) -> None:
        self.pages = pages
        self.deps = pages.deps
        self._tools: ReplayTools | None = self.deps.extras.get("replay_tools")
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def tools(self) -> ReplayTools:
        async with self._lock:
            if self._tools is None:
                self._tools = await self._stack.enter_async_context(replay_tools(self.deps.settings))
        return self._tools

    async def close(self, _: web.Application | None = None) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self._stack.aclose()

    # --- the form ------------------------------------------------------------------------------------------

    def selection_form(self, request: web.Request, values: Mapping[str, Any], error: str = "") -> Markup:
        kinds = set(values.get("kinds") or ())
        checkboxes = join(
            h(
                '<label><input type="checkbox" name="kind" value="{0}"{1}> {0}</label>',
                kind,
                Markup(" checked") if kind in kinds else Markup(""),
            )
            for kind in KLEER_OBJECT_TYPES
        )
        return h(
            "{error}<form class=\"filters\" method=\"post\" action=\"/admin/replay/preview\">{csrf}"
            '<label>Connection <input name="connection" value="{connection}" size="12"></label>'
            "<fieldset><legend>Object types (none: all)</legend>{checkboxes}</fieldset>"
            '<label>Record <input name="record" value="{record}" placeholder="kleer:client:123"></label>'
            '<label>Event type <select name="event_type">{types}</select></label>'
            '<label>Since (UTC) <input name="since" value="{since}" placeholder="2025-03-01T12:00 or 2h"></label>'
            '<label>Until (UTC) <input name="until" value="{until}" placeholder="now"></label>'
            '<label>From position <input name="from_position" value="{from_position}" size="8"></label>'
            '<label>To position <input name="to_position" value="{to_position}" size="8"></label>'
            "<button>Preview (dry run)</button></form>",
            error=h('<p class="flash error">{}</p>', error) if error else "",
            csrf=self.pages.csrf_input(request),
            connection=values.get("connection") or self.pages.connection,
            checkboxes=checkboxes,
            record=values.get("record") or "",
            types=options(EVENT_TYPES, values.get("event_type") or None, blank="any"),
            since=values.get("since") or "",
            until=values.get("until") or "",
            from_position=values.get("from_position") or "",
            to_position=values.get("to_position") or "",
        )

    async def index(self, request: web.Request) -> web.Response:
        runs = await recent_runs(self.deps.pool, 20)
        rows = [
            h(
                '<tr><td><a href="/admin/replay/runs/{id}">{id}</a></td><td>{status}</td><td class=num>{done}/{total}'
                "</td><td class=num>{failed}</td><td>{started}</td><td>{actor}</td></tr>",
                id=run.id,
                status=run.status,
                done=run.done,
                total=run.total,
                failed=run.failed,
                started=moment(run.started_at),
                actor=run.actor,
            )
            for run in runs
        ]
        body = h(
            "<p>Replay pushes the latest selected change of each record to HubSpot again, through the pusher, "
            "even when HubSpot should already have it. Preview first: the dry run shows what would change.</p>"
            "{form}<h2>Recent runs</h2><table><thead><tr><th>Run</th><th>Status</th><th>Done</th><th>Failed</th>"
            "<th>Started</th><th>By</th></tr></thead><tbody>{rows}</tbody></table>",
            form=self.selection_form(request, {}),
            rows=join(rows) or Markup('<tr><td colspan=6 class="muted">No replay yet.</td></tr>'),
        )
        return self.pages.render(request, "Replay", body, "/admin/replay")

    # --- preview and run ---------------------------------------------------------------------------------------

    async def _form(self, request: web.Request) -> dict[str, Any]:
        form = await request.post()
        values: dict[str, Any] = {name: str(form.get(name, "")).strip() for name in _FIELDS}
        values["kinds"] = [str(k) for k in form.getall("kind", []) if str(k) in KLEER_OBJECT_TYPES]
        return values

    def _selector(self, values: Mapping[str, Any]) -> ReplaySelector:
        def position(name: str) -> int | None:
            raw = values.get(name) or ""
            if not raw:
                return None
            if not raw.isdigit():
                raise ReplayError(f"{name.replace('_', ' ')} must be a whole number")
            return int(raw)

        return ReplaySelector(
            connection=values.get("connection") or self.pages.connection,
            kinds=tuple(values.get("kinds") or ()),
            records=(values["record"],) if values.get("record") else (),
            event_types=(values["event_type"],) if values.get("event_type") else (),
            since=parse_moment(values["since"]) if values.get("since") else None,
            until=parse_moment(values["until"]) if values.get("until") else None,
            from_position=position("from_position"),
            to_position=position("to_position"),
        )

    def _hidden(self, values: Mapping[str, Any]) -> Markup:
        fields = [h('<input type="hidden" name="{}" value="{}">', n, values.get(n) or "") for n in _FIELDS]
        fields.extend(h('<input type="hidden" name="kind" value="{}">', k) for k in values.get("kinds") or ())
        return join(fields)

    async def preview(self, request: web.Request) -> web.Response:
        values = await self._form(request)
        try:
            selector = self._selector(values)
            tools = await self.tools()
            tools.check(selector)
            report = await dry_run(self.deps.pool, selector, tools.reader, max_records=PREVIEW_RECORDS)
        except (ReplayError, ValueError) as exc:
            body = self.selection_form(request, values, str(exc))
            return self.pages.render(request, "Replay", body, "/admin/replay")
        # The run replays exactly the previewed window ("2h" would move on by the time it is clicked).
        values["since"] = selector.since.isoformat() if selector.since else ""
        values["until"] = selector.until.isoformat() if selector.until else ""
        body = h(
            "{summary}{diffs}"
            '<form method="post" action="/admin/replay/run">{csrf}{hidden}'
            "<button>Run this replay ({records} records)</button></form>"
            '<p><a href="/admin/replay">Change the selection</a></p>',
            summary=dry_run_summary(report),
            diffs=diff_table(report),
            csrf=self.pages.csrf_input(request),
            hidden=self._hidden(values),
            records=report.records,
        )
        return self.pages.render(request, "Replay preview (dry run: nothing written)", body, "/admin/replay")

    async def run(self, request: web.Request) -> web.Response:
        values = await self._form(request)
        try:
            selector = self._selector(values)
            tools = await self.tools()
            tools.check(selector)
        except (ReplayError, ValueError) as exc:
            body = self.selection_form(request, values, str(exc))
            return self.pages.render(request, "Replay", body, "/admin/replay")
        actor = f"admin:{request[USER]}"
        requested = await self.deps.pool.fetchval("SELECT now()")
        task = asyncio.create_task(run_replay(self.deps.store, selector, tools.make_pusher(actor), actor=actor))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        run_id = await self._run_of(selector, requested, task)
        raise web.HTTPSeeOther(f"/admin/replay/runs/{run_id}")

    async def _run_of(self, selector: ReplaySelector, requested: dt.datetime, task: asyncio.Task[Any]) -> str:
        """The run the task opened (or resumed) for ``selector``."""
        for _ in range(200):
            run_id = await self.deps.pool.fetchval(
                "SELECT id FROM replay_runs WHERE selector_key = $1 AND (status = 'running' OR updated_at >= $2) "
                "ORDER BY started_at DESC LIMIT 1",
                selector.key(),
                requested,
            )
            if run_id is not None:
                return str(run_id)
            if task.done():
                task.result()  # raises what stopped it
            await asyncio.sleep(0.025)
        raise web.HTTPServiceUnavailable(text="the replay did not start within 5 s; see the service log")

    async def run_page(self, request: web.Request) -> web.Response:
        run = await get_run(self.deps.pool, request.match_info["id"])
        if run is None:
            raise web.HTTPNotFound(text="no such replay run")
        running = run.status == "running"
        body = h(
            '<p>Status: <strong id="status">{status}</strong>{refresh}</p>'
            '<p><progress class="progress" max="{total}" value="{done}">{done}/{total}</progress> '
            "{done} of {total} records: {pushed} pushed, {unchanged} unchanged, {failed} failed.</p>"
            "<p>Started {started} by {actor}{finished}. Selection up to log position {up_to}: <code>{selector}</code></p>"
            "{error}<p>Every event of this run carries correlation <code>{correlation}</code>.</p>"
            '<p><a href="/admin/replay">All replays</a></p>',
            status=run.status,
            refresh=Markup(' <span class="muted">(this page refreshes every 2 s)</span>') if running else "",
            total=max(run.total, 1),
            done=run.done,
            pushed=run.pushed,
            unchanged=run.unchanged,
            failed=run.failed,
            started=moment(run.started_at),
            actor=run.actor,
            finished=h(", finished {}", moment(run.finished_at)) if run.finished_at else "",
            up_to=run.up_to_position,
            selector=str(run.selector),
            error=h('<p class="flash error">Last error: {}</p>', run.last_error) if run.last_error else "",
            correlation=run.correlation_id,
        )
        response = self.pages.render(request, f"Replay {run.id}", body, "/admin/replay")
        if running:
            response.headers["Refresh"] = "2"
        return response


def dry_run_summary(report: DryRunReport) -> Markup:
    counts = report.counts()
    return h(
        "<p>{selection}: {events} events up to position {up_to} → <strong>{records}</strong> records. "
        "<strong>{create}</strong> to create, <strong>{update}</strong> to update, {same} already as replay would "
        "write them, {remove} to remove, {skip} unreadable.{capped}</p>",
        selection=report.selector.describe(),
        events=report.events_scanned,
        up_to=report.up_to,
        records=report.records,
        create=counts.get("create", 0),
        update=counts.get("update", 0),
        same=counts.get("same", 0),
        remove=counts.get("remove", 0),
        skip=counts.get("skip", 0),
        capped=h(" (Compared the first {} records; the run replays all.)", report.compared)
        if report.compared < report.records
        else "",
    )


def _diff_row(diff: RecordDiff) -> Markup:
    changes = join(
        h(
            "<li><code>{}</code>: <del>{}</del> → <ins>{}</ins></li>",
            c.field,
            "(none)" if c.old is None else c.old,
            "(none)" if c.new is None else c.new,
        )
        for c in diff.changes
    )
    return h(
        '<tr data-record="{record}" data-action="{action}"><td><a href="{link}">{record}</a></td><td>{target}</td>'
        "<td>{action}</td><td>{note}<ul>{changes}</ul></td></tr>",
        record=diff.record,
        link=url("/admin/records", {"record": diff.record}),
        target=f"{diff.hubspot_object} {diff.hubspot_id or ''}".strip(),
        action=diff.action,
        note=diff.note,
        changes=changes,
    )


def diff_table(report: DryRunReport) -> Markup:
    differing = [d for d in report.diffs if d.action != "same"]
    rows = [_diff_row(d) for d in differing[:SHOWN_DIFFS]]
    more = (
        h("<p>{} more records differ; <code>kleer-sync replay --dry-run --json</code> lists all.</p>", len(differing) - SHOWN_DIFFS)
        if len(differing) > SHOWN_DIFFS
        else Markup("")
    )
    return h(
        '<table id="replay-diff"><thead><tr><th>Record</th><th>HubSpot</th><th>Action</th><th>Fields (HubSpot now → '
        "replay)</th></tr></thead><tbody>{}</tbody></table>{}",
        join(rows) or Markup('<tr><td colspan=4 class="muted">HubSpot already holds exactly what replay would write.</td></tr>'),
        more,
    )
