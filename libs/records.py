"""Record identity: which record of which system, and the event streams it lives in.

A *connection* (one HubSpot portal with one Kleer company) is part of every
stream name, so many customers can share one deployment:
``{connection}/{system}-{kind}/{id}``, e.g. ``acme/kleer-client/1234``.
People name records as ``system:kind:id`` (``kleer:client:123``,
``hubspot:company:456``) in the CLI and the admin pages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SYSTEMS = ("kleer", "hubspot", "sync")
_REF = re.compile(r"^(?P<system>[a-z]+):(?P<kind>[a-z][a-z0-9_-]*):(?P<id>[^\s/]+)$")
_STREAM = re.compile(r"^(?P<connection>[^/]+)/(?P<system>[a-z]+)-(?P<kind>[a-z][a-z0-9_-]*)/(?P<id>[^\s/]+)$")


@dataclass(frozen=True, order=True)
class RecordRef:
    system: str
    kind: str
    id: str

    def __post_init__(self) -> None:
        if self.system not in SYSTEMS:
            raise ValueError(f"unknown system {self.system!r}; expected one of {', '.join(SYSTEMS)}")
        if "/" in self.id or not self.id:
            raise ValueError(f"record id must be non-empty and contain no '/': {self.id!r}")

    @classmethod
    def parse(cls, text: str) -> RecordRef:
        """Parse ``system:kind:id`` (e.g. ``kleer:client:123``)."""
        match = _REF.match(text.strip())
        if not match:
            raise ValueError(
                f"not a record reference: {text!r}; write it as system:kind:id, e.g. kleer:client:123"
            )
        return cls(match["system"], match["kind"], match["id"])

    def stream(self, connection: str) -> str:
        return stream_of(connection, self.system, self.kind, self.id)

    @classmethod
    def from_stream(cls, stream: str) -> tuple[str, RecordRef]:
        """Split a stream name into (connection, record)."""
        match = _STREAM.match(stream)
        if not match:
            raise ValueError(f"not a record stream: {stream!r}")
        return match["connection"], cls(match["system"], match["kind"], match["id"])

    def __str__(self) -> str:
        return f"{self.system}:{self.kind}:{self.id}"


def stream_of(connection: str, system: str, kind: str, record_id: str) -> str:
    """``RecordRef(system, kind, record_id).stream(connection)``, for parts already checked (no RecordRef made)."""
    return f"{connection}/{system}-{kind}/{record_id}"
