"""Running action calls: claim by callbackId, answer within the time budget or BLOCK, finish in the background.

``ActionExecutor.answer`` is what the HTTP handler awaits. For a new callbackId
it starts the work as a task of its own (never cancelled when the request
gives up) and waits at most ``budget_s``:

- the work finished: its answer (``SUCCESS`` / ``FAIL_CONTINUE``);
- it did not: ``BLOCK`` with ``hs_expiration_duration``; when the work
  finishes, its answer goes to ``POST /automation/v4/actions/callbacks/{id}/complete``.

A callbackId seen before gets the stored answer, ``BLOCK`` while the call is
blocked, or waits (the same budget) for the worker on this or another pod.
Transient failures (Kleer or HubSpot unavailable) are retried with backoff until
the call's expiration; the worker renews a lease while it runs, and a sweeper on
every pod takes over calls whose worker died and resends callback completions
that did not get through.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from libs.events.envelope import NewEvent, RecordedEvent
from libs.events.store import AppendRequest, EventStoreError
from libs.hubspot.errors import HubSpotError
from libs.mapping.objects import AGREEMENT, CLIENT, INVOICE, PROJECT
from libs.observability import metrics
from libs.observability.logging import bind_correlation_id, get_logger
from libs.records import RecordRef
from services.inbound import bookkeeping
from services.inbound.actions import catalog
from services.inbound.actions.answers import ExecutionState, Outcome, block_fields, iso_duration
from services.inbound.actions.crm import is_transient
from services.inbound.actions.failures import AmbiguousCreate, BusinessError, LostClaim, Transient
from services.inbound.actions.ledger import BLOCKED, DONE, CallKey, CallRow, correlation_for, event_id_for
from services.inbound.actions.request import ActionRequest, InputProblem, parse_inputs, parse_request
from services.inbound.actions.workflows import ACTOR, ActionParts, ActionWork, Call, Done
from services.own_writes import record_own_writes

log = get_logger(__name__)

RECEIVED = "WorkflowActionReceived"
BLOCKED_EVENT = "WorkflowActionBlocked"
COMPLETED = "WorkflowActionCompleted"
CALLBACK_COMPLETED = "WorkflowActionCallbackCompleted"
CALLBACK_REFUSED = "WorkflowActionCallbackRefused"

#: The kind of Kleer record each action creates or changes (named in its events, for the audit).
KLEER_TYPES: dict[str, str] = {
    catalog.CREATE_CLIENT: CLIENT,
    catalog.CREATE_INVOICE: INVOICE,
    catalog.CREATE_AGREEMENT: AGREEMENT,
    catalog.UPDATE_AGREEMENT: AGREEMENT,
    catalog.CREATE_PROJECT: PROJECT,
}
DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, EventStoreError)


@dataclass(frozen=True)
class ActionSettings:
    """Time limits of the workflow actions (tests shorten them)."""

    budget_s: float = 4.0  # answer HubSpot within this, else BLOCK
    expiration_s: float = 86_400.0  # hs_expiration_duration of a BLOCK; the work gives up after it
    lease_s: float = 60.0  # a worker silent this long is taken over by another
    retry_base_s: float = 2.0  # first retry delay after a transient failure (doubles, with jitter)
    retry_cap_s: float = 300.0
    sweep_every_s: float = 15.0
    completion_retry_s: float = 30.0  # wait before resending a callback completion that failed
    duplicate_poll_s: float = 0.05  # how often a duplicate delivery looks for another pod's answer
    stop_grace_s: float = 5.0  # on shutdown, running calls get this long before they are cancelled

    def retry_delay(self, attempt: int) -> float:
        ceiling: float = min(self.retry_cap_s, self.retry_base_s * 2.0 ** max(0, attempt - 1))
        return ceiling / 2 + random.random() * ceiling / 2


def hubspot_kind(object_type: str) -> str:
    """``DEAL`` -> ``deal`` (the kind in ``{connection}/hubspot-deal/{id}`` streams)."""
    return object_type.lower().replace("_", "-")


class ActionExecutor:
    def __init__(self, parts: ActionParts, settings: ActionSettings) -> None:
        self.parts = parts
        self.settings = settings
        self.owner = uuid.uuid4()
        self._tasks: dict[CallKey, asyncio.Task[Mapping[str, str]]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._sweeper is None:
            self._stopping.clear()
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="workflow-action-sweeper")

    async def stop(self) -> None:
        self._stopping.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        running = list(self._tasks.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=self.settings.stop_grace_s)
            for task in pending:  # taken over by another pod once its lease runs out
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # --- answering a delivery ---------------------------------------------------------------------------

    async def answer(
        self, connection: str, definition: catalog.ActionDefinition, request: ActionRequest
    ) -> Mapping[str, str]:
        """The outputFields to answer this delivery with (raises on database failure: answer 503)."""
        key = CallKey(connection, request.callback_id)
        received = self._received_event(key, definition, request)
        stream = RecordRef("hubspot", hubspot_kind(request.object_type), request.object_id).stream(connection)
        row, new = await self.parts.ledger.claim(
            key,
            action=definition.name,
            object_type=request.object_type,
            object_id=request.object_id,
            request=request.raw,
            owner=self.owner,
            lease_s=self.settings.lease_s,
            expires_in_s=self.settings.expiration_s,
            received=AppendRequest(stream, [received]),
        )
        task = self._tasks.get(key)
        if new:
            task = self._start(row, definition, request)
        elif row.state == DONE and row.answer is not None:
            return row.answer
        elif row.state == BLOCKED:
            return self._block_answer()
        return await self._wait(key, task)

    def _received_event(
        self, key: CallKey, definition: catalog.ActionDefinition, request: ActionRequest
    ) -> NewEvent:
        return NewEvent(
            RECEIVED,
            {
                "callback_id": key.callback_id,
                "action": definition.name,
                "object_type": request.object_type,
                "object_id": request.object_id,
                "input_fields": dict(request.input_fields),
                "workflow_id": request.workflow_id,
                "definition_id": request.definition_id,
                "portal_id": request.portal_id,
            },
            {"correlation_id": str(correlation_for(key.connection, key.callback_id)), "actor": "hubspot-workflow",
             "source": "hubspot"},
            event_id_for(key.connection, key.callback_id, "received"),
        )

    def _block_answer(self) -> dict[str, str]:
        return block_fields(
            iso_duration(self.settings.expiration_s),
            "Kleer is slow to answer; the result follows when the work is done",
        )

    async def _wait(self, key: CallKey, task: asyncio.Task[Mapping[str, str]] | None) -> Mapping[str, str]:
        budget = self.settings.budget_s
        if task is not None:
            with contextlib.suppress(TimeoutError, LostClaim):
                return await asyncio.wait_for(asyncio.shield(task), budget)
        else:  # the worker is another pod (or a task that already ended): watch the row
            deadline = time.monotonic() + budget
            while time.monotonic() < deadline:
                row = await self.parts.ledger.load(key)
                if row.state == DONE and row.answer is not None:
                    return row.answer
                if row.state == BLOCKED:
                    return self._block_answer()
                await asyncio.sleep(self.settings.duplicate_poll_s)
        row = await self.parts.ledger.block(key)
        if row.state == DONE and row.answer is not None:
            return row.answer
        await self._record_blocked(row)
        return self._block_answer()

    async def _record_blocked(self, row: CallRow) -> None:
        event = NewEvent(
            BLOCKED_EVENT,
            {"callback_id": row.key.callback_id, "action": row.action, "budget_s": self.settings.budget_s,
             "expires_at": row.expires_at.isoformat()},
            {"correlation_id": str(row.correlation_id), "actor": ACTOR, "source": "hubspot"},
            event_id_for(row.key.connection, row.key.callback_id, "blocked"),
        )
        stream = RecordRef("hubspot", hubspot_kind(row.object_type), row.object_id).stream(row.key.connection)
        try:
            await self.parts.store.append(stream, [event])
        except DATABASE_ERRORS as exc:  # the BLOCK answer stands; the event is only for the audit
            log.warning("workflow action BLOCK not recorded", callback_id=row.key.callback_id, error=str(exc))

    # --- the work ---------------------------------------------------------------------------------------

    def _start(
        self, row: CallRow, definition: catalog.ActionDefinition, request: ActionRequest
    ) -> asyncio.Task[Mapping[str, str]]:
        task = asyncio.create_task(self._run(row, definition, request), name=f"workflow-action {row.key.callback_id}")
        self._tasks[row.key] = task
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[Mapping[str, str]]) -> None:
        for key, known in list(self._tasks.items()):
            if known is task:
                del self._tasks[key]
        if not task.cancelled() and task.exception() is not None and not isinstance(task.exception(), LostClaim):
            log.error("workflow action task failed", error=repr(task.exception()))

    async def _heartbeat(self, key: CallKey) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            with contextlib.suppress(*DATABASE_ERRORS):
                if not await self.parts.ledger.heartbeat(key, self.owner, self.settings.lease_s):
                    return

    async def _run(
        self, row: CallRow, definition: catalog.ActionDefinition, request: ActionRequest
    ) -> Mapping[str, str]:
        key = row.key
        bind_correlation_id(str(row.correlation_id))  # the call's log lines and Kleer/HubSpot requests
        heartbeat = asyncio.create_task(self._heartbeat(key))
        started = time.monotonic()
        try:
            attempt = row.attempts
            while True:
                attempt += 1
                try:
                    return await self._attempt(row, definition, request)
                except LostClaim:
                    log.info("workflow action taken over by another worker", callback_id=key.callback_id)
                    raise
                except (Transient, *DATABASE_ERRORS) as exc:
                    message = exc.message if isinstance(exc, Transient) else f"{type(exc).__name__}: {exc}"
                    delay = self.settings.retry_delay(attempt)
                    expired = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay) >= row.expires_at
                    log.warning("workflow action will retry", callback_id=key.callback_id, action=definition.name,
                                attempt=attempt, delay_s=round(delay, 2), problem=message, giving_up=expired)
                    with contextlib.suppress(*DATABASE_ERRORS):
                        await self.parts.ledger.note_retry(key, message, delay)
                    if expired:
                        outcome = Outcome.failure(
                            f"Gave up after {attempt} attempt(s) over {int(time.monotonic() - started)} s: {message}"
                        )
                        return await self._finish_with_retries(row, request, Done(outcome))
                    await asyncio.sleep(delay)
        finally:
            heartbeat.cancel()

    async def _finish_with_retries(self, row: CallRow, request: ActionRequest, done: Done) -> Mapping[str, str]:
        while True:
            try:
                return await self._finish(row, request, await self._cause(row), done)
            except DATABASE_ERRORS as exc:
                log.warning("workflow action answer not stored; retrying", callback_id=row.key.callback_id,
                            error=str(exc))
                await asyncio.sleep(self.settings.retry_delay(1))

    async def _cause(self, row: CallRow) -> RecordedEvent:
        received = await self.parts.store.get(event_id_for(row.key.connection, row.key.callback_id, "received"))
        if received is None:  # pragma: no cover - claimed together with the row
            raise Transient("the WorkflowActionReceived event is missing")
        return received

    async def _attempt(
        self, row: CallRow, definition: catalog.ActionDefinition, request: ActionRequest
    ) -> Mapping[str, str]:
        received = await self._cause(row)
        try:
            inputs = parse_inputs(definition, request.input_fields)
            call = Call(row.key, self.owner, definition, request, inputs, received, row.correlation_id)
            done = await ActionWork(self.parts, call).run()
        except InputProblem as exc:
            done = Done(Outcome.failure(exc.message))
        except BusinessError as exc:
            done = Done(await self._failure_outcome(row.key, exc.message, exc.kleer_id))
        except AmbiguousCreate as exc:
            log.error("workflow action: Kleer create unconfirmed", callback_id=row.key.callback_id,
                      action=definition.name, problem=exc.message)
            done = Done(Outcome.failure(
                f"{exc.message}. Kleer may or may not have stored the record: look for it in Kleer; if it is "
                "there, put its id on the HubSpot record, else run the workflow again"))
        except HubSpotError as exc:  # a HubSpot error the workflow did not translate
            if is_transient(exc):
                raise Transient(str(exc)) from exc
            done = Done(await self._failure_outcome(row.key, f"HubSpot refused a request: {exc.message}", None))
        except (LostClaim, Transient, *DATABASE_ERRORS):
            raise
        except Exception as exc:
            log.exception("workflow action failed unexpectedly", callback_id=row.key.callback_id,
                          action=definition.name)
            done = Done(await self._failure_outcome(
                row.key, f"Internal error in kleer-sync ({type(exc).__name__}); the operators have the details", None))
        return await self._finish(row, request, received, done)

    async def _failure_outcome(self, key: CallKey, message: str, kleer_id: object) -> Outcome:
        if kleer_id is None:
            kleer_id = (await self.parts.ledger.load(key)).kleer_id  # a record made before the failure
        return Outcome.failure(message, kleer_id)

    async def _finish(
        self, row: CallRow, request: ActionRequest, received: RecordedEvent, done: Done
    ) -> Mapping[str, str]:
        """Commit the answer with everything the work recorded; send the callback completion if owed."""
        key, connection = row.key, row.key.connection
        fields = done.outcome.output_fields()
        completed = NewEvent(
            COMPLETED,
            {"callback_id": key.callback_id, "action": row.action, "object_type": row.object_type,
             "object_id": row.object_id, "kleer_type": KLEER_TYPES[row.action], **fields},
            {"correlation_id": str(row.correlation_id), "causation_id": str(received.event_id), "actor": ACTOR,
             "source": "hubspot"},
            event_id_for(connection, key.callback_id, "completed"),
        )
        async with self.parts.pool.acquire() as conn, conn.transaction():
            for hubspot_object, hubspot_id, props in done.own_writes:
                await record_own_writes(conn, connection, hubspot_object, [(hubspot_id, props)])
            for company_id, client_id in done.client_links:
                await bookkeeping.upsert_link(conn, connection, "companies", company_id, "client", client_id)
            owed, answer = await self.parts.ledger.finish(conn, key, fields, self.settings.lease_s)
            # Appends last: they hold the event log's append lock until this transaction commits.
            stream = RecordRef("hubspot", hubspot_kind(row.object_type), row.object_id).stream(connection)
            await self.parts.store.append_batch([AppendRequest(stream, [completed])], conn=conn)
        log.info("workflow action finished", callback_id=key.callback_id, action=row.action,
                 state=answer.get("hs_execution_state"), kleer_id=answer.get("kleer_id"), by_callback=owed)
        if owed:
            await self.complete(row, answer)
        return answer

    # --- callback completions ---------------------------------------------------------------------------

    async def complete(self, row: CallRow, answer: Mapping[str, str]) -> None:
        """Send a blocked call's answer to HubSpot's callback API (retried later when HubSpot is down)."""
        key = row.key
        outcome = answer.get("hs_execution_state", "").lower()
        try:
            await self.parts.hubspot.complete_callback(key.callback_id, answer)
        except HubSpotError as exc:
            if is_transient(exc):
                log.warning("callback completion failed; will retry", callback_id=key.callback_id, error=str(exc))
                with contextlib.suppress(*DATABASE_ERRORS):
                    await self.parts.ledger.completion_failed(key, str(exc), self.settings.completion_retry_s)
                metrics.WORKFLOW_ACTIONS.labels(action=row.action, outcome="completion_retry").inc()
                return
            log.error("HubSpot refused the callback completion", callback_id=key.callback_id, error=str(exc))
            await self.parts.ledger.completion_sent(key, error=str(exc))
            await self._record_completion(row, CALLBACK_REFUSED, {"error": exc.message, "status": exc.status})
            metrics.WORKFLOW_ACTIONS.labels(action=row.action, outcome="completion_refused").inc()
            return
        await self.parts.ledger.completion_sent(key)
        await self._record_completion(row, CALLBACK_COMPLETED, {"hs_execution_state": answer.get("hs_execution_state")})
        metrics.WORKFLOW_ACTIONS.labels(action=row.action, outcome=f"completed_{outcome}").inc()

    async def _record_completion(self, row: CallRow, event_type: str, data: Mapping[str, Any]) -> None:
        event = NewEvent(
            event_type,
            {"callback_id": row.key.callback_id, "action": row.action, **data},
            {"correlation_id": str(row.correlation_id), "actor": ACTOR, "source": "hubspot"},
            event_id_for(row.key.connection, row.key.callback_id, event_type),
        )
        stream = RecordRef("hubspot", hubspot_kind(row.object_type), row.object_id).stream(row.key.connection)
        with contextlib.suppress(*DATABASE_ERRORS):
            await self.parts.store.append(stream, [event])

    # --- the sweeper ------------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Take over abandoned calls and resend owed completions once; returns how many were picked up."""
        picked = 0
        for row in await self.parts.ledger.take_over(self.owner, self.settings.lease_s):
            if row.key in self._tasks:
                continue
            try:
                request = parse_request(orjson.dumps(dict(row.request)))
            except Exception as exc:  # pragma: no cover - it was parsed when it arrived
                log.error("stored workflow action call unreadable", callback_id=row.key.callback_id, error=str(exc))
                continue
            definition = catalog.definition(row.action)
            if definition is None:  # pragma: no cover - an action removed since
                continue
            log.info("taking over a workflow action", callback_id=row.key.callback_id, action=row.action)
            self._start(row, definition, request)
            picked += 1
        for row in await self.parts.ledger.due_completions(self.settings.completion_retry_s):
            if row.answer is not None:
                await self.complete(row, row.answer)
                picked += 1
        return picked

    async def _sweep_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sweep()
            except DATABASE_ERRORS as exc:
                log.warning("workflow action sweep failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.sweep_every_s)

    @property
    def running(self) -> int:
        return len(self._tasks)


__all__ = ["ActionExecutor", "ActionSettings", "ExecutionState"]
