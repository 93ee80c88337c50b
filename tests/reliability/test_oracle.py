"""The suite's own oracle (``expected.py``): it must see every kind of divergence, and none where there is none.

Pure and fast: a seeded Kleer book, the HubSpot state it implies built by
hand from the oracle's output, then one defect at a time.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sim.kleer.seeding import seed
from sim.kleer.store import KleerStore
from tests.reliability.expected import HubSpotIndex, diff_associations, diff_records, expected_state
from tests.reliability.faults import ALL_KINDS, plan_faults
from tests.reliability.invariants import Snapshot, check_workflow_actions
from tests.reliability.workload import ActionCall, Ledger


def _book() -> dict[str, list[dict[str, Any]]]:
    store = KleerStore()
    seed(store, n_clients=12, seed=4)
    return {name: list(table) for name, table in store.company().tables.items()}


def _hubspot_for(book: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, list[dict[str, Any]]], dict[Any, Any]]:
    """A perfect HubSpot: every expected record with its properties, and its associations."""
    state = expected_state(book)
    data: dict[str, list[dict[str, Any]]] = {}
    ids: dict[tuple[str, str], str] = {}
    for n, ((obj, kleer_id), record) in enumerate(sorted(state.records.items()), start=1):
        ids[(obj, kleer_id)] = str(n)
        data.setdefault(obj, []).append({"id": str(n), "properties": dict(record.properties)})
    links = {pair: {ids[(pair[0], f)]: {ids[(pair[1], t)] for t in tos} for f, tos in by_from.items()}
             for pair, by_from in state.associations.items()}
    return data, links


def _diff(book: dict[str, list[dict[str, Any]]], data: dict[str, list[dict[str, Any]]], links: dict[Any, Any]) -> Any:
    state = expected_state(book)
    index = HubSpotIndex.build(data)
    diff = diff_records(state, index)
    diff_associations(state, index, links, diff)
    return diff


def test_a_faithful_hubspot_has_no_divergence() -> None:
    book = _book()
    data, links = _hubspot_for(book)
    diff = _diff(book, data, links)
    assert diff.ok, diff.problems()
    assert diff.compared_records > 50 and diff.compared_associations > 20


def test_drafts_and_credit_invoices_are_not_expected_but_rows_of_synced_invoices_are() -> None:
    state = expected_state(_book())
    assert state.left_out, "the seeded book has drafts and credit invoices"
    assert all(obj == "invoices" for obj, _ in state.left_out)
    invoice_rows = [k for (obj, k) in state.records if obj == "line_items" and "-row-" in k]
    assert invoice_rows and all(("invoices", k.split("-")[0]) in state.records for k in invoice_rows)


@pytest.mark.parametrize("defect", ["field", "amount", "missing", "duplicate", "unexpected", "association",
                                    "flagged_deleted"])
def test_each_kind_of_divergence_is_found(defect: str) -> None:
    book = _book()
    data, links = _hubspot_for(book)
    data = copy.deepcopy(data)
    company = data["companies"][0]
    invoice = data["invoices"][0]
    if defect == "field":
        company["properties"]["name"] += " (stale)"
    elif defect == "amount":
        amount = invoice["properties"]["hs_amount_billed"]
        invoice["properties"]["hs_amount_billed"] = f"{float(amount) + 0.01:.2f}"
    elif defect == "missing":
        data["line_items"].pop()
    elif defect == "duplicate":
        data["companies"].append({"id": "999999", "properties": dict(company["properties"])})
    elif defect == "unexpected":
        data["products"].append({"id": "999998", "properties": {"kleer_id": "424242", "name": "Ghost"}})
    elif defect == "association":
        pair = ("invoices", "companies")
        links[pair][invoice["id"]] = {"1"} if links[pair][invoice["id"]] != {"1"} else {"2"}
    else:
        company["properties"]["kleer_deleted"] = "true"
    diff = _diff(book, data, links)
    assert not diff.ok
    kind = {"amount": "field", "flagged_deleted": "field"}.get(defect, defect)
    assert any(p.startswith(kind) for p in diff.problems()), diff.problems()


def test_a_number_written_differently_is_the_same_value() -> None:
    book = _book()
    data, links = _hubspot_for(book)
    invoice = data["invoices"][0]["properties"]
    invoice["hs_amount_billed"] = invoice["hs_amount_billed"].rstrip("0").rstrip(".") or "0"
    assert _diff(book, data, links).ok


def test_the_short_plan_has_every_fault_kind_once_and_the_same_seed_gives_the_same_plan() -> None:
    plan = plan_faults(7, 65.0, every_kind_once=True)
    # Every kind once, and the Postgres restart twice: once stopped fast, once immediate.
    assert sorted(f.kind for f in plan) == sorted([*ALL_KINDS, "postgres_restart"])
    assert sorted(f.mode for f in plan if f.kind == "postgres_restart") == ["fast", "immediate"]
    assert all(2.0 <= f.duration <= 5.0 for f in plan if f.kind == "postgres_restart")
    assert plan == plan_faults(7, 65.0, every_kind_once=True)
    assert all(0 < f.at < 65.0 for f in plan)
    soak = plan_faults(7, 1800.0, every_kind_once=False, mean_gap=8.0)
    assert len(soak) > 150 and len({f.kind for f in soak}) == len(ALL_KINDS)
    assert {f.mode for f in soak if f.kind == "postgres_restart"} == {"fast", "immediate"}


def _action_invariant(invoices: list[dict[str, Any]]) -> Any:
    """The workflow-action invariant over one Create Kleer Invoice answered with invoice 4562."""
    call = ActionCall("create-invoice", "cb-wf-x-1", "DEAL", "19767", "wf-x-1", "1",
                      answers=[{"status": 200, "state": "SUCCESS", "output": {"kleer_id": "4562"}}])
    ledger = Ledger(actions=[call])
    snapshot = Snapshot(book={"client-invoice": invoices},
                        hubspot={"deals": [{"id": "19767", "properties": {"kleer_invoice_id": "4562"}}]},
                        expected=expected_state({}), index=HubSpotIndex.build({}))
    return check_workflow_actions(snapshot, ledger, {})


def test_a_credit_invoice_of_the_created_invoice_is_no_second_create() -> None:
    """Found by the 30-minute soak: the workload paid the invoice the action made, then credited it; the
    credit invoice copies the debit's your-reference (our tag) and was counted as a duplicate create."""
    created = {"id": 4562, "invoice-nr": 1001, "debit-invoice-nr": None, "your-reference": "wf-x-1"}
    credit = {"id": 4761, "invoice-nr": 1207, "debit-invoice-nr": 1001, "your-reference": "wf-x-1"}
    assert _action_invariant([created, credit]).ok
    twice = {"id": 4763, "invoice-nr": 1209, "debit-invoice-nr": None, "your-reference": "wf-x-1"}
    result = _action_invariant([created, credit, twice])
    assert not result.ok
    assert "Kleer holds ['4562', '4763'] tagged wf-x-1" in result.problems[0]
