"""Telling a database outage from a real error, and waiting it out.

A PostgreSQL restart (a failover, a minor-version upgrade, an operator's
``pg_ctl restart``) closes every connection: the statements in flight fail with
``AdminShutdownError``/``ConnectionDoesNotExistError``, new connections are
refused for a few seconds, then answered with ``CannotConnectNowError`` while
the server recovers. None of this says anything about the batch being handled:
long-running components wait for the server and carry on from their
checkpoints; they neither crash nor dead-letter the work. The asyncpg pool
replaces closed connections by itself on the next ``acquire``.
"""

from __future__ import annotations

import asyncio
import random

import asyncpg

_SERVER_GONE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # 08xxx: the connection broke or does not exist
    asyncpg.CannotConnectNowError,  # 57P03: starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,  # 57P01: terminated by a fast or smart shutdown
    asyncpg.CrashShutdownError,  # 57P02: terminated because another backend crashed
)
# What connecting to a stopped server raises. Only the exact builtin types: HTTP clients' errors subclass
# OSError too (aiohttp.ClientConnectorError), and a Kleer or HubSpot outage is the handler's business.
_REFUSED = (OSError, ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


def database_unavailable(exc: BaseException) -> bool:
    """True if ``exc`` means the database server went away, not that the statement or the batch was wrong."""
    if type(exc) in _REFUSED:
        return True
    current: BaseException | None = exc
    for _ in range(5):  # the error itself or what caused it, a few levels down
        if current is None:
            break
        if isinstance(current, _SERVER_GONE):
            return True
        if isinstance(current, asyncpg.InterfaceError) and "connection" in str(current).lower():
            return True  # "connection is closed", "... has been released back to the pool"
        if isinstance(current, asyncpg.InternalClientError) and "cannot switch to state" in str(current):
            # The connection's protocol was left mid-operation when the server went away (seen in soaks
            # while Postgres restarted: the pool's reset of a released connection raised this). The pool
            # terminates that connection; the next acquire gets a new one, as after any lost connection.
            return True
        current = current.__cause__ or current.__context__
    return False


async def wait_for_database(pool: asyncpg.Pool, stop: asyncio.Event, cap: float = 5.0) -> bool:
    """Poll the server (backoff with jitter, at most ``cap`` s apart) until it answers; False if stopped first."""
    attempt = 0
    while not stop.is_set():
        try:
            await pool.fetchval("SELECT 1")
            return True
        except Exception as exc:
            if not database_unavailable(exc):
                raise
        attempt += 1
        try:
            await asyncio.wait_for(stop.wait(), random.uniform(0.5, min(cap, 0.25 * 2**attempt)))
        except TimeoutError:
            continue
    return False
