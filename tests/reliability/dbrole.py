"""A throwaway service role for the reliability tests: no superuser, the grants of ``libs/events/grants.py``.

The same grants ``kleer-sync db migrate`` applies in production (``DATABASE_OWNER_URL``
migrates; the user of ``DATABASE_URL`` gets them), applied here to a fresh role per run.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlparse

import asyncpg

from libs.events.grants import grant_statements


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
