"""What counts as the database going away (wait and resume) and what is a real error (retry, then park)."""

from __future__ import annotations

import asyncpg
import pytest

from libs.events.outage import database_unavailable


def _caused(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize("exc", [
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
    ConnectionRefusedError(111, "Connection refused"),
    _caused(RuntimeError("commit failed"), asyncpg.AdminShutdownError("terminating connection")),
], ids=lambda e: type(e).__name__)
def test_the_server_going_away_is_an_outage(exc: BaseException) -> None:
    assert database_unavailable(exc)


@pytest.mark.parametrize("exc", [
    asyncpg.UniqueViolationError("duplicate key value violates unique constraint"),
    asyncpg.InternalClientError("unexpected codec state"),
    asyncpg.InterfaceError("the server expects 2 arguments for this query, 1 was passed"),
    ValueError("malformed event"),
], ids=lambda e: type(e).__name__ + ":" + str(e)[:20])
def test_a_statement_or_data_error_is_not_an_outage(exc: BaseException) -> None:
    assert not database_unavailable(exc)
