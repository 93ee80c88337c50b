"""The pusher's pure decisions: coalescing, what to write, batching and association planning."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from libs.events.envelope import RecordedEvent
from services.outbound.planning import (
    ASSOCIATION_BATCH,
    Action,
    Child,
    Pushed,
    RemovalPolicy,
    association_batches,
    chunks,
    coalesce,
    decide,
    minimum_requests,
    plan_links,
)
from services.outbound.snapshots import (
    DEAL,
    ParentRef,
    Snapshot,
    changed_type,
    push_requested_type,
    removed_type,
)

_position = iter(range(1, 1_000_000))


def _event(event_type: str, stream: str, data: dict[str, object]) -> RecordedEvent:
    return RecordedEvent(next(_position), uuid.uuid4(), stream, 1, event_type, data, {}, datetime.now(UTC))


def _snapshot(
    kind: str, kleer_id: str, fingerprint: str = "f1", parents: tuple[ParentRef, ...] = ()
) -> Snapshot:
    return Snapshot(kind, kleer_id, {"kleer_id": kleer_id, "name": "x"}, fingerprint, parents)


def _changed(kind: str, kleer_id: str, fingerprint: str = "f1", connection: str = "c1") -> RecordedEvent:
    data = _snapshot(kind, kleer_id, fingerprint).to_event_data()
    return _event(changed_type(kind), f"{connection}/kleer-{kind}/{kleer_id}", data)


def test_coalesce_keeps_only_the_latest_snapshot_of_each_record() -> None:
    first, second, other = _changed("client", "1", "a"), _changed("client", "1", "b"), _changed("client", "2")
    changes, malformed = coalesce([second, first, other])  # any input order: log position decides
    assert malformed == []
    assert [(c.kleer_id, c.snapshot.fingerprint if c.snapshot else None) for c in changes] == [
        ("1", "b"),
        ("2", "f1"),
    ]


def test_coalesce_lets_a_later_removal_win_over_a_change() -> None:
    change = _changed("invoice", "9")
    removal = _event(removed_type("invoice"), "c1/kleer-invoice/9", {"kleer_id": "9", "kind": "invoice"})
    (only,), _ = coalesce([change, removal])
    assert only.snapshot is None and only.action == "Removed"


def test_coalesce_separates_connections_and_ignores_other_event_types() -> None:
    upserted = _event("HubSpotCompanyUpserted", "c1/kleer-client/1", {})
    changes, _ = coalesce(
        [_changed("client", "1", connection="a"), _changed("client", "1", connection="b"), upserted]
    )
    assert sorted(c.connection for c in changes) == ["a", "b"]


def test_a_push_request_anywhere_in_the_batch_forces_the_write() -> None:
    request = _event(
        push_requested_type("client"), "c1/kleer-client/1", _snapshot("client", "1").to_event_data()
    )
    (change,), _ = coalesce([request, _changed("client", "1", "later")])
    assert change.force and change.snapshot is not None and change.snapshot.fingerprint == "later"


def test_unreadable_events_come_back_as_malformed() -> None:
    broken = _event(changed_type("client"), "c1/kleer-client/1", {"properties": {}})
    wrong_record = _event(
        changed_type("client"), "c1/kleer-client/2", _snapshot("client", "3").to_event_data()
    )
    changes, malformed = coalesce([broken, wrong_record])
    assert changes == [] and len(malformed) == 2
    assert "carries client:3" in malformed[1].reason


def test_an_unknown_event_type_routed_to_the_pusher_is_malformed_not_dropped() -> None:
    newer = _event("KleerPaymentChanged", "c1/kleer-payment/1", {"kleer_id": "1"})  # a newer poller's type
    audit_only = _event("HubSpotCompanyUpserted", "c1/kleer-client/1", {})  # never routed here: ignored
    changes, malformed = coalesce([newer, audit_only, _changed("client", "2")])
    assert [c.kleer_id for c in changes] == ["2"]
    assert [m.event.type for m in malformed] == ["KleerPaymentChanged"]
    assert "unknown event type KleerPaymentChanged" in malformed[0].reason and "redrive" in malformed[0].reason


@pytest.mark.parametrize(
    ("pushed", "fingerprint", "force", "expected"),
    [
        (None, "f1", False, Action.UPSERT),
        (Pushed("10", "f1", frozenset(), False), "f1", False, Action.SKIP),
        (Pushed("10", "f0", frozenset(), False), "f1", False, Action.UPSERT),
        (Pushed("10", "f1", frozenset(), False), "f1", True, Action.UPSERT),
        (Pushed("10", None, frozenset(), True), "f1", False, Action.UPSERT),
    ],
)
def test_decide_writes_only_what_hubspot_does_not_have(
    pushed: Pushed | None, fingerprint: str, force: bool, expected: Action
) -> None:
    (change,), _ = coalesce([_changed("client", "1", fingerprint)])
    change = change.__class__(**{**change.__dict__, "force": force})
    assert decide(change, pushed, RemovalPolicy.FLAG) is expected


def test_removals_flag_by_default_archive_on_request_and_always_archive_line_items() -> None:
    def removal(kind: str) -> object:
        (change,), _ = coalesce([_event(removed_type(kind), f"c1/kleer-{kind}/1", {})])
        return change

    there = Pushed("10", "f", frozenset(), False)
    assert decide(removal("client"), there, RemovalPolicy.FLAG) is Action.FLAG  # type: ignore[arg-type]
    assert decide(removal("client"), there, RemovalPolicy.ARCHIVE) is Action.ARCHIVE  # type: ignore[arg-type]
    assert decide(removal("line_item"), there, RemovalPolicy.FLAG) is Action.ARCHIVE  # type: ignore[arg-type]
    assert decide(removal("client"), None, RemovalPolicy.FLAG) is Action.FORGET  # type: ignore[arg-type]


def test_chunks_split_into_slices_of_at_most_the_size() -> None:
    assert [list(c) for c in chunks(list(range(250)), 100)] == [
        list(range(100)),
        list(range(100, 200)),
        list(range(200, 250)),
    ]
    with pytest.raises(ValueError, match="at least 1"):
        list(chunks([1], 0))


def test_links_go_from_child_to_parent_with_the_hubspot_defined_type() -> None:
    invoice = Child("c1", "invoice", "5", "500", (ParentRef("client", "1"),), frozenset())
    line = Child("c1", "line_item", "5-row-1", "700", (ParentRef("invoice", "5"),), frozenset())
    known = {("c1", "client", "1"): "100", ("c1", "invoice", "5"): "500"}
    links, waiting, unsupported = plan_links(
        [invoice, line], lambda c, p: known.get((c, p.kind, p.kleer_id or ""))
    )
    assert waiting == [] and unsupported == []
    assert [(k.from_object, k.from_id, k.to_object, k.to_id, k.type_id) for k in links] == [
        ("invoices", "500", "companies", "100", 179),
        ("line_items", "700", "invoices", "500", 410),
    ]


def test_a_parent_not_yet_in_hubspot_is_waited_for_not_failed() -> None:
    project = Child("c1", "project", "3", "300", (ParentRef("client", "404"),), frozenset())
    links, waiting, _ = plan_links([project], lambda c, p: None)
    assert links == [] and [w.parent.key for w in waiting] == ["client:404"]


def test_parents_already_associated_cost_no_request() -> None:
    invoice = Child("c1", "invoice", "5", "500", (ParentRef("client", "1"),), frozenset({"client:1"}))
    assert plan_links([invoice], lambda c, p: "100") == ([], [], [])


def test_a_deal_known_by_its_hubspot_id_is_linked_directly() -> None:
    invoice = Child("c1", "invoice", "5", "500", (ParentRef(DEAL, hubspot_id="77"),), frozenset())
    (link,), _, _ = plan_links([invoice], lambda c, p: None)
    assert (link.to_object, link.to_id, link.type_id) == ("deals", "77", 175)


def test_unknown_association_pairs_are_reported_not_written() -> None:
    subscription = Child("c1", "agreement", "8", "800", (ParentRef(DEAL, hubspot_id="77"),), frozenset())
    links, waiting, unsupported = plan_links([subscription], lambda c, p: None)
    assert (links, waiting, unsupported) == ([], [], ["subscriptions -> deals"])


def test_association_batches_group_by_pair_dedupe_and_cap_at_2000() -> None:
    children = [
        Child("c1", "line_item", f"1-row-{n}", str(n), (ParentRef("invoice", "1"),), frozenset())
        for n in range(ASSOCIATION_BATCH + 5)
    ]
    links, _, _ = plan_links(children + children[:3], lambda c, p: "500")
    batches = association_batches(links)
    assert [len(part) for _, part in batches] == [ASSOCIATION_BATCH, 5]
    assert {key for key, _ in batches} == {("c1", "line_items", "invoices")}


def test_minimum_requests_counts_full_batches() -> None:
    assert minimum_requests({"companies": 250, "invoices": 100}, {"invoices->companies": 2001}) == 3 + 1 + 2


def test_the_pusher_takes_a_batch_coalesced_ahead_only_for_the_very_same_events() -> None:
    from types import SimpleNamespace

    from services.outbound.pusher import Pusher

    pusher = Pusher(SimpleNamespace(pool=None), {})  # type: ignore[arg-type]
    events = [_changed("client", "1"), _changed("client", "2"), _changed("client", "1", "f2")]
    pusher.prepare(events)
    ahead = pusher._prepared
    assert ahead is not None
    assert pusher._coalesced(events) is ahead[1]  # the prefetch's work, not done again
    assert pusher._prepared is None  # taken once
    pusher.prepare(events)
    fewer = pusher._coalesced(events[:2])  # the batch taken was not the one prefetched (a checkpoint moved)
    assert [(c.kleer_id, c.snapshot.fingerprint if c.snapshot else None) for c in fewer[0]] == [("1", "f1"), ("2", "f1")]
