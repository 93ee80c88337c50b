"""The action definitions kept as JSON in the repo."""

from __future__ import annotations

import pytest

from services.inbound.actions import catalog


def test_every_action_has_a_definition_with_its_url_and_object_type() -> None:
    found = catalog.definitions()
    assert list(found) == list(catalog.ACTION_NAMES)
    assert found[catalog.CREATE_CLIENT].object_types == ("COMPANY",)
    for name in (catalog.CREATE_INVOICE, catalog.CREATE_AGREEMENT, catalog.UPDATE_AGREEMENT, catalog.CREATE_PROJECT):
        assert found[name].object_types == ("DEAL",)
    for definition in found.values():
        assert definition.action_url("https://sync.example.com/") == f"https://sync.example.com/actions/{definition.name}"
        assert definition.output_fields == ("kleer_id", "kleer_number", "message")
        assert definition.label.startswith(("Create Kleer", "Update Kleer"))


def test_api_body_fills_in_the_public_url_and_strips_our_extensions() -> None:
    body = catalog.definition(catalog.CREATE_INVOICE).api_body("https://sync.example.com")  # type: ignore[union-attr]
    assert body["actionUrl"] == "https://sync.example.com/actions/create-invoice"
    assert "x-rules" not in str(body)
    assert {f["typeDefinition"]["name"] for f in body["inputFields"]} >= {"invoice_date", "payment_days"}
    assert body["labels"]["en"]["actionName"] == "Create Kleer Invoice"


def test_input_rules_come_from_the_json() -> None:
    definition = catalog.definition(catalog.CREATE_INVOICE)
    assert definition is not None
    days = definition.input("payment_days")
    assert days is not None and days.integer and days.minimum == 0 and days.maximum == 365
    change = catalog.definition(catalog.UPDATE_AGREEMENT).input("change_type")  # type: ignore[union-attr]
    assert change is not None and change.required and change.options == ("upsell", "downgrade", "renewal")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"actionUrl": "https://elsewhere/actions/x", "objectTypes": ["DEAL"]}, "actionUrl"),
        ({"actionUrl": "{PUBLIC_BASE_URL}/actions/x", "objectTypes": []}, "objectTypes"),
        ({"actionUrl": "{PUBLIC_BASE_URL}/actions/x", "objectTypes": ["DEAL"], "labels": {}}, "actionName"),
        (
            {
                "actionUrl": "{PUBLIC_BASE_URL}/actions/x",
                "objectTypes": ["DEAL"],
                "labels": {"en": {"actionName": "X"}},
                "inputFields": [{"typeDefinition": {"name": "a", "type": "enumeration"}}],
            },
            "options",
        ),
    ],
)
def test_a_malformed_definition_is_refused_naming_the_problem(body: dict, problem: str) -> None:
    with pytest.raises(catalog.DefinitionError, match=problem):
        catalog.parse_definition("x", body)
