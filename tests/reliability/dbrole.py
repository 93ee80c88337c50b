"""The database role the services run as: no superuser, no DDL, an append-only event log.

Migrations run as the database owner (``kleer-sync db migrate``, a deploy
step); the long-running services connect as a role with only these grants
(see ``README.md`` in this directory)::

    CREATE ROLE kleer_sync_service LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    GRANT CONNECT ON DATABASE kleer_sync TO kleer_sync_service;
    GRANT USAGE ON SCHEMA public TO kleer_sync_service;          -- no CREATE: no DDL
    GRANT SELECT, INSERT ON events TO kleer_sync_service;        -- the log is append-only
    GRANT SELECT ON schema_migrations TO kleer_sync_service;     -- readiness checks it
    GRANT SELECT, INSERT, UPDATE, DELETE ON <every other table> TO kleer_sync_service;
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO kleer_sync_service;
    REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;
    GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO kleer_sync_service;  -- kleer_sync_append, hubspot_rate_acquire

No ``UPDATE``/``DELETE``/``TRUNCATE`` on ``events``, no ownership of
anything, no ``CREATE`` on the schema. A new migration that adds a table must
extend the grants (``grant_statements`` is the list the tests apply).
"""

from __future__ import annotations

import uuid
from urllib.parse import urlparse

import asyncpg

APPEND_ONLY = ("events",)
READ_ONLY = ("schema_migrations",)


async def grant_statements(conn: asyncpg.Connection, role: str, database: str) -> list[str]:
    """The GRANTs for ``role`` on every table the migrations created."""
    tables = [r["tablename"] for r in await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]
    statements = [
        f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"',
        f'GRANT USAGE ON SCHEMA public TO "{role}"',
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
    ]
    for table in tables:
        if table in APPEND_ONLY:
            privileges = "SELECT, INSERT"
        elif table in READ_ONLY:
            privileges = "SELECT"
        else:
            privileges = "SELECT, INSERT, UPDATE, DELETE"
        statements.append(f'GRANT {privileges} ON TABLE public."{table}" TO "{role}"')
    statements += [
        f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"',
        "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC",
        f'GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO "{role}"',
    ]
    return statements


async def create_service_role(owner_dsn: str) -> tuple[str, str]:
    """Create a login role with the service grants on ``owner_dsn``'s database; returns (role, its DSN)."""
    role = f"ks_service_{uuid.uuid4().hex[:10]}"
    database = urlparse(owner_dsn).path.lstrip("/")
    conn = await asyncpg.connect(owner_dsn)
    try:
        await conn.execute(
            f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS'
        )
        for statement in await grant_statements(conn, role, database):
            await conn.execute(statement)
    finally:
        await conn.close()
    parsed = urlparse(owner_dsn)
    netloc = f"{role}@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
    return role, parsed._replace(netloc=netloc).geturl()


async def drop_service_role(server_dsn: str, role: str) -> None:
    """Drop the role (after its database is gone, nothing of it is left to revoke)."""
    conn = await asyncpg.connect(urlparse(server_dsn)._replace(path="/postgres").geturl())
    try:
        await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await conn.close()
