"""The database role the services run as: no superuser, no DDL, an append-only event log.

Migrations run as the schema owner (``kleer-sync db migrate`` with
``DATABASE_OWNER_URL``, the Kubernetes migration Job); the long-running
services connect with ``DATABASE_URL`` as a role that has only these grants::

    GRANT CONNECT ON DATABASE <db> TO <service>;
    GRANT USAGE ON SCHEMA public TO <service>;             -- no CREATE: no DDL
    GRANT SELECT, INSERT ON events TO <service>;           -- the log is append-only
    GRANT SELECT ON schema_migrations TO <service>;        -- readiness checks it
    GRANT SELECT, INSERT, UPDATE, DELETE ON <every other table> TO <service>;
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO <service>;
    REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;
    GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO <service>;  -- kleer_sync_append, hubspot_rate_grant, ...

No ``UPDATE``/``DELETE``/``TRUNCATE`` on ``events``, no ownership of anything,
no ``CREATE`` on the schema. The statements are computed from the tables the
migrations created, so a new table is granted by the next ``db migrate``.
"""

from __future__ import annotations

from urllib.parse import urlparse

import asyncpg

APPEND_ONLY = ("events",)
READ_ONLY = ("schema_migrations",)


class GrantError(RuntimeError):
    """The grants cannot be applied (the role is missing, the connecting role may not grant, ...)."""


def quote_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier (any role or database name is safe)."""
    return '"' + name.replace('"', '""') + '"'


def user_of(dsn: str) -> str | None:
    """The role a DSN connects as (None when it names none: libpq then takes the OS user)."""
    return urlparse(dsn).username or None


def database_of(dsn: str) -> str:
    return urlparse(dsn).path.lstrip("/")


async def grant_statements(conn: asyncpg.Connection, role: str, database: str) -> list[str]:
    """The GRANTs for ``role`` on every table of the schema, as the owner applies them."""
    tables = [r["tablename"] for r in await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]
    who = quote_identifier(role)
    statements = [
        f"GRANT CONNECT ON DATABASE {quote_identifier(database)} TO {who}",
        f"GRANT USAGE ON SCHEMA public TO {who}",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
    ]
    for table in tables:
        if table in APPEND_ONLY:
            privileges = "SELECT, INSERT"
        elif table in READ_ONLY:
            privileges = "SELECT"
        else:
            privileges = "SELECT, INSERT, UPDATE, DELETE"
        statements.append(f"GRANT {privileges} ON TABLE public.{quote_identifier(table)} TO {who}")
    statements += [
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {who}",
        "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC",
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {who}",
    ]
    return statements


async def planned_grants(owner_dsn: str, role: str) -> list[str]:
    """``grant_statements`` for ``owner_dsn``'s database, read over a connection of its own."""
    conn = await asyncpg.connect(owner_dsn)
    try:
        return await grant_statements(conn, role, database_of(owner_dsn))
    finally:
        await conn.close()


async def apply_grants(owner_dsn: str, role: str) -> list[str]:
    """Grant ``role`` what the services need on ``owner_dsn``'s database, in one transaction; the statements."""
    conn = await asyncpg.connect(owner_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            raise GrantError(
                f"role {role!r} (the user of DATABASE_URL) does not exist: create it once as an administrator, "
                f"e.g. CREATE ROLE {quote_identifier(role)} LOGIN PASSWORD '...', then run `kleer-sync db migrate` "
                "again"
            )
        statements = await grant_statements(conn, role, database_of(owner_dsn))
        try:
            async with conn.transaction():
                for statement in statements:
                    await conn.execute(statement)
        except asyncpg.PostgresError as exc:
            raise GrantError(
                f"granting {role!r} failed: {exc}. DATABASE_OWNER_URL must connect as the owner of the schema "
                "(the role that ran the migrations)"
            ) from exc
        return statements
    finally:
        await conn.close()
