"""The sweep of waiting associations: exactly those whose both ends are in HubSpot, oldest first, each found by
primary-key look-ups whatever the table statistics say (they lag behind a full sync's growing tables)."""

from __future__ import annotations

import json

import asyncpg

from services.outbound import idmap
from services.outbound.idmap import _READY_WAITING_SQL

IDS = 20_000


async def _seed(pool: asyncpg.Pool) -> None:
    await pool.execute("ANALYZE hubspot_ids; ANALYZE pending_associations")  # statistics of empty tables
    await pool.execute(
        "INSERT INTO hubspot_ids (connection, kind, kleer_id, hubspot_object, hubspot_id, removed) "
        "SELECT 'c', k.kind, i::text, k.kind || 's', k.kind || i, k.kind = 'invoice' AND i % 10 = 9 "
        "FROM generate_series(1, $1) AS i, (VALUES ('invoice'), ('line_item')) AS k(kind)",
        IDS,
    )
    # Line item i waits for invoice i (i <= 300), or for invoice i + IDS (none such) past that.
    await pool.execute(
        "INSERT INTO pending_associations (connection, from_kind, from_kleer_id, to_kind, to_kleer_id, created_at) "
        "SELECT 'c', 'line_item', i::text, 'invoice', (CASE WHEN i <= 300 THEN i ELSE i + $1 END)::text, "
        "  now() - make_interval(secs => 1000 - i) "
        "FROM generate_series(1, 600) AS i",
        IDS,
    )


async def test_the_sweep_finds_the_ready_ones_oldest_first_by_primary_key(pool: asyncpg.Pool) -> None:
    await _seed(pool)

    ready = await idmap.ready_waiting(pool)
    expected = [i for i in range(1, 301) if i % 10 != 9]  # invoice i % 10 == 9 was removed from HubSpot
    assert [int(r.waiting.child_kleer_id) for r in ready] == expected
    assert {(r.child_hubspot_id, r.parent_hubspot_id) for r in ready} == {
        (f"line_item{i}", f"invoice{i}") for i in expected}
    assert [int(r.waiting.child_kleer_id) for r in await idmap.ready_waiting(pool, limit=5)] == expected[:5]

    plan = json.loads(await pool.fetchval(f"EXPLAIN (FORMAT JSON) {_READY_WAITING_SQL}", 10_000))
    scans = [(node["Relation Name"], node.get("Index Name"), node.get("Index Cond", ""))
             for node in _nodes(plan[0]["Plan"]) if node.get("Relation Name") == "hubspot_ids"]
    assert len(scans) == 2
    for _, index, condition in scans:
        assert index == "hubspot_ids_pkey"
        assert all(column in condition for column in ("connection", "kind", "kleer_id"))


def _nodes(plan: dict) -> list[dict]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]
