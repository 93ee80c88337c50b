from __future__ import annotations

import uuid

import asyncpg
import pytest

from libs.events.migrate import available_migrations, migrate


async def _schema(dsn: str) -> list[tuple[str, str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY 1, 2"
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]
    finally:
        await conn.close()


async def test_migrations_applied_twice_give_no_error_and_no_change(empty_database_url: str) -> None:
    first = await migrate(empty_database_url, log=None)
    assert [m.version for m in first] == [m.version for m in available_migrations()]
    schema = await _schema(empty_database_url)
    assert ("events", "position", "bigint") in schema
    second = await migrate(empty_database_url, log=None)
    assert second == []
    assert await _schema(empty_database_url) == schema


async def test_a_wrong_database_url_gives_a_clear_error() -> None:
    from libs.events.migrate import MigrationError

    with pytest.raises(MigrationError, match=r"cannot connect to PostgreSQL.*DATABASE_URL"):
        await migrate("postgresql://postgres@127.0.0.1:1/nowhere", log=None)


async def test_migrate_as_the_owner_grants_the_services_role_an_append_only_log_and_no_ddl(
    empty_database_url: str,
) -> None:
    from urllib.parse import urlparse

    from libs.events.envelope import NewEvent
    from libs.events.store import PostgresEventStore, create_pool
    from tests.integration.operations.harness import run_cli

    role = f"ks_grant_{uuid.uuid4().hex[:8]}"
    owner = await asyncpg.connect(empty_database_url)
    await owner.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE')
    parsed = urlparse(empty_database_url)
    service_dsn = parsed._replace(netloc=f"{role}@{parsed.hostname}:{parsed.port or 5432}").geturl()
    env = {"DATABASE_URL": service_dsn, "DATABASE_OWNER_URL": empty_database_url}
    try:
        for _ in range(2):  # safe to run twice
            migrated = await run_cli("db", "migrate", env=env)
            assert migrated.code == 0, migrated.stderr.decode()
            assert f"granted role {role!r}".encode() in migrated.stdout
        printed = await run_cli("db", "grants", env=env)
        assert printed.code == 0 and b'GRANT SELECT, INSERT ON TABLE public."events"' in printed.stdout
        assert await owner.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'events'") != role

        pool = await create_pool(service_dsn, min_size=1, max_size=2)
        try:
            store = PostgresEventStore(pool)
            [appended] = await store.append("c1/kleer-client/1", [NewEvent("KleerClientChanged", {"n": 1})])
            assert appended.inserted  # the append function and the log work for the role
            await pool.execute("INSERT INTO poll_runs (connection, kind, last_attempt_at) VALUES ('c1', 'client', now())")
            for refused in ("UPDATE events SET data = '{}'", "DELETE FROM events", "TRUNCATE events",
                            "CREATE TABLE sneaky (n int)", "DROP TABLE poll_runs"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await pool.execute(refused)
        finally:
            await pool.close()
    finally:
        await owner.execute(f"REASSIGN OWNED BY \"{role}\" TO CURRENT_USER; DROP OWNED BY \"{role}\"")
        await owner.close()
        admin = await asyncpg.connect(parsed._replace(path="/postgres").geturl())
        try:
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await admin.close()


async def test_migrate_names_a_missing_services_role_and_how_to_create_it(empty_database_url: str) -> None:
    from urllib.parse import urlparse

    from tests.integration.operations.harness import run_cli

    parsed = urlparse(empty_database_url)
    service_dsn = parsed._replace(netloc=f"nobody_{uuid.uuid4().hex[:6]}@{parsed.hostname}").geturl()
    failed = await run_cli("db", "migrate", env={"DATABASE_URL": service_dsn, "DATABASE_OWNER_URL": empty_database_url})
    assert failed.code == 2
    assert b"does not exist: create it once" in failed.stderr and b"CREATE ROLE" in failed.stderr
