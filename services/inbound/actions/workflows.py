"""The five actions: read HubSpot, write Kleer once, link back, push the new record to HubSpot at once.

Each action is a method of ``ActionWork`` that returns ``Done``: the outcome
and the bookkeeping the executor commits in one transaction with the answer
(events, fingerprints, own writes, links). Steps are safe to repeat: a call
resumed after a crash or a transient failure re-reads HubSpot, finds the Kleer
record it created in the ledger (never creating a second one), and re-pushes
(upserts by ``kleer_id``; unchanged snapshots are skipped by the pusher).

Push-back (invoices, agreements, their line items; also clients and projects):
the Kleer record is mapped with ``libs.mapping`` exactly as the poller maps it
(``snapshots_for_push``), upserted with ``Pusher.push_now`` with its deal and
company associations, and its fingerprints are stored the way the poller stores
them (same source hash), together with the ``Kleer…Changed`` events the poller
would have appended, so the next poll sees no change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from libs.events.envelope import NewEvent, RecordedEvent
from libs.events.store import AppendRequest, PostgresEventStore
from libs.hubspot.client import HubSpotClient
from libs.hubspot.errors import HubSpotError
from libs.hubspot.objects import ObjectType
from libs.kleer import AGREEMENT as AGREEMENT_RESOURCE
from libs.kleer import CLIENT as CLIENT_RESOURCE
from libs.kleer import INVOICE as INVOICE_RESOURCE
from libs.kleer import PROJECT as PROJECT_RESOURCE
from libs.kleer import (
    KleerAuthError,
    KleerClient,
    KleerError,
    KleerNotFound,
    KleerUnavailable,
    KleerValidationError,
    Resource,
)
from libs.mapping.amounts import agreement_mrr
from libs.mapping.errors import MappingError
from libs.mapping.loader import resolve
from libs.mapping.model import Mappings
from libs.mapping.objects import (
    AGREEMENT,
    CLIENT,
    COMPANIES,
    DEAL_KLEER_AGREEMENT_ID,
    DEAL_KLEER_INVOICE_ID,
    DEAL_KLEER_PROJECT_ID,
    DEALS,
    INVOICE,
    KLEER_ID,
    LINE_ITEM,
    PROJECT,
    association_type,
)
from libs.mapping.triggers import hubspot_properties_to_read
from libs.records import RecordRef
from services.inbound.actions import catalog
from services.inbound.actions.answers import Outcome
from services.inbound.actions.crm import Crm, is_transient
from services.inbound.actions.drafts import (
    DEAL_PROPERTIES,
    agreement_body,
    agreement_update,
    client_body,
    decimal_text,
    event_json,
    invoice_body,
    project_body,
)
from services.inbound.actions.failures import AmbiguousCreate, BusinessError, Transient
from services.inbound.actions.ledger import CallKey, CreateInFlight, Ledger, event_id_for
from services.inbound.actions.request import ActionRequest, Inputs
from services.inbound.client_creation import CreationBusy, CreationTiming, create_client_once
from services.outbound import fingerprints
from services.outbound.detection import mapping_version, source_hash
from services.outbound.fingerprints import FingerprintRow
from services.outbound.pusher import Pusher, PushResult
from services.outbound.snapshots import (
    ParentRef,
    Snapshot,
    changed_type,
    line_item_ids,
    removal_event_data,
    removed_type,
    snapshots_for_push,
)

ACTOR = "workflow-action"
# How long an action waits for another worker creating the same company's client (it answers within seconds).
CREATE_CLIENT_PATIENCE_S = 1.0

CLIENT_CREATED = "KleerClientCreated"
INVOICE_CREATED = "KleerInvoiceCreated"
AGREEMENT_CREATED = "KleerAgreementCreated"
AGREEMENT_REVISED = "KleerAgreementRevised"
PROJECT_CREATED = "KleerProjectCreated"

_CREATE_ACTIONS = (catalog.CREATE_INVOICE, catalog.CREATE_AGREEMENT, catalog.CREATE_PROJECT)


@dataclass
class Done:
    """An outcome and what to commit with the answer (the Kleer record's own facts are committed earlier,
    with its fingerprints, before the push-back)."""

    outcome: Outcome
    own_writes: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # (object, id, props)
    client_links: list[tuple[str, str]] = field(default_factory=list)  # (company id, client id)


@dataclass(frozen=True)
class _Created:
    done: Done
    record: dict[str, Any]
    kleer_id: int
    client_id: int
    company_id: str
    company_name: str


@dataclass(frozen=True)
class ActionParts:
    """The dependencies of the actions (built once by ``services.inbound.actions.install_routes``)."""

    pool: asyncpg.Pool
    store: PostgresEventStore
    ledger: Ledger
    kleer: KleerClient
    hubspot: HubSpotClient
    pusher: Pusher
    mappings: Mappings
    today: Callable[[], dt.date] = dt.date.today


@dataclass(frozen=True)
class Call:
    """One claimed call being worked on."""

    key: CallKey
    owner: uuid.UUID
    definition: catalog.ActionDefinition
    request: ActionRequest
    inputs: Inputs
    received: RecordedEvent
    correlation_id: uuid.UUID

    def metadata(self) -> dict[str, Any]:
        return {
            "correlation_id": str(self.correlation_id),
            "causation_id": str(self.received.event_id),
            "actor": ACTOR,
            "source": "hubspot",
        }

    def event(self, event_type: str, data: Mapping[str, Any], what: str) -> NewEvent:
        return NewEvent(event_type, dict(data), self.metadata(), event_id_for(self.key.connection, self.key.callback_id, what))


def kleer_failure(exc: KleerError, doing: str) -> Exception:
    """A Kleer error in the executor's terms."""
    if isinstance(exc, KleerUnavailable):
        if exc.ambiguous:
            return AmbiguousCreate(f"Kleer did not confirm {doing}: {exc.message}")
        return Transient(f"Kleer is unavailable ({doing}): {exc.message}")
    if isinstance(exc, KleerAuthError):
        return Transient(f"Kleer refused our token ({doing}): {exc.message}")
    if isinstance(exc, KleerValidationError | KleerNotFound):
        return BusinessError(f"Kleer refused {doing}: {exc.message}")
    if exc.status is None or exc.status >= 500:
        return Transient(f"Kleer failed ({doing}): {exc.message}")
    return BusinessError(f"Kleer refused {doing}: {exc.message}")


def _id_text(value: str | None, what: str) -> int | None:
    text = (value or "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise BusinessError(f"The {what} '{text[:40]}' is not a Kleer id (a whole number): correct or clear it")
    return int(text)


def _money(ore: object, currency: object) -> str:
    from decimal import Decimal

    amount = Decimal(ore if isinstance(ore, int) else 0) / 100
    return f"{decimal_text(amount)} {currency or ''}".strip()


class ActionWork:
    """The work of one call (see the module docstring)."""

    def __init__(self, parts: ActionParts, call: Call) -> None:
        self.parts = parts
        self.call = call
        self.crm = Crm(parts.hubspot)
        self.mappings = resolve(parts.mappings)
        self.connection = call.key.connection

    async def run(self) -> Done:
        if self.call.request.object_type not in self.call.definition.object_types:
            wanted = " or ".join(t.lower() + "s" for t in self.call.definition.object_types)
            raise BusinessError(
                f"{self.call.definition.label} works on {wanted}, not on a {self.call.request.object_type.lower()}: "
                "use it in a workflow of that object type"
            )
        steps: dict[str, Callable[[], Awaitable[Done]]] = {
            catalog.CREATE_CLIENT: self.create_client,
            catalog.CREATE_INVOICE: self.create_invoice,
            catalog.CREATE_AGREEMENT: self.create_agreement,
            catalog.UPDATE_AGREEMENT: self.update_agreement,
            catalog.CREATE_PROJECT: self.create_project,
        }
        return await steps[self.call.definition.name]()

    # --- Kleer calls ------------------------------------------------------------------------------------

    async def _kleer(self, doing: str, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except KleerError as exc:
            raise kleer_failure(exc, doing) from exc

    async def _get(self, resource: Resource, kleer_id: int, what: str) -> dict[str, Any]:
        try:
            return dict(await self.parts.kleer.get(resource, kleer_id))
        except KleerNotFound as exc:
            raise BusinessError(
                f"The {what} {kleer_id} does not exist in Kleer (any more): clear it in HubSpot to create a new one"
            ) from exc
        except KleerError as exc:
            raise kleer_failure(exc, f"reading {what} {kleer_id}") from exc

    async def _create_once(
        self, kleer_type: str, resource: Resource, body: Mapping[str, Any], existing: Callable[[], Awaitable[int | None]]
    ) -> tuple[int, bool]:
        """Create the call's Kleer record exactly once; (id, created now). See ``Ledger`` for the guarantees.

        ``existing`` re-reads the link on the HubSpot record inside the critical
        section, so a record another workflow created meanwhile is returned.
        """
        ledger, key = self.parts.ledger, self.call.key
        row = await ledger.load(key)
        if row.kleer_id:
            return int(row.kleer_id), False
        if row.kleer_pending:
            raise AmbiguousCreate(
                f"an earlier attempt sent the Kleer {kleer_type} create and stopped before Kleer answered"
            )
        try:
            await ledger.mark_pending(key, self.call.owner, kleer_type)
        except CreateInFlight:
            raise Transient(f"another workflow is creating a Kleer {kleer_type} for this record right now") from None
        try:
            found = await existing()
            other = await ledger.created_by_other_call(
                key, self.call.request.object_type, self.call.request.object_id, kleer_type, _CREATE_ACTIONS
            )
        except BaseException:
            await ledger.clear_pending(key)
            raise
        if found is not None:
            await ledger.clear_pending(key)
            return found, False
        if other is not None:
            await ledger.clear_pending(key)
            raise Transient(f"another workflow just created Kleer {kleer_type} {other} for this record")
        try:
            new_id = await self.parts.kleer.create(resource, body)
        except KleerError as exc:
            failure = kleer_failure(exc, f"creating the {kleer_type}")
            if not isinstance(failure, AmbiguousCreate):
                await ledger.clear_pending(key)
            raise failure from exc
        await ledger.set_kleer(key, kleer_type, str(new_id))
        return new_id, True

    # --- clients ------------------------------------------------------------------------------------------

    def _company_properties(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((KLEER_ID, "name", *hubspot_properties_to_read(CLIENT, mappings=self.mappings))))

    async def _create_client(self, company_id: str, company: Mapping[str, str | None], inputs: Inputs) -> str:
        """A Kleer client for the company, once per company also across the inbound sync's own creates
        (``services.inbound.client_creation``)."""
        try:
            made = await create_client_once(
                self.parts.pool,
                self.parts.kleer.clients,
                connection=self.connection,
                company_id=company_id,
                body=client_body(company, inputs, self.mappings),
                timing=CreationTiming(),
                patience=CREATE_CLIENT_PATIENCE_S,
            )
        except CreationBusy as exc:
            raise Transient(str(exc)) from None
        except KleerError as exc:
            failure = kleer_failure(exc, "creating the client")
            # An unconfirmed create is found by its foreign-id on the next attempt.
            raise (Transient(str(failure)) if isinstance(failure, AmbiguousCreate) else failure) from exc
        await self.crm.set_properties(ObjectType.COMPANIES, company_id, {KLEER_ID: made.kleer_id})
        return made.kleer_id

    async def _client_of(self, company_id: str, done: Done) -> tuple[int, dict[str, str | None]]:
        """The Kleer client of the deal's company; created first when the ``create_client`` input says so."""
        company = await self.crm.one(ObjectType.COMPANIES, company_id, self._company_properties())
        client_id = _id_text(company.get(KLEER_ID), "company's Kleer ID")
        if client_id is not None:
            return client_id, company
        if not self.call.inputs.flag("create_client"):
            name = company.get("name") or f"id {company_id}"
            raise BusinessError(
                f"The deal's company ({name}) is not linked to a Kleer client: run Create Kleer Client on it first, "
                "or set this action's input 'create_client' to Yes"
            )
        kleer_id = await self._create_client(company_id, company, Inputs())
        await self._client_pushed(company_id, kleer_id, done)
        return int(kleer_id), {**company, KLEER_ID: kleer_id}

    async def _client_pushed(self, company_id: str, kleer_id: str, done: Done) -> str:
        """Record the new client and push it to its company; returns the push-back note."""
        record = await self._get(CLIENT_RESOURCE, int(kleer_id), "client")
        created = self._fact(CLIENT, CLIENT_CREATED, kleer_id, {
            "hubspot_object": COMPANIES.name,
            "hubspot_id": company_id,
            "name": record.get("name"),
            "fields": event_json({k: v for k, v in record.items() if k != "id"}),
        })
        note = await self._push_back(CLIENT, record, None, None, [created])
        done.own_writes.append((COMPANIES.name, company_id, {KLEER_ID: kleer_id}))
        done.client_links.append((company_id, kleer_id))
        return note

    async def create_client(self) -> Done:
        company_id = self.call.request.object_id
        company = await self.crm.one(ObjectType.COMPANIES, company_id, self._company_properties())
        existing = _id_text(company.get(KLEER_ID), "company's Kleer ID")
        ours = await self._ours()
        if existing is not None and str(existing) != ours:
            record = await self._get(CLIENT_RESOURCE, existing, "Kleer client (the company's Kleer ID)")
            return Done(Outcome.success(
                existing, existing, f"The company is already linked to Kleer client {existing} ({record.get('name')})"))
        done = Done(Outcome.success("", "", ""))
        if existing is None:
            kleer_id = await self._create_client(company_id, company, self.call.inputs)
            await self.parts.ledger.set_kleer(self.call.key, CLIENT, kleer_id)
        else:
            kleer_id = str(existing)  # linked by an earlier attempt of this call
        note = await self._client_pushed(company_id, kleer_id, done)
        name = company.get("name") or f"company {company_id}"
        done.outcome = Outcome.success(kleer_id, kleer_id, f"Kleer client {kleer_id} created for {name}{note}")
        return done

    async def _ours(self) -> str | None:
        """The Kleer id an earlier attempt of this call created (the ledger), if any."""
        return (await self.parts.ledger.load(self.call.key)).kleer_id

    # --- deal helpers -------------------------------------------------------------------------------------

    async def _deal(self, link_property: str) -> dict[str, str | None]:
        return await self.crm.one(ObjectType.DEALS, self.call.request.object_id, (*DEAL_PROPERTIES, link_property))

    async def _deal_link(self, link_property: str) -> int | None:
        deal = await self.crm.one(ObjectType.DEALS, self.call.request.object_id, (link_property,))
        return _id_text(deal.get(link_property), f"deal's {link_property}")

    async def _link_deal(self, link_property: str, kleer_id: int, done: Done) -> None:
        deal_id = self.call.request.object_id
        await self.crm.set_properties(ObjectType.DEALS, deal_id, {link_property: str(kleer_id)})
        done.own_writes.append((DEALS.name, deal_id, {link_property: str(kleer_id)}))

    async def _already(self, resource: Resource, kleer_id: int, what: str, number_key: str, link: str) -> Done:
        record = await self._get(resource, kleer_id, f"Kleer {what} (the deal's {link})")
        number = record.get(number_key)
        return Done(Outcome.success(
            kleer_id, number, f"The deal already has Kleer {what} {number or kleer_id}; nothing was created"))

    # --- invoices -----------------------------------------------------------------------------------------

    async def _create_from_deal(
        self,
        kind: str,
        resource: Resource,
        link: str,
        number_key: str,
        build: Callable[[int, Mapping[str, str | None]], Awaitable[dict[str, Any]]],
    ) -> Done | _Created:
        """The common path of the deal actions that create a Kleer record (invoice, agreement, project).

        Returns ``Done`` when the deal already links such a record (nothing is
        created), else the created record with what the caller needs to finish.
        """
        deal_id = self.call.request.object_id
        deal = await self._deal(link)
        existing = _id_text(deal.get(link), f"deal's {link}")
        ours = await self._ours()
        if existing is not None and str(existing) != ours:
            return await self._already(resource, existing, kind, number_key, link)
        done = Done(Outcome.success("", "", ""))
        company_id = await self.crm.deal_company(deal_id)
        client_id, company = await self._client_of(company_id, done)
        if ours is None:
            body = await build(client_id, deal)
            kleer_id, created = await self._create_once(kind, resource, body, lambda: self._deal_link(link))
            if not created and await self._ours() != str(kleer_id):
                return await self._already(resource, kleer_id, kind, number_key, link)
        else:
            kleer_id = int(ours)  # created by an earlier attempt of this call
        await self._link_deal(link, kleer_id, done)
        record = await self._get(resource, kleer_id, kind)
        return _Created(done, record, kleer_id, client_id, company_id, company.get("name") or "the company")

    async def create_invoice(self) -> Done:
        async def build(client_id: int, deal: Mapping[str, str | None]) -> dict[str, Any]:
            items = await self.crm.line_items(self.call.request.object_id)
            return invoice_body(client_id, items, self.call.inputs, deal, self.parts.today())

        made = await self._create_from_deal(INVOICE, INVOICE_RESOURCE, DEAL_KLEER_INVOICE_ID, "invoice-nr", build)
        if isinstance(made, Done):
            return made
        record, done = made.record, made.done
        number, rows = record.get("invoice-nr"), len(record.get("rows") or [])
        created = self._fact(INVOICE, INVOICE_CREATED, made.kleer_id, {
            "invoice_nr": number, "client_id": made.client_id, "deal_id": self.call.request.object_id,
            "company_id": made.company_id, "rows": rows, "amount_ore": record.get("amount"),
            "vat_ore": record.get("vat"), "currency": record.get("currency"),
        })
        note = await self._push_back(INVOICE, record, self.call.request.object_id, made.company_id, [created])
        total = _money(record.get("amount"), record.get("currency"))
        done.outcome = Outcome.success(made.kleer_id, number, (
            f"Kleer invoice {number} created for {made.company_name}: {rows} row(s), {total} ex VAT{note}"))
        return done

    def _fact(self, kind: str, event_type: str, kleer_id: object, data: Mapping[str, Any]) -> AppendRequest:
        """A fact about the Kleer record (``KleerInvoiceCreated``...), on the record's stream."""
        request = self.call.request
        origin = {"hubspot_object": DEALS.name, "hubspot_id": request.object_id} if request.object_type == "DEAL" else {}
        event = self.call.event(
            event_type,
            {"kleer_id": str(kleer_id), "kleer_type": kind, "callback_id": self.call.key.callback_id, **origin, **data},
            f"{event_type}/{kleer_id}",
        )
        return AppendRequest(RecordRef("kleer", kind, str(kleer_id)).stream(self.connection), [event])

    # --- agreements ---------------------------------------------------------------------------------------

    async def create_agreement(self) -> Done:
        async def build(client_id: int, deal: Mapping[str, str | None]) -> dict[str, Any]:
            items = await self.crm.line_items(self.call.request.object_id)
            return agreement_body(client_id, items, self.call.inputs, deal, self.parts.today())

        made = await self._create_from_deal(
            AGREEMENT, AGREEMENT_RESOURCE, DEAL_KLEER_AGREEMENT_ID, "agreement-nr", build)
        if isinstance(made, Done):
            return made
        record, done = made.record, made.done
        number, mrr = record.get("agreement-nr"), self._mrr(record)
        recurring = len(record.get("recurring-rows") or [])
        created = self._fact(AGREEMENT, AGREEMENT_CREATED, made.kleer_id, {
            "agreement_nr": number, "client_id": made.client_id, "deal_id": self.call.request.object_id,
            "company_id": made.company_id, "recurring_rows": recurring,
            "first_invoice_rows": len(record.get("first-invoice-rows") or []),
            "invoice_interval_months": record.get("invoice-interval-months"), "start_date": record.get("start-date"),
            "end_date": record.get("end-date"), "mrr": mrr,
        })
        note = await self._push_back(AGREEMENT, record, self.call.request.object_id, made.company_id, [created])
        currency = record.get("currency") or ""
        done.outcome = Outcome.success(made.kleer_id, number, (
            f"Kleer agreement {number} created for {made.company_name}: {recurring} recurring row(s) invoiced every "
            f"{record.get('invoice-interval-months')} month(s) from {record.get('start-date')}, "
            f"MRR {mrr} {currency}".rstrip() + note))
        return done

    def _mrr(self, record: Mapping[str, Any]) -> str:
        try:
            return decimal_text(agreement_mrr(record))
        except MappingError:
            return "?"

    async def update_agreement(self) -> Done:
        deal_id = self.call.request.object_id
        agreement_id = await self._deal_link(DEAL_KLEER_AGREEMENT_ID)
        if agreement_id is None:
            raise BusinessError(
                "The deal has no Kleer agreement (its Kleer agreement ID is empty): run Create Kleer Agreement first"
            )
        done = Done(Outcome.success("", "", ""))
        before = await self._get(AGREEMENT_RESOURCE, agreement_id, "Kleer agreement (the deal's kleer_agreement_id)")
        row = await self.parts.ledger.load(self.call.key)
        change_type = self.call.inputs.text("change_type") or ""
        note = ""
        revision_before = _revision(before)
        landed = (row.kleer_id is None and row.kleer_pending and row.kleer_revision_before is not None
                  and revision_before > row.kleer_revision_before)
        if row.kleer_id is None and not landed:  # not applied by an earlier attempt
            items = await self.crm.line_items(deal_id)
            change = agreement_update(before, items, self.call.inputs)
            note = change.note
            try:
                await self.parts.ledger.mark_pending(self.call.key, self.call.owner, AGREEMENT, revision_before)
            except CreateInFlight:
                raise Transient("another workflow is updating this deal's Kleer agreement right now") from None
            try:
                await self._kleer("updating the agreement",
                                  self.parts.kleer.update(AGREEMENT_RESOURCE, agreement_id, change.body))
            except BusinessError:
                await self.parts.ledger.clear_pending(self.call.key)  # Kleer refused it: nothing landed
                raise
            except AmbiguousCreate as exc:  # unlike a create, an update's fate is read back on the retry
                raise Transient(f"{exc.message}; the next attempt reads the agreement's revision") from exc
            # Any other failure leaves the mark: the retry reads the revision to tell whether it landed.
        if row.kleer_id is None:
            await self.parts.ledger.set_kleer(self.call.key, AGREEMENT, str(agreement_id))
        record = await self._get(AGREEMENT_RESOURCE, agreement_id, "agreement")
        company_id = await self._company_or_none(deal_id)
        number = record.get("agreement-nr")
        revision = record.get("revision-nr")
        mrr_before, mrr_after = self._mrr(before), self._mrr(record)
        revised = self._fact(AGREEMENT, AGREEMENT_REVISED, agreement_id, {
            "agreement_nr": number, "revision_nr": revision, "change_type": change_type, "deal_id": deal_id,
            "end_date": record.get("end-date"), "mrr_before": mrr_before, "mrr_after": mrr_after,
            "recurring_rows": len(record.get("recurring-rows") or []),
        })
        removals, stale = await self._stale_line_items(record)
        push_note = await self._push_back(AGREEMENT, record, deal_id, company_id, [revised, *removals], stale)
        currency = record.get("currency") or ""
        mrr_text = f"MRR {mrr_after} {currency}" if mrr_before == mrr_after else f"MRR {mrr_before} → {mrr_after} {currency}"
        ends = f"; ends {record.get('end-date')}" if record.get("end-date") else ""
        done.outcome = Outcome.success(agreement_id, number, (
            f"Kleer agreement {number} revision {revision} ({change_type}): {note}{mrr_text.rstrip()}{ends}{push_note}"))
        return done

    async def _company_or_none(self, deal_id: str) -> str | None:
        try:
            return await self.crm.deal_company(deal_id)
        except BusinessError:
            return None  # the subscription is still pushed; its company association waits for the poller's

    async def _stale_line_items(self, record: Mapping[str, Any]) -> tuple[list[AppendRequest], list[str]]:
        """Line items of rows the new revision no longer has, removed the way the poller removes them:
        ``KleerLineItemRemoved`` events (the pusher archives or flags them) and their fingerprints forgotten."""
        agreement_id = str(record["id"])
        current = set(line_item_ids(AGREEMENT, record))
        patterns = [f"{agreement_id}-recurring-%", f"{agreement_id}-first-%"]
        rows = await self.parts.pool.fetch(
            "SELECT kleer_id FROM outbound_fingerprints WHERE connection = $1 AND kind = $2 "
            "AND kleer_id LIKE ANY($3::text[]) UNION SELECT kleer_id FROM hubspot_ids WHERE connection = $1 "
            "AND kind = $2 AND NOT removed AND kleer_id LIKE ANY($3::text[])",
            self.connection,
            LINE_ITEM,
            patterns,
        )
        stale = sorted({r["kleer_id"] for r in rows} - current)
        metadata = self.call.metadata()
        removals = [
            AppendRequest(
                RecordRef("kleer", LINE_ITEM, kleer_id).stream(self.connection),
                [NewEvent(
                    removed_type(LINE_ITEM),
                    removal_event_data(LINE_ITEM, kleer_id),
                    metadata,
                    event_id_for(self.connection, self.call.key.callback_id, f"removed/{LINE_ITEM}/{kleer_id}"),
                )],
            )
            for kleer_id in stale
        ]
        return removals, stale

    # --- projects -----------------------------------------------------------------------------------------

    async def create_project(self) -> Done:
        async def build(client_id: int, deal: Mapping[str, str | None]) -> dict[str, Any]:
            return project_body(client_id, self.call.request.object_id, deal, self.call.inputs, self.parts.today())

        made = await self._create_from_deal(PROJECT, PROJECT_RESOURCE, DEAL_KLEER_PROJECT_ID, "number", build)
        if isinstance(made, Done):
            return made
        record, done = made.record, made.done
        number = record.get("number")
        created = self._fact(PROJECT, PROJECT_CREATED, made.kleer_id, {
            "number": number, "name": record.get("name"), "client_id": made.client_id,
            "deal_id": self.call.request.object_id, "company_id": made.company_id,
        })
        note = await self._push_back(PROJECT, record, self.call.request.object_id, made.company_id, [created])
        done.outcome = Outcome.success(made.kleer_id, number, (
            f"Kleer project {number} ({record.get('name')}) created for {made.company_name}{note}"))
        return done

    # --- push-back ----------------------------------------------------------------------------------------

    async def _push_back(
        self,
        kind: str,
        record: Mapping[str, Any],
        deal_id: str | None,
        company_id: str | None,
        facts: Sequence[AppendRequest],
        forget: Sequence[str] = (),
    ) -> str:
        """Record the change as the poller would, then upsert it to HubSpot now; returns a note for the message.

        First one transaction stores ``facts``, the ``Kleer…Changed`` events and
        the fingerprints (and forgets ``forget``, line items that are gone);
        then ``Pusher.push_now`` upserts the record and its line items with their
        associations. Raises ``Transient`` when HubSpot stays unavailable (the
        call is retried; nothing is created twice).
        """
        try:
            snapshots = snapshots_for_push(kind, record, mappings=self.mappings, deal_id=deal_id)
        except MappingError as exc:
            await self._record(kind, record, [], facts, forget)
            return f" (not shown in HubSpot: it cannot be mapped: {exc})"
        if company_id is not None:
            snapshots[0] = _with_company(snapshots[0], company_id)
        await self._record(kind, record, snapshots, facts, forget)
        try:
            results = await self.parts.pusher.push_now(self.connection, snapshots, cause=self.call.received)
        except HubSpotError as exc:
            raise Transient(f"HubSpot did not take the new {kind}: {exc}") from exc
        note = _push_note([r for r in results if r.outcome == "failed"])
        main = next((r for r in results if r.kind == kind and r.kleer_id == snapshots[0].kleer_id), None)
        if deal_id and main is not None and main.hubspot_id and not _pusher_links_deals(main.hubspot_object):
            note += await self._associate_deal(main.hubspot_object, main.hubspot_id, deal_id)
        return note

    async def _associate_deal(self, hubspot_object: str, hubspot_id: str, deal_id: str) -> str:
        """The deal association the pusher has no type id for (subscriptions): HubSpot's default one."""
        try:
            await self.parts.hubspot.associate(ObjectType(hubspot_object), hubspot_id, ObjectType.DEALS, deal_id)
        except HubSpotError as exc:
            if is_transient(exc):
                raise Transient(f"HubSpot did not take the deal association: {exc}") from exc
            return f" (HubSpot refused to associate it with the deal: {exc.message})"
        return ""

    def _salt(self, kind: str) -> bytes:
        # As the poller salts its source hashes (services.outbound.poller.Poller.__init__).
        return mapping_version(self.mappings).encode() + kind.encode()

    async def _record(
        self,
        kind: str,
        record: Mapping[str, Any],
        snapshots: Sequence[Snapshot],
        facts: Sequence[AppendRequest],
        forget: Sequence[str],
    ) -> None:
        """Fingerprints with their ``Kleer…Changed`` events in one transaction, exactly as the poller commits them."""
        record_date = fingerprints.record_date(kind, record)
        main_hash = source_hash(self._salt(kind), record)
        rows_hash = source_hash(self._salt(LINE_ITEM), record)
        rows: dict[str, list[FingerprintRow]] = {}
        appends = list(facts)
        metadata = self.call.metadata()
        for snapshot in snapshots:
            is_line = snapshot.kind == LINE_ITEM
            rows.setdefault(snapshot.kind, []).append(
                FingerprintRow(snapshot.kleer_id, snapshot.fingerprint, rows_hash if is_line else main_hash, record_date)
            )
            event = NewEvent(
                changed_type(snapshot.kind),
                snapshot.to_event_data(),
                metadata,
                event_id_for(self.connection, self.call.key.callback_id,
                             f"changed/{snapshot.kind}/{snapshot.kleer_id}/{snapshot.fingerprint}"),
            )
            appends.append(AppendRequest(snapshot.stream(self.connection), [event]))
        async with self.parts.pool.acquire() as conn, conn.transaction():
            for snapshot_kind, kind_rows in rows.items():
                await fingerprints.save(conn, self.connection, snapshot_kind, kind_rows)
            await fingerprints.forget(conn, self.connection, LINE_ITEM, list(forget))
            # Appends last: they hold the event log's append lock until this transaction commits.
            if appends:
                await self.parts.store.append_batch(appends, conn=conn)


def _pusher_links_deals(hubspot_object: str) -> bool:
    try:
        association_type(hubspot_object, DEALS.name)
    except KeyError:
        return False
    return True


def _with_company(snapshot: Snapshot, company_id: str) -> Snapshot:
    """The snapshot with its client parent's HubSpot id filled in (the deal's company).

    The pusher would look the client's company up in its id map; a client
    linked by the inbound sync may not be there yet, and the company is known.
    """
    parents = tuple(
        dataclasses.replace(p, hubspot_id=company_id) if p.kind == CLIENT and p.hubspot_id is None else p
        for p in snapshot.parents
    )
    if not any(p.kind == CLIENT for p in parents):
        parents = (*parents, ParentRef(CLIENT, None, company_id))
    return dataclasses.replace(snapshot, parents=parents)


def _push_note(failed: Sequence[PushResult]) -> str:
    if not failed:
        return ""
    first = failed[0]
    return (
        f" (HubSpot refused {len(failed)} record(s) of the push-back, e.g. {first.hubspot_object} {first.kleer_id}: "
        f"{(first.error or '')[:200]}; they wait in the dead-letter queue)"
    )


def _revision(agreement: Mapping[str, Any]) -> int:
    """A Kleer agreement's revision number (1 for a new agreement)."""
    try:
        return int(agreement.get("revision-nr") or 1)
    except (TypeError, ValueError):
        return 1
