"""Reading the event log's rows directly (the operations' indexed queries): columns, decoding, stream prefixes."""

from __future__ import annotations

import asyncpg

from libs.events.envelope import RecordedEvent
from libs.events.store import event_from_row

#: The columns ``recorded`` decodes, in its order (jsonb as text: orjson decodes it).
EVENT_COLUMNS = "position, event_id, stream, version, type, data::text, metadata::text, recorded_at"


def recorded(row: asyncpg.Record) -> RecordedEvent:
    """A row of ``SELECT {EVENT_COLUMNS} FROM events`` as a ``RecordedEvent``."""
    return event_from_row(row)


def connection_streams(connection: str) -> str:
    """A ``LIKE`` pattern matching every stream of ``connection`` (its name's wildcards escaped)."""
    return connection.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
