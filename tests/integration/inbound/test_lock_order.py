"""Commits that write the same records' bookkeeping wait for each other; they never deadlock.

Each record's writes in an inbound commit lock its rows (the link, the HubSpot id
mark, the fingerprint). Two batches holding the same records, in whatever order
their webhooks came, lock them in one order, by record: the second commit waits
for the first instead of Postgres aborting one of them to break a deadlock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from libs.events.consumer import SqlWrite
from libs.events.envelope import RecordedEvent
from services.inbound.webhook_events import WEBHOOK_RECEIVED
from tests.integration.operations.harness import SyncHarness
from tests.integration.operations.harness import sync as sync  # the fixture


async def _commit_slowly(conn: asyncpg.Connection, writes: Sequence[SqlWrite]) -> None:
    """The writes in one transaction, a pause after each (so two such commits interleave)."""
    async with conn.transaction():
        for write in writes:
            await write(conn)
            await asyncio.sleep(0.3)


async def test_two_batches_holding_the_same_records_in_opposite_orders_commit_side_by_side(
    sync: SyncHarness,
) -> None:
    kleer_ids = [await sync.kleer.clients.create({"name": f"Kungshamn Rökeri {n} AB", "currency-type": "SEK"})
                 for n in (1, 2)]
    await sync.sync(["client"])
    companies = [sync.company_of(kleer_id).id for kleer_id in kleer_ids]
    for n, company in enumerate(companies):
        sync.hubspot_sim.ui_edit("companies", company, {"name": f"Kungshamn Rökeri {n + 1} & Söner AB"})
    recorded = [e for e in await sync.record_webhooks() if e.type == WEBHOOK_RECEIVED]

    def of(company: object) -> list[RecordedEvent]:
        return [e for e in recorded if str(e.data["objectId"]) == str(company)]

    assert of(companies[0]) and of(companies[1])
    forward = await sync.handlers.handle([*of(companies[0]), *of(companies[1])])
    backward = await sync.handlers.handle([*of(companies[1]), *of(companies[0])])
    assert len(forward.writes) == len(backward.writes) == 2  # one per record

    async with sync.pool.acquire() as first, sync.pool.acquire() as second:
        # Before the writes were put in one order, the second commit locked the other record first, and
        # Postgres aborted one of them (DeadlockDetectedError) after its deadlock timeout.
        await asyncio.wait_for(
            asyncio.gather(_commit_slowly(first, forward.writes), _commit_slowly(second, backward.writes)), 30
        )
    for company, kleer_id in zip(companies, kleer_ids, strict=True):
        linked = await sync.pool.fetchval(
            "SELECT kleer_id FROM inbound_links WHERE hubspot_object = 'companies' AND hubspot_id = $1", str(company)
        )
        assert linked == str(kleer_id)

