"""The admin pages: overview, field mappings, record audit, dead letters (replay: ``replay_views``).

Each handler reads through ``services.operations`` (indexed, paged queries)
and renders with ``admin.html`` (every value escaped). Actions are POST forms
carrying the CSRF token; after an action the browser is redirected (303) to a
page that shows the outcome, so reloading never repeats it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import orjson
from aiohttp import web

from libs.events.dlq import DeadLetter
from libs.mapping.model import FieldMapping, Mappings
from libs.mapping.objects import KLEER_OBJECT_TYPES
from libs.mapping.triggers import one_way_properties, trigger_properties
from libs.observability.logging import get_logger
from libs.records import RecordRef
from services.inbound.admin.auth import CSRF_FIELD, USER, AdminAuth
from services.inbound.admin.html import STYLESHEET, Markup, h, join, options, page, url
from services.inbound.deps import InboundDeps
from services.operations.audit import load_audit, load_correlation
from services.operations.deadletters import STATUSES, DeadLetterFilter, NoRedriver, ServiceRedrivers
from services.operations.overview import KindStatus, load_overview
from services.operations.render import when
from services.operations.timeline import Entry

log = get_logger(__name__)

PAGE_SIZE = 50
AUDIT_PAGE = 200


def html_response(body: Markup) -> web.Response:
    return web.Response(text=str(body), content_type="text/html", charset="utf-8")


def see_other(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def moment(at: datetime | None) -> Markup:
    return h('<span class="mono">{}</span>', when(at)) if at else Markup("—")


class AdminPages:
    def __init__(self, deps: InboundDeps, auth: AdminAuth, redrivers: ServiceRedrivers) -> None:
        self.deps = deps
        self.auth = auth
        self.redrivers = redrivers

    @property
    def mappings(self) -> Mappings:
        return self.deps.mappings

    @property
    def connection(self) -> str:
        return self.deps.settings.connection_id

    def csrf_input(self, request: web.Request) -> Markup:
        return h('<input type="hidden" name="{}" value="{}">', CSRF_FIELD, self.auth.csrf_token(request[USER]))

    def render(self, request: web.Request, title: str, body: Markup, active: str) -> web.Response:
        return html_response(page(title, body, active=active, user=request[USER]))

    # --- static ------------------------------------------------------------------------------------------

    async def stylesheet(self, request: web.Request) -> web.Response:
        return web.Response(text=STYLESHEET, content_type="text/css")

    # --- overview ----------------------------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.Response:
        data = await load_overview(self.deps.pool, [self.connection])
        parts: list[Markup] = [
            h(
                '<p class="flash error" data-paused="{}">Paused: <strong>{}</strong> takes nothing from Kafka since '
                "{} (by {}{}); changes queue until <code>kleer-sync outbound resume</code>.</p>",
                pause.consumer,
                pause.consumer,
                moment(pause.paused_at),
                pause.paused_by or "?",
                f": {pause.reason}" if pause.reason else "",
            )
            for pause in data.paused
        ]
        parts += [
            h(
                "<p>Log head: position <strong>{}</strong>. Relay published up to {}. "
                "Open dead letters: <strong>{}</strong>.</p>",
                data.head,
                data.relay_position if data.relay_position is not None else "—",
                sum(data.dead_letters_by_source.values()),
            )
        ]
        for connection in data.connections:
            rows = [self._kind_row(k, data.now) for k in data.kinds if k.connection == connection]
            parts.append(
                h(
                    "<h2>Connection {}</h2><table><thead><tr><th>Object type</th><th>Records (Kleer)</th>"
                    "<th>In HubSpot</th><th>Last poll</th><th>Freshness</th><th>Last change polled</th>"
                    "<th>Last HubSpot write</th><th>Lag</th><th>Errors (open dead letters)</th></tr></thead>"
                    "<tbody>{}</tbody></table>",
                    connection,
                    join(rows),
                )
            )
        parts.append(
            Markup(
                '<p class="muted">Last poll: the last successful pass of the poller, wherever it runs (a failed '
                "pass shows its error until the next one succeeds); Prometheus has the same as "
                "<code>kleer_sync_poll_freshness_seconds</code>. "
                "Lag: how long the oldest change not yet written to HubSpot has waited.</p>"
            )
        )
        consumer_rows = [
            h(
                "<tr><td>{}</td><td>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td>"
                "<td>{}</td></tr>",
                c.consumer,
                c.topic,
                c.partitions,
                c.position,
                c.lag_events,
                moment(c.updated_at),
            )
            for c in data.consumers
        ]
        parts.append(
            h(
                "<h2>Consumers</h2><table><thead><tr><th>Consumer</th><th>Topic</th><th>Partitions</th>"
                "<th>Lowest checkpoint</th><th>Lag (events)</th><th>Last commit</th></tr></thead><tbody>{}</tbody>"
                "</table>",
                join(consumer_rows) or Markup('<tr><td colspan=6 class="muted">no consumer has committed yet</td></tr>'),
            )
        )
        if data.dead_letters_by_source:
            parts.append(
                h(
                    "<h2>Open dead letters by source</h2><ul>{}</ul>",
                    join(
                        h('<li><a href="{}">{}</a>: {}</li>', url("/admin/dlq", {"source": s}), s, n)
                        for s, n in sorted(data.dead_letters_by_source.items())
                    ),
                )
            )
        return self.render(request, "Overview", join(parts), "/admin/")

    def _kind_row(self, status: KindStatus, now: datetime) -> Markup:
        lag = status.lag_seconds(now)
        errors = status.open_dead_letters
        return h(
            "<tr><th>{kind}</th><td class=num>{records}</td><td class=num>{in_hubspot}</td><td>{poll}</td>"
            "<td>{fresh}</td><td>{change}</td><td>{push}</td><td class=num>{lag}</td><td class=num>{errors}</td></tr>",
            kind=status.kind,
            records=status.records,
            in_hubspot=status.in_hubspot,
            poll=join([
                h("{}", when(datetime.fromtimestamp(status.last_poll).astimezone()))
                if status.last_poll else Markup("—"),
                h('<br><span class="warn">last pass failed: {}</span>', status.poll_error)
                if status.poll_error else Markup(""),
            ]),
            fresh=ago(status.freshness_seconds()),
            change=moment(status.last_change.at) if status.last_change else "—",
            push=moment(status.last_push.at) if status.last_push else "—",
            lag=h('<span class="warn">{}</span>', ago(lag)) if lag else "0",
            errors=h(
                '<a class="warn" href="{}">{}</a>',
                url("/admin/dlq", {"connection": status.connection}),
                errors,
            )
            if errors
            else "0",
        )

    # --- field mappings ------------------------------------------------------------------------------------

    async def field_mappings(self, request: web.Request) -> web.Response:
        object_type = request.query.get("object", "client")
        if object_type not in KLEER_OBJECT_TYPES:
            raise web.HTTPNotFound(text=f"unknown object type {object_type!r}")
        mapping = self.mappings.object(object_type)
        one_way = set(one_way_properties(object_type, mappings=self.mappings))
        triggers = trigger_properties(object_type, mappings=self.mappings)
        tabs = join(
            h(
                '<a href="{}"{}>{}</a>',
                url("/admin/mappings", {"object": t}),
                Markup(' aria-current="page"') if t == object_type else Markup(""),
                t,
            )
            for t in KLEER_OBJECT_TYPES
        )
        rows = [row for f in mapping.fields for row in self._mapping_rows(f, one_way, set(triggers))]
        unmapped_triggers = [t for t in triggers if t not in mapping.mapped_properties]
        intro = (
            Markup(
                "<p>HubSpot properties marked <span class=\"badge one-way\">One-way</span> still sync both ways, "
                "but a change to one of them alone in HubSpot starts no inbound sync: only the triggering "
                "properties do, and then every mapped field goes to Kleer.</p>"
            )
            if triggers
            else Markup("<p>This object syncs from Kleer to HubSpot only; no HubSpot change starts a sync.</p>")
        )
        body = h(
            '<p class="tabs">{tabs}</p><h2>{title} → HubSpot {hubspot}</h2>{intro}'
            '<table id="mappings"><thead><tr><th>HubSpot property</th><th>Label</th><th>Kleer field</th>'
            "<th>Direction</th><th>Transform</th><th>Default value</th><th>Inbound</th></tr></thead>"
            "<tbody>{rows}</tbody></table>{extra}<p class=muted>Mappings from {source}.</p>",
            tabs=tabs,
            title=object_type,
            hubspot=mapping.hubspot_object.name,
            intro=intro,
            rows=join(rows),
            extra=h(
                "<p>Also triggering, though not mapped: {}.</p>", ", ".join(unmapped_triggers)
            )
            if unmapped_triggers
            else Markup(""),
            source=self.mappings.source,
        )
        return self.render(request, "Field mappings", body, "/admin/mappings")

    def _mapping_rows(self, f: FieldMapping, one_way: set[str], triggers: set[str]) -> list[Markup]:
        rows = []
        for prop in f.hubspot_properties:
            if prop in one_way:
                inbound = Markup('<span class="badge one-way">One-way</span>')
            elif prop in triggers:
                inbound = Markup("starts inbound sync")
            else:
                inbound = Markup("")
            alias = prop != f.hubspot_property
            rows.append(
                h(
                    '<tr data-property="{prop}"><td><code>{prop}</code>{alias}</td><td>{label}</td>'
                    "<td><code>{kleer}</code></td><td>{direction}</td><td>{transform}</td><td>{default}</td>"
                    "<td>{inbound}</td></tr>",
                    prop=prop,
                    alias=h(' <span class="muted">(alias of {})</span>', f.hubspot_property) if alias else "",
                    label=f.label or (f.custom.label if f.custom else ""),
                    kleer=f.source,
                    direction=f.direction.value.replace("_", " "),
                    transform=f.transform,
                    default="" if f.default is None else str(f.default),
                    inbound=inbound,
                )
            )
        return rows

    # --- records -------------------------------------------------------------------------------------------------

    async def record(self, request: web.Request) -> web.Response:
        text = request.query.get("record", "").strip()
        connection = request.query.get("connection", "").strip() or self.connection
        try:
            limit = max(1, min(5000, int(request.query.get("limit", AUDIT_PAGE))))
        except ValueError:
            limit = AUDIT_PAGE
        form = h(
            '<form class="filters" method="get" action="/admin/records">'
            '<label>Record <input name="record" value="{}" placeholder="kleer:client:123" size="30"></label>'
            '<label>Connection <input name="connection" value="{}" size="12"></label>'
            "<button>Show timeline</button></form>",
            text,
            connection,
        )
        if not text:
            return self.render(request, "Records", form, "/admin/records")
        try:
            ref = RecordRef.parse(text)
        except ValueError as exc:
            return self.render(request, "Records", join([form, h('<p class="flash error">{}</p>', str(exc))]), "/admin/records")
        audit = await load_audit(self.deps.pool, ref, connection, limit=limit)
        linked = (
            join(
                h('<a href="{}">{}</a> (via {})', url("/admin/records", {"record": str(link.record), "connection": connection}), str(link.record), link.via)
                for link in audit.linked
            )
            if audit.linked
            else Markup("none yet")
        )
        more = (
            h(
                '<p>Older events are not shown. <a href="{}">Show up to {} events</a>.</p>',
                url("/admin/records", {"record": text, "connection": connection, "limit": limit * 2}),
                limit * 2,
            )
            if audit.truncated
            else Markup("")
        )
        dead = h(
            '<p><a href="{}">Dead letters of this record</a></p>',
            url("/admin/dlq", {"record": str(ref), "connection": connection, "status": "all"}),
        )
        body = h(
            "{form}<h2>{record}</h2><p>Linked: {linked}</p>{dead}{more}{table}",
            record=str(ref),
            linked=linked,
            dead=dead,
            more=more,
            table=timeline_table(audit.entries),
            form=form,
        )
        return self.render(request, f"Record {ref}", body, "/admin/records")

    async def correlation(self, request: web.Request) -> web.Response:
        correlation_id = request.match_info["id"]
        entries = await load_correlation(self.deps.pool, correlation_id, limit=AUDIT_PAGE)
        body = h(
            "<p>Every event of this chain of cause and effect (or of one poll), oldest first"
            "{more}.</p>{table}",
            more=f"; the first {AUDIT_PAGE} are shown" if len(entries) == AUDIT_PAGE else "",
            table=timeline_table(entries),
        )
        return self.render(request, f"Correlation {correlation_id[:8]}", body, "/admin/records")

    # --- dead letters --------------------------------------------------------------------------------------------

    async def dead_letters(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            before = int(q["before"]) if q.get("before") else None
            wanted = DeadLetterFilter(
                status=q.get("status") or "open",
                source=q.get("source") or None,
                record=q.get("record") or None,
                connection=q.get("connection") or None,
                limit=PAGE_SIZE,
                before_id=before,
            )
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        entries = await wanted.list(self.deps.dlq)
        sources = sorted({*self.redrivers.sources, *(await self.deps.dlq.count_open())})
        form = h(
            '<form class="filters" method="get" action="/admin/dlq">'
            '<label>Status <select name="status">{statuses}</select></label>'
            '<label>Source <select name="source">{sources}</select></label>'
            '<label>Record <input name="record" value="{record}" placeholder="kleer:client:123"></label>'
            '<label>Connection <input name="connection" value="{connection}" size="12"></label>'
            "<button>Filter</button></form>",
            statuses=options(STATUSES, wanted.status),
            sources=options(sources, wanted.source, blank="any"),
            record=wanted.record or "",
            connection=wanted.connection or "",
        )
        rows = [self._dead_letter_row(request, e) for e in entries]
        older = (
            h(
                '<p><a href="{}">Older entries →</a></p>',
                url("/admin/dlq", {**dict(q), "before": entries[-1].id}),
            )
            if len(entries) == PAGE_SIZE
            else Markup("")
        )
        body = h(
            "{form}{flash}<table id=\"dead-letters\"><thead><tr><th>Id</th><th>Status</th><th>Source</th>"
            "<th>Record</th><th>Parked</th><th>Attempts</th><th>Reason</th><th>Actions</th></tr></thead>"
            "<tbody>{rows}</tbody></table>{older}",
            form=form,
            flash=flash(q),
            rows=join(rows) or Markup('<tr><td colspan=8 class="muted">No dead letters match.</td></tr>'),
            older=older,
        )
        return self.render(request, "Dead letters", body, "/admin/dlq")

    def _actions(self, request: web.Request, entry: DeadLetter) -> Markup:
        if entry.status != "open":
            return Markup("")
        csrf = self.csrf_input(request)
        return h(
            '<form class="inline" method="post" action="/admin/dlq/{id}/redrive">{csrf}'
            "<button>Redrive</button></form>"
            '<form class="inline" method="post" action="/admin/dlq/{id}/discard">{csrf}'
            '<input name="why" placeholder="why" size="10"><button>Discard</button></form>',
            id=entry.id,
            csrf=csrf,
        )

    def _dead_letter_row(self, request: web.Request, e: DeadLetter) -> Markup:
        return h(
            '<tr data-id="{id}"><td><a href="/admin/dlq/{id}">{id}</a></td><td class="status-{status}">{status}</td>'
            '<td>{source}</td><td><a href="{record_url}">{record}</a> <span class="muted">{connection}</span></td>'
            "<td>{parked}</td><td class=num>{attempts}</td><td>{reason}</td><td>{actions}</td></tr>",
            id=e.id,
            status=e.status,
            source=e.source,
            record_url=url("/admin/records", {"record": e.record, "connection": e.connection}),
            record=e.record,
            connection=e.connection,
            parked=moment(e.created_at),
            attempts=e.attempts,
            reason=e.reason,
            actions=self._actions(request, e),
        )

    async def dead_letter(self, request: web.Request) -> web.Response:
        entry = await self.deps.dlq.get(_entry_id(request))
        if entry is None:
            raise web.HTTPNotFound(text="no such dead letter")
        body = h(
            "{flash}<table><tbody>"
            "<tr><th>Status</th><td class=\"status-{status}\">{status}</td></tr>"
            "<tr><th>Source</th><td>{source}</td></tr>"
            '<tr><th>Record</th><td><a href="{record_url}">{record}</a> ({connection})</td></tr>'
            "<tr><th>Parked</th><td>{parked}</td></tr><tr><th>Updated</th><td>{updated}</td></tr>"
            "<tr><th>Attempts</th><td>{attempts}</td></tr>"
            "<tr><th>Cause</th><td class=mono>{cause}</td></tr>"
            "<tr><th>Reason</th><td>{reason}</td></tr>"
            "<tr><th>Detail</th><td><pre>{detail}</pre></td></tr>"
            "<tr><th>Payload</th><td><pre>{payload}</pre></td></tr>"
            "</tbody></table>{actions}",
            flash=flash(request.query, entry),
            status=entry.status,
            source=entry.source,
            record_url=url("/admin/records", {"record": entry.record, "connection": entry.connection}),
            record=entry.record,
            connection=entry.connection,
            parked=moment(entry.created_at),
            updated=moment(entry.updated_at),
            attempts=entry.attempts,
            cause=f"event {entry.event_id} at position {entry.event_position}" if entry.event_id else "—",
            reason=entry.reason,
            detail=orjson.dumps(entry.detail, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode(),
            payload=orjson.dumps(entry.payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode(),
            actions=self._actions(request, entry),
        )
        return self.render(request, f"Dead letter {entry.id}", body, "/admin/dlq")

    async def redrive(self, request: web.Request) -> web.Response:
        entry = await self.deps.dlq.get(_entry_id(request))
        if entry is None:
            raise web.HTTPNotFound(text="no such dead letter")
        done = "redriven"
        try:
            redrivers = await self.redrivers.prepare(entry.source)
        except NoRedriver:
            done = "no-redriver"
        except Exception as exc:  # the service's redriver cannot start (settings, connections)
            log.error("redriver did not start", source=entry.source, error=str(exc))
            done = "not-started"
        else:
            try:
                await self.deps.dlq.redrive(entry.id, redrivers, f"admin:{request[USER]}")
            except Exception:
                done = "failed"  # recorded: the entry's reason says why
        raise see_other(url(f"/admin/dlq/{entry.id}", {"done": done}))

    async def discard(self, request: web.Request) -> web.Response:
        entry_id = _entry_id(request)
        why = str((await request.post()).get("why", ""))[:500]
        try:
            await self.deps.dlq.discard(entry_id, f"admin:{request[USER]}", why)
        except LookupError:
            raise see_other(url(f"/admin/dlq/{entry_id}", {"done": "not-open"})) from None
        raise see_other(url(f"/admin/dlq/{entry_id}", {"done": "discarded"}))


def _entry_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound(text="no such dead letter") from None


def flash(query: Mapping[str, str], entry: DeadLetter | None = None) -> Markup:
    """The outcome of the last action, named by the redirect's query; the words are ours, never the URL's."""
    done = query.get("done")
    source = entry.source if entry else "?"
    messages = {
        "redriven": ("", "Redriven: the entry went through its normal path again."),
        "discarded": ("", "Discarded."),
        "failed": (" error", f"Redrive failed, the entry stays open: {entry.reason if entry else ''}"),
        "no-redriver": (" error", f"No service exports a redrive path for source {source}."),
        "not-started": (" error", f"The redriver of {source} could not start; the service log says why."),
        "not-open": (" error", "Only open entries can be discarded."),
    }
    if done not in messages:
        return Markup("")
    kind, message = messages[done]
    return h('<p class="flash{}">{}</p>', kind, message)


def change_list(entry: Entry) -> Markup:
    if not entry.changes:
        return Markup("")
    return h(
        "<ul>{}</ul>",
        join(
            h(
                "<li><code>{}</code>: <del>{}</del> → <ins>{}</ins></li>",
                c.field,
                "(none)" if c.old is None else c.old,
                "(none)" if c.new is None else c.new,
            )
            for c in entry.changes
        ),
    )


def chain_links(entry: Entry) -> Markup:
    return join(
        (
            h('<a href="#e{0}">#{0} {1}</a>', link.position, link.type)
            if link.position
            else h('<span class="mono">{}</span>', link.event_id[:8])
            for link in entry.chain
        ),
        " ← ",
    )


def timeline_table(entries: Sequence[Entry]) -> Markup:
    rows = [
        h(
            '<tr id="e{pos}" data-step="{step}"><td class="num"><a href="#e{pos}">{pos}</a></td><td>{at}</td>'
            "<td>{step}</td><td><code>{type}</code>{related}</td><td>{actor}</td><td>{summary}{changes}</td>"
            "<td>{chain}</td><td class=\"mono\">{corr}</td></tr>",
            pos=e.position,
            at=moment(e.recorded_at),
            step=e.step.value,
            type=e.type,
            related=h('<br><span class="muted">{}</span>', e.stream) if e.related else "",
            actor=e.actor + (f" / {e.source}" if e.source else ""),
            summary=e.summary,
            changes=change_list(e),
            chain=chain_links(e),
            corr=h('<a href="/admin/correlations/{}">{}</a>', e.correlation_id, e.correlation_id[:8])
            if e.correlation_id
            else "",
        )
        for e in entries
    ]
    return h(
        '<table id="timeline"><thead><tr><th>#</th><th>Time</th><th>Step</th><th>Event</th><th>Actor</th>'
        "<th>What happened</th><th>Caused by</th><th>Correlation</th></tr></thead><tbody>{}</tbody></table>",
        join(rows) or Markup('<tr><td colspan=8 class="muted">No events recorded for this record.</td></tr>'),
    )
