"""A batch's associations are written after its records; a failed attempt is forgotten before the next."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from libs.events.store import PostgresEventStore
from services.outbound import pusher as pusher_module
from services.outbound.idmap import IdRow
from services.outbound.planning import Pushed, RecordKey, Waiting
from services.outbound.pusher import LINK_ATTEMPTS, Pusher, _Outcome, _Overlay, _Park
from services.outbound.snapshots import ParentRef

KEY = ("acme", "line_item", "5-row-1")
WAITING = Waiting("acme", "line_item", "5-row-1", ParentRef("invoice", "5"))


class _Flaky(Pusher):
    """Each attempt records a link, a waiting association and a dead letter; the first ``failures`` then fail."""

    def __init__(self, store: PostgresEventStore, failures: int) -> None:
        super().__init__(store, {})
        self.failures = failures
        self.attempts = 0

    async def _associate(self, written: Sequence[Any], pushed: Mapping[RecordKey, Pushed], outcome: _Outcome, *,
                         sweep: bool) -> None:
        self.attempts += 1
        outcome.associated.append((KEY, "invoice:5"))
        outcome.add_waiting.append(WAITING)
        outcome.parks.append(_Park("acme", "kleer:line_item:5-row-1", "refused", {}, {}, None))
        if self.attempts <= self.failures:
            raise RuntimeError("HubSpot unavailable")


def _outcome() -> _Outcome:
    outcome = _Outcome()
    outcome.id_rows.append(IdRow("acme", "line_item", "5-row-1", "line_items", "77", "f", []))
    return outcome


async def test_a_failed_attempt_is_forgotten_and_the_next_one_counts_once(
    store: PostgresEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pusher_module, "LINK_RETRY_BASE_S", 0.001)
    pusher, outcome = _Flaky(store, failures=2), _outcome()
    overlay = _Overlay.of(outcome)
    assert overlay.rows[KEY].associated == [] and not overlay.waiting  # the records now, the links later

    await pusher._link([], {}, outcome, overlay)

    assert pusher.attempts == 3
    assert (outcome.associated, outcome.add_waiting, len(outcome.parks)) == ([(KEY, "invoice:5")], [WAITING], 1)
    assert overlay.rows[KEY].associated == ["invoice:5"] and overlay.waiting == {WAITING}


async def test_associations_failing_on_every_attempt_fail_the_batch(
    store: PostgresEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pusher_module, "LINK_RETRY_BASE_S", 0.001)
    pusher, outcome = _Flaky(store, failures=LINK_ATTEMPTS), _outcome()
    with pytest.raises(RuntimeError, match="HubSpot unavailable"):
        await pusher._link([], {}, outcome, _Overlay.of(outcome))
    assert pusher.attempts == LINK_ATTEMPTS
