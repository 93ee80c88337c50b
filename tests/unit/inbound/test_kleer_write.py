"""Deciding a Kleer write: no-op detection, conflicts and their policy, the fingerprint to store."""

from __future__ import annotations

from decimal import Decimal

from libs.mapping.convert import fingerprint, to_hubspot
from libs.mapping.loader import default_mappings
from services.inbound.kleer_write import body_differs, changed_fields, kleer_json, plan_write
from services.inbound.options import ConflictPolicy

MAPPINGS = default_mappings()
CLIENT = {"id": 7, "name": "Old AB", "phone": "1", "email": "a@b.se", "address": {"address1": "Gata 1", "zip-code": "11"},
          "payment-days": 30, "currency-type": "SEK", "active": True}


def _fp(record: dict[str, object]) -> str:
    return fingerprint("client", to_hubspot("client", record, mappings=MAPPINGS))


def test_same_values_need_no_write() -> None:
    assert not body_differs(CLIENT, {"name": "Old AB", "address": {"address1": "Gata 1"}, "payment-days": 30})
    assert body_differs(CLIENT, {"name": "New AB"})
    assert not body_differs({"budget-hours": 1.1}, {"budget-hours": Decimal("1.1")})


def test_clean_record_is_written_and_its_new_fingerprint_stored() -> None:
    plan = plan_write("client", CLIENT, {"name": "New AB"}, _fp(CLIENT), ConflictPolicy.HUBSPOT_WINS, MAPPINGS)
    assert plan.write and not plan.conflict
    assert plan.new_fingerprint == _fp({**CLIENT, "name": "New AB"})


def test_kleer_changed_since_last_poll_is_a_conflict_hubspot_wins_by_default() -> None:
    stored = _fp({**CLIENT, "name": "Polled AB"})
    plan = plan_write("client", CLIENT, {"name": "New AB"}, stored, ConflictPolicy.HUBSPOT_WINS, MAPPINGS)
    assert plan.write and plan.conflict and plan.winner == "hubspot"
    assert plan.new_fingerprint is None  # the poller must still push Kleer's other changes
    assert changed_fields(plan.kleer_values, plan.hubspot_values)["name"] == {"kleer": "Old AB", "hubspot": "New AB"}


def test_kleer_wins_policy_keeps_kleer() -> None:
    stored = _fp({**CLIENT, "name": "Polled AB"})
    plan = plan_write("client", CLIENT, {"name": "New AB"}, stored, ConflictPolicy.KLEER_WINS, MAPPINGS)
    assert not plan.write and plan.conflict and plan.winner == "kleer"


def test_never_polled_record_is_written_without_storing_a_fingerprint() -> None:
    plan = plan_write("client", CLIENT, {"name": "New AB"}, None, ConflictPolicy.HUBSPOT_WINS, MAPPINGS)
    assert plan.write and not plan.conflict and plan.new_fingerprint is None


def test_decimals_become_json_numbers_for_kleer() -> None:
    assert kleer_json({"budget-hours": Decimal("1.50"), "n": Decimal("3")}) == {"budget-hours": 1.5, "n": 3}
