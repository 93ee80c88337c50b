from __future__ import annotations

import asyncpg

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
    import pytest

    from libs.events.migrate import MigrationError

    with pytest.raises(MigrationError, match=r"cannot connect to PostgreSQL.*DATABASE_URL"):
        await migrate("postgresql://postgres@127.0.0.1:1/nowhere", log=None)
