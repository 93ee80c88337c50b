"""Change detection, pure: Kleer records in, changed snapshots and removed ids out.

A *source* is one Kleer record that yields one or more snapshots: a client
yields its company, an invoice's rows yield its line items. Each source has a
hash of its raw Kleer JSON (salted with the mapping version); when every
snapshot id of a source is remembered with that same hash, the source is
unchanged and is not mapped again, which keeps a no-change poll of 100,000
records to hashing and one dictionary look-up each. Otherwise the source is
mapped and each snapshot's fingerprint (of the mapped HubSpot properties, the
real change test) is compared with the remembered one.

A remembered record whose id no Kleer source lists any more is removed, unless
it lies before the invoice history window (then Kleer's list simply no longer
covers it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from libs.mapping.errors import MappingError
from libs.mapping.model import Mappings
from services.outbound.fingerprints import UNMAPPABLE, FingerprintRow, Seen
from services.outbound.snapshots import Snapshot


def mapping_version(mappings: Mappings) -> str:
    """A digest of the mappings in force: a new mappings file makes every source look new once."""
    return hashlib.sha256(repr(mappings.objects).encode()).hexdigest()[:16]


def source_hash(salt: bytes, record: Mapping[str, Any]) -> str:
    return hashlib.blake2b(
        orjson.dumps(record, option=orjson.OPT_SORT_KEYS), digest_size=16, key=salt
    ).hexdigest()


@dataclass(frozen=True)
class Source:
    """One Kleer record as input to detection."""

    ids: Sequence[str]  # the snapshot ids it yields (one for a record; the row ids for line items)
    source_hash: str
    record_date: dt.date | None
    build: Callable[[], list[Snapshot]]  # maps the record; raises MappingError
    record: str  # for the DLQ: kleer:invoice:123
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class Failure:
    source: Source
    error: MappingError


@dataclass
class Detection:
    changed: list[Snapshot] = field(default_factory=list)
    rows: list[FingerprintRow] = field(default_factory=list)  # fingerprints to store
    removed: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    seen: int = 0
    remembered: int = 0  # records known before this poll

    def add(self, recorded: Detection) -> None:
        """Count in what one commit recorded (its changes, removals, fingerprints and failures)."""
        self.changed.extend(recorded.changed)
        self.rows.extend(recorded.rows)
        self.removed.extend(recorded.removed)
        self.failures.extend(recorded.failures)


def detect_changes(sources: Iterable[Source], remembered: Mapping[str, Seen]) -> Detection:
    """The changed snapshots, the fingerprints to store and the unmappable sources (no removals)."""
    result = Detection(remembered=len(remembered))
    for source in sources:
        result.seen += len(source.ids)
        if not source.ids:
            continue
        if all(
            (seen := remembered.get(i)) is not None and seen.source_hash == source.source_hash
            for i in source.ids
        ):
            continue
        try:
            snapshots = source.build()
        except MappingError as error:
            result.failures.append(Failure(source, error))
            result.rows.extend(
                FingerprintRow(i, UNMAPPABLE, source.source_hash, source.record_date) for i in source.ids
            )
            continue
        for snapshot in snapshots:
            seen = remembered.get(snapshot.kleer_id)
            result.rows.append(
                FingerprintRow(
                    snapshot.kleer_id, snapshot.fingerprint, source.source_hash, source.record_date
                )
            )
            if seen is None or seen.fingerprint != snapshot.fingerprint:
                result.changed.append(snapshot)
    return result


def removals(
    remembered: Mapping[str, Seen], listed: Iterable[str], window_start: dt.date | None = None
) -> list[str]:
    """Remembered records Kleer no longer lists, except those dated before the history window.

    ``listed``: every id Kleer still has of this kind, including records that are
    not synced (drafts, credit invoices); they are not removals.
    """
    present = set(listed)
    return [
        kleer_id
        for kleer_id, seen in remembered.items()
        if kleer_id not in present
        and not (
            window_start is not None and seen.record_date is not None and seen.record_date < window_start
        )
    ]


def detect(
    sources: Iterable[Source],
    remembered: Mapping[str, Seen],
    listed: Iterable[str],
    window_start: dt.date | None = None,
) -> Detection:
    """Compare what Kleer lists now with what the poller remembers: changes and removals together."""
    result = detect_changes(sources, remembered)
    result.removed = removals(remembered, listed, window_start)
    return result


def implausible_removals(removed: int, remembered: int, share: float, minimum: int) -> str | None:
    """Why removing this many looks like a broken Kleer list rather than deletions, or None.

    More than ``share`` of the remembered records (of at least ``minimum``) vanishing in one
    poll is refused: an empty or truncated list must not mark a whole book as deleted.
    """
    if remembered >= minimum and removed > share * remembered:
        return f"Kleer no longer lists {removed} of the {remembered} records synced before"
    return None
