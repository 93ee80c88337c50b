"""The id map's writes: rows of records new to it by COPY, and the upsert when another writer got there first."""

from __future__ import annotations

import asyncpg

from services.outbound import idmap
from services.outbound.idmap import COPY_NEW_IDS_FROM, IdRow


def _rows(count: int, parent: str = "client:1") -> list[IdRow]:
    return [IdRow("c", "invoice", str(i), "deals", f"d{i}", f"f{i}", [parent]) for i in range(count)]


async def _stored(pool: asyncpg.Pool) -> dict[str, tuple[str, str, list[str]]]:
    rows = await pool.fetch("SELECT kleer_id, hubspot_id, pushed_fingerprint, associated FROM hubspot_ids")
    return {r[0]: (r[1], r[2], sorted(r[3])) for r in rows}


async def test_new_records_are_stored_whole_with_the_known_ones_upserted(pool: asyncpg.Pool) -> None:
    count = COPY_NEW_IDS_FROM + 10
    async with pool.acquire() as conn, conn.transaction():
        await idmap.save_ids(conn, _rows(5))  # known before the batch
    rows = [IdRow("c", "invoice", "0", "deals", "d0", "g0", ["client:2"]), *_rows(count)[5:]]
    async with pool.acquire() as conn, conn.transaction():
        await idmap.save_ids(conn, rows, new={("c", "invoice", str(i)) for i in range(5, count)})
    stored = await _stored(pool)
    assert len(stored) == count
    assert stored["0"] == ("d0", "g0", ["client:1", "client:2"])  # upserted: associations merged
    assert stored[str(count - 1)] == (f"d{count - 1}", f"f{count - 1}", ["client:1"])


async def test_a_new_record_another_writer_stored_meanwhile_is_upserted_and_the_transaction_goes_on(
    pool: asyncpg.Pool,
) -> None:
    count = COPY_NEW_IDS_FROM + 10
    async with pool.acquire() as conn, conn.transaction():  # another pusher, mid-rebalance
        await idmap.save_ids(conn, [IdRow("c", "invoice", "7", "deals", "d7", "f7", ["client:9"])])
    async with pool.acquire() as conn, conn.transaction():
        await idmap.save_ids(conn, _rows(count), new={("c", "invoice", str(i)) for i in range(count)})
        await conn.execute("SELECT 1")  # the failed COPY was rolled back to its savepoint only
    stored = await _stored(pool)
    assert len(stored) == count
    assert stored["7"] == ("d7", "f7", ["client:1", "client:9"])
