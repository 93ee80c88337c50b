"""A Kleer client for a HubSpot company, created exactly once: by the inbound handlers or a workflow action.

Kleer has no idempotency keys, and a create can end without us knowing its
fate: the answer was lost, the call timed out, or the process died while the
request was on its way (Kleer may store it after we gave up, even seconds
later). So every create of a company's client goes through
``create_client_once``, whichever worker makes it:

1. it holds a Postgres advisory lock for the company for the whole procedure,
   so two live workers (two handler instances, a handler and a workflow
   action, two actions) never decide at the same time; the lock dies with a
   dead worker's session;
2. it reads the company's row in ``inbound_creations``: a ``kleer_id`` there is
   the answer. ``unsettled_until`` set means an earlier attempt may have
   stored a client: it is looked up by its ``foreign-id`` (``hubspot-company-
   <id>``, written on every create); when it is not there yet and that
   attempt's request may still land (``unsettled_until`` is in the future), the
   worker waits for that moment and looks again rather than creating a second
   client;
3. before sending the create it commits ``unsettled_until = now + call_seconds
   + land_seconds`` (the call is cut off after ``call_seconds``; Kleer is given
   ``land_seconds`` more to store a request it received), then records the new
   id. A refusal Kleer certainly did not act on (4xx, all attempts 429/503,
   no connection) clears ``unsettled_until``: nothing can land.

Guarantee: as long as Kleer stores a received create within ``land_seconds``
after our cut-off, one company gets at most one client from us.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from libs.kleer.errors import KleerError, KleerUnavailable
from libs.observability.logging import get_logger

log = get_logger(__name__)

FOREIGN_ID_PREFIX = "hubspot-company-"
COMPANIES = "companies"
_KEY = "connection = $1 AND hubspot_object = $2 AND hubspot_id = $3"


class KleerClients(Protocol):
    """What creating a client needs of ``KleerClient.clients``."""

    async def create(self, record: Any) -> int: ...

    def pages(self) -> AsyncIterator[list[Any]]: ...


@dataclass(frozen=True)
class CreationTiming:
    call_seconds: float = 30.0  # a create call is cut off after this (its outcome is then unknown)
    land_seconds: float = 15.0  # how long Kleer may still store a create after our cut-off

    @property
    def unsettled_seconds(self) -> float:
        """From sending a create until its fate is certain."""
        return self.call_seconds + self.land_seconds


@dataclass(frozen=True)
class ClientCreated:
    kleer_id: str
    created: bool  # False: the client of an earlier attempt or worker, found


class CreationBusy(Exception):
    """Another worker is creating this client, or an earlier create may still land: try again later."""


def foreign_id_of(company_id: str) -> str:
    """The ``foreign-id`` our clients carry: how an unconfirmed create is found again."""
    return f"{FOREIGN_ID_PREFIX}{company_id}"


async def create_client_once(
    pool: asyncpg.Pool,
    clients: KleerClients,
    *,
    connection: str,
    company_id: str,
    body: Mapping[str, Any],
    timing: CreationTiming,
    patience: float,
) -> ClientCreated:
    """The company's Kleer client: found, or created now (see the module docstring).

    Waits at most ``patience`` seconds (for another worker, or for an earlier create to land), else
    raises ``CreationBusy``. Kleer's errors are raised as they come (``KleerUnavailable`` with
    ``ambiguous=True`` when a create's outcome is unknown: the next call finds or waits for it).
    """
    deadline = time.monotonic() + patience
    key = (connection, COMPANIES, company_id)
    foreign_id = foreign_id_of(company_id)
    async with pool.acquire() as conn:
        await _lock(conn, key, patience)
        try:
            row = await conn.fetchrow(
                f"SELECT kleer_id, unsettled_until, clock_timestamp() AS now FROM inbound_creations WHERE {_KEY}", *key
            )
            if row is not None and row["kleer_id"]:
                return ClientCreated(str(row["kleer_id"]), False)
            if row is not None and row["unsettled_until"] is not None:
                found = await _find(clients, foreign_id)
                wait = (row["unsettled_until"] - row["now"]).total_seconds()
                if found is None and wait > 0:
                    if time.monotonic() + wait > deadline:
                        raise CreationBusy(
                            f"an earlier create of the Kleer client for company {company_id} may still land in "
                            f"Kleer; it is looked for again after {wait:.0f} s"
                        )
                    log.info("waiting for an unconfirmed Kleer create before creating again",
                             company_id=company_id, seconds=round(wait, 2))
                    await asyncio.sleep(wait)
                    found = await _find(clients, foreign_id)
                if found is not None:
                    await _finish(conn, key, found)
                    log.info("found the client of an unconfirmed create", company_id=company_id, kleer_id=found)
                    return ClientCreated(found, False)
            new_id = await _create(conn, key, clients, {**body, "foreign-id": foreign_id}, timing)
            await _finish(conn, key, new_id)
            return ClientCreated(new_id, True)
        finally:
            await _unlock(conn, key)


async def _create(
    conn: asyncpg.Connection,
    key: tuple[str, str, str],
    clients: KleerClients,
    body: Mapping[str, Any],
    timing: CreationTiming,
) -> str:
    await conn.execute(
        "INSERT INTO inbound_creations (connection, hubspot_object, hubspot_id, foreign_id, unsettled_until) "
        "VALUES ($1, $2, $3, $4, clock_timestamp() + $5::interval) "
        "ON CONFLICT (connection, hubspot_object, hubspot_id) DO UPDATE "
        "SET foreign_id = EXCLUDED.foreign_id, unsettled_until = EXCLUDED.unsettled_until",
        *key,
        body["foreign-id"],
        dt.timedelta(seconds=timing.unsettled_seconds),
    )
    try:
        return str(await asyncio.wait_for(clients.create(body), timing.call_seconds))
    except TimeoutError:
        raise KleerUnavailable(
            f"the create took longer than {timing.call_seconds:g} s; it may or may not have been stored: "
            "the next attempt looks it up by its foreign-id",
            attempts=1,
            ambiguous=True,
            record=body,
        ) from None
    except KleerError as exc:
        if _not_stored(exc):
            await conn.execute(f"UPDATE inbound_creations SET unsettled_until = NULL WHERE {_KEY}", *key)
        raise


def _not_stored(exc: KleerError) -> bool:
    """Kleer certainly did not store the record (a 4xx, or every attempt refused before processing)."""
    if isinstance(exc, KleerUnavailable):
        return not exc.ambiguous
    return exc.status is not None and 400 <= exc.status < 500


async def _find(clients: KleerClients, foreign_id: str) -> str | None:
    """The client an earlier attempt created (scans the client list: only after an unconfirmed create)."""
    found: list[int] = []
    async for page in clients.pages():
        found.extend(int(c["id"]) for c in page if c.get("foreign-id") == foreign_id)
    return str(min(found)) if found else None


async def _finish(conn: asyncpg.Connection, key: tuple[str, str, str], kleer_id: str) -> None:
    await conn.execute(
        f"UPDATE inbound_creations SET kleer_id = $4, finished_at = now(), unsettled_until = NULL WHERE {_KEY}",
        *key,
        kleer_id,
    )


def _lock_name(key: tuple[str, str, str]) -> str:
    return "inbound-creation/" + "/".join(key)


async def _lock(conn: asyncpg.Connection, key: tuple[str, str, str], patience: float) -> None:
    try:
        async with conn.transaction():  # the session lock outlives it; lock_timeout is local to it
            await conn.execute(f"SET LOCAL lock_timeout = {max(1, int(patience * 1000))}")
            await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", _lock_name(key))
    except asyncpg.LockNotAvailableError:
        raise CreationBusy(
            f"another worker is creating the Kleer client for company {key[2]} right now"
        ) from None


async def _unlock(conn: asyncpg.Connection, key: tuple[str, str, str]) -> None:
    try:
        await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", _lock_name(key))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        # The session is gone (and its locks with it) or will be reset when the pool takes it back.
        log.warning("could not release the creation lock; the session ends it", error=str(exc))
