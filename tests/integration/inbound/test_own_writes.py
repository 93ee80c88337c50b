"""The own-write log: a webhook value is our echo only if it is the value we last wrote, recently."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from services.own_writes import ECHO_WINDOW, echoes, record_own_writes

MIGRATION_015 = Path(__file__).resolve().parents[3] / "libs/events/migrations/015_own_writes_per_record.sql"


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def test_only_the_value_we_last_wrote_to_that_property_of_that_record_is_an_echo(
    conn: asyncpg.Connection,
) -> None:
    await record_own_writes(conn, "c1", "companies", [("101", {"name": "Acme AB", "phone": "+46 8 1"})])
    await record_own_writes(conn, "c1", "companies", [("102", {"name": "Beta AB"})])
    found = await echoes(conn, "c1", "companies", [
        ("101", "name", "Acme AB"),      # ours
        ("101", "phone", "+46 8 2"),     # another value
        ("101", "city", "Lund"),         # a property we never wrote
        ("102", "name", "Acme AB"),      # another record's value
        ("103", "name", "Acme AB"),      # a record we never wrote
    ])
    assert found == {("101", "name")}
    assert await echoes(conn, "c2", "companies", [("101", "name", "Acme AB")]) == set()  # another connection
    assert await echoes(conn, "c1", "projects", [("101", "name", "Acme AB")]) == set()   # another object type


async def test_a_later_write_replaces_that_property_and_keeps_the_others(conn: asyncpg.Connection) -> None:
    await record_own_writes(conn, "c1", "companies", [("101", {"name": "Acme AB", "phone": "+46 8 1"})])
    await record_own_writes(conn, "c1", "companies", [("101", {"name": "Acme Group AB"}), ("101", {"city": ""})])
    found = await echoes(conn, "c1", "companies", [
        ("101", "name", "Acme AB"), ("101", "name", "Acme Group AB"), ("101", "phone", "+46 8 1"),
        ("101", "city", None),  # an emptied property echoes as no value
    ])
    # the name's latest value, the phone written before, the emptied city; not the name's earlier value
    assert found == {("101", "name"), ("101", "phone"), ("101", "city")}
    assert await echoes(conn, "c1", "companies", [("101", "name", "Acme AB")]) == set()
    assert await conn.fetchval("SELECT count(*) FROM own_write_records") == 1  # one row per record


async def test_a_property_written_as_no_value_echoes_as_an_empty_one(conn: asyncpg.Connection) -> None:
    await record_own_writes(conn, "c1", "companies", [("101", {"city": None, "name": "Acme AB"})])  # type: ignore[dict-item]
    found = await echoes(conn, "c1", "companies", [("101", "city", ""), ("101", "city", "Lund")])
    assert found == {("101", "city")}


async def test_a_write_older_than_the_echo_window_is_no_longer_an_echo(conn: asyncpg.Connection) -> None:
    await record_own_writes(conn, "c1", "companies", [("101", {"name": "Acme AB", "phone": "+46 8 1"})])
    old = int(ECHO_WINDOW.total_seconds()) + 60
    await conn.execute(  # the name was written longer ago than the window; the phone just now
        "UPDATE own_write_records SET properties = jsonb_set(properties, '{name,1}', "
        "to_jsonb((properties->'name'->>1)::bigint - $1))",
        old,
    )
    found = await echoes(conn, "c1", "companies", [("101", "name", "Acme AB"), ("101", "phone", "+46 8 1")])
    assert found == {("101", "phone")}


async def test_the_migration_carries_the_per_property_log_over(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO own_writes (connection, object_type, object_id, property, value, written_at) VALUES "
        "('c1', 'companies', '101', 'name', 'Acme AB', now()), "
        "('c1', 'companies', '101', 'phone', '+46 8 1', now() - interval '10 days')"
    )
    await conn.execute(MIGRATION_015.read_text())  # as `db migrate` ran it over the old table
    found = await echoes(conn, "c1", "companies", [("101", "name", "Acme AB"), ("101", "phone", "+46 8 1")])
    assert found == {("101", "name")}  # the phone was written before the window
