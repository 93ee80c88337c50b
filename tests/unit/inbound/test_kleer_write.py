"""Deciding a Kleer write: the three-way merge, conflicts and their policy, what the outbound side must do."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from libs.mapping.convert import fingerprint, to_hubspot
from libs.mapping.errors import MappingError
from libs.mapping.loader import default_mappings
from services.inbound.kleer_write import (
    SyncBase,
    WritePlan,
    body_differs,
    changed_fields,
    plan_write,
)
from services.inbound.options import ConflictPolicy

MAPPINGS = default_mappings()
CLIENT = {"id": 7, "name": "Old AB", "phone": "1", "email": "a@b.se", "address": {"address1": "Gata 1", "zip-code": "11"},
          "payment-days": 30, "currency-type": "SEK", "active": True}


def _mapped(record: dict[str, Any]) -> dict[str, str]:
    return to_hubspot("client", record, mappings=MAPPINGS)


def _fp(record: dict[str, Any]) -> str:
    return fingerprint("client", _mapped(record))


def _pushed(record: dict[str, Any]) -> SyncBase:
    """The base after the pusher wrote ``record`` to HubSpot."""
    return SyncBase(properties=_mapped(record), pushed_fingerprint=_fp(record))


def _plan(
    kleer: dict[str, Any],
    hubspot: dict[str, Any],
    *,
    changed: tuple[str, ...] = ("name",),
    base: SyncBase | None = None,
    stored: str | None,
    policy: ConflictPolicy = ConflictPolicy.HUBSPOT_WINS,
) -> WritePlan:
    return plan_write("client", kleer, _mapped(hubspot), changed=changed, base=base, stored_fingerprint=stored,
                      policy=policy, mappings=MAPPINGS)


def test_same_values_need_no_write() -> None:
    assert not body_differs(CLIENT, {"name": "Old AB", "address": {"address1": "Gata 1"}, "payment-days": 30})
    assert body_differs(CLIENT, {"name": "New AB"})
    assert not body_differs({"budget-hours": 1.1}, {"budget-hours": Decimal("1.1")})


def test_hubspot_edit_of_a_record_hubspot_already_has_is_written_and_its_new_fingerprint_stored() -> None:
    plan = _plan(CLIENT, {**CLIENT, "name": "New AB"}, base=_pushed(CLIENT), stored=_fp(CLIENT))
    assert plan.write and not plan.conflict and plan.snapshot is None
    assert plan.body["name"] == "New AB" and plan.body["phone"] == "1" and plan.body["payment-days"] == 30
    assert plan.new_fingerprint == _fp({**CLIENT, "name": "New AB"})


def test_a_kleer_change_waiting_for_the_pusher_is_kept_and_the_merged_record_queued_for_hubspot() -> None:
    kleer = {**CLIENT, "phone": "08-123 45 67"}  # polled (fingerprint stored, snapshot queued), not pushed
    base = SyncBase(_mapped(CLIENT), pushed_fingerprint=_fp(CLIENT), pending_fingerprint=_fp(kleer))
    plan = _plan(kleer, {**CLIENT, "name": "Renamed AB"}, base=base, stored=_fp(kleer))
    assert plan.write and not plan.conflict
    assert (plan.body["name"], plan.body["phone"]) == ("Renamed AB", "08-123 45 67")
    merged = {**kleer, "name": "Renamed AB"}
    assert plan.snapshot is not None and plan.snapshot.properties == _mapped(merged)
    assert plan.snapshot.fingerprint == plan.new_fingerprint == _fp(merged)


def test_a_kleer_change_not_yet_polled_is_kept_and_queued_for_hubspot() -> None:
    kleer = {**CLIENT, "phone": "2"}
    plan = _plan(kleer, {**CLIENT, "name": "Renamed AB"}, base=_pushed(CLIENT), stored=_fp(CLIENT))
    assert (plan.body["name"], plan.body["phone"]) == ("Renamed AB", "2")
    assert plan.snapshot is not None and plan.snapshot.properties["phone"] == "2"


def test_both_sides_changing_a_field_differently_is_a_conflict_hubspot_wins_by_default() -> None:
    kleer = {**CLIENT, "name": "Kleer AB", "phone": "2"}
    plan = _plan(kleer, {**CLIENT, "name": "HubSpot AB"}, base=_pushed(CLIENT), stored=_fp(CLIENT))
    assert plan.write and plan.conflict and plan.winner == "hubspot" and plan.conflicts == ("name",)
    assert (plan.body["name"], plan.body["phone"]) == ("HubSpot AB", "2")  # Kleer's phone was no conflict
    assert plan.kleer_values["name"] == "Kleer AB" and plan.hubspot_values["name"] == "HubSpot AB"


def test_a_losing_kleer_snapshot_still_waiting_for_the_pusher_is_superseded() -> None:
    kleer = {**CLIENT, "name": "Kleer AB"}
    base = SyncBase(_mapped(CLIENT), pushed_fingerprint=_fp(CLIENT), pending_fingerprint=_fp(kleer))
    plan = _plan(kleer, {**CLIENT, "name": "HubSpot AB"}, base=base, stored=_fp(kleer))
    assert plan.conflict and plan.body["name"] == "HubSpot AB"
    # HubSpot already holds every merged value, but the queued snapshot would overwrite its name.
    assert plan.snapshot is not None and plan.snapshot.properties["name"] == "HubSpot AB"


def test_kleer_wins_policy_keeps_kleers_value_and_queues_it_for_hubspot() -> None:
    kleer = {**CLIENT, "name": "Kleer AB"}
    plan = _plan(kleer, {**CLIENT, "name": "HubSpot AB"}, base=_pushed(CLIENT), stored=_fp(CLIENT),
                 policy=ConflictPolicy.KLEER_WINS)
    assert not plan.write and plan.conflict and plan.winner == "kleer"
    assert plan.snapshot is not None and plan.snapshot.properties["name"] == "Kleer AB"


def test_both_sides_making_the_same_change_is_no_conflict_and_no_write() -> None:
    same = {**CLIENT, "name": "Same AB"}
    plan = _plan(same, same, base=_pushed(CLIENT), stored=_fp(same))
    assert not plan.write and not plan.conflict
    assert plan.snapshot is None and plan.new_fingerprint is None


def test_a_hubspot_edit_back_to_what_hubspot_last_got_keeps_kleers_newer_value() -> None:
    kleer = {**CLIENT, "name": "Newer In Kleer AB"}
    plan = _plan(kleer, CLIENT, base=_pushed(CLIENT), stored=_fp(kleer))
    assert not plan.write and not plan.conflict
    assert plan.snapshot is not None and plan.snapshot.properties["name"] == "Newer In Kleer AB"


def test_a_number_emptied_in_hubspot_leaves_kleers_value() -> None:
    hubspot = {**_mapped(CLIENT), "kleer_payment_days": "", "name": "New AB"}
    plan = plan_write("client", CLIENT, hubspot, changed=("name",), base=_pushed(CLIENT),
                      stored_fingerprint=_fp(CLIENT), policy=ConflictPolicy.HUBSPOT_WINS, mappings=MAPPINGS)
    assert "payment-days" not in plan.body and plan.body["name"] == "New AB"
    assert not plan.conflict and plan.snapshot is None


def test_without_a_base_a_kleer_change_since_the_last_poll_is_a_conflict() -> None:
    polled = {**CLIENT, "name": "Polled AB"}
    plan = _plan(CLIENT, {**CLIENT, "name": "New AB"}, stored=_fp(polled))
    assert plan.write and plan.conflict and plan.winner == "hubspot"
    assert plan.new_fingerprint is None and plan.snapshot is None  # the poller must still push Kleer's record
    assert changed_fields(plan.kleer_values, plan.hubspot_values)["name"] == {"kleer": "Old AB", "hubspot": "New AB"}


def test_without_a_base_a_record_as_the_poller_saw_it_takes_hubspots_values() -> None:
    plan = _plan(CLIENT, {**CLIENT, "name": "New AB", "phone": "9"}, stored=_fp(CLIENT))
    assert plan.write and not plan.conflict and (plan.body["name"], plan.body["phone"]) == ("New AB", "9")
    assert plan.new_fingerprint == _fp({**CLIENT, "name": "New AB", "phone": "9"})


def test_never_polled_record_is_written_without_storing_a_fingerprint() -> None:
    plan = _plan(CLIENT, {**CLIENT, "name": "New AB"}, stored=None)
    assert plan.write and not plan.conflict and plan.new_fingerprint is None


def test_hubspot_value_kleer_cannot_take_raises() -> None:
    hubspot = {**_mapped(CLIENT), "kleer_payment_days": "many"}
    with pytest.raises(MappingError):
        plan_write("client", CLIENT, hubspot, stored_fingerprint=None, policy=ConflictPolicy.HUBSPOT_WINS,
                   mappings=MAPPINGS)



def test_a_linked_record_never_pushed_and_with_nothing_waiting_is_queued_for_hubspot() -> None:
    """Found by the short soak: the handlers created a Kleer client for a HubSpot company, stored its
    fingerprint and wrote its kleer_id, and were stopped before committing its first snapshot. The
    redelivery found Kleer up to date; the poller took the client for seen; HubSpot never got Kleer's
    one-way fields."""
    never_pushed = SyncBase(properties=_mapped(CLIENT))  # an inbound sync only: no upsert, nothing pending
    plan = _plan(CLIENT, CLIENT, base=never_pushed, stored=_fp(CLIENT))
    assert not plan.write and not plan.conflict
    assert plan.snapshot is not None and plan.snapshot.properties == _mapped(CLIENT)
    assert plan.new_fingerprint == _fp(CLIENT)
    # Once pushed, or with a snapshot already waiting for the pusher, there is nothing to add.
    assert _plan(CLIENT, CLIENT, base=_pushed(CLIENT), stored=_fp(CLIENT)).snapshot is None
    waiting = SyncBase(properties=_mapped(CLIENT), pending_fingerprint=_fp(CLIENT))
    assert _plan(CLIENT, CLIENT, base=waiting, stored=_fp(CLIENT)).snapshot is None
