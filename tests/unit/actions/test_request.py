"""Parsing a workflow action call and checking its input fields."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import orjson
import pytest

from services.inbound.actions import catalog
from services.inbound.actions.request import InputProblem, MalformedRequest, parse_inputs, parse_request


def _call(**overrides: object) -> bytes:
    body = {
        "callbackId": "ap-1234567-5678-1",
        "origin": {"portalId": 62515, "actionDefinitionId": 1001, "actionDefinitionVersion": 1},
        "context": {"source": "WORKFLOWS", "workflowId": 7},
        "object": {"objectId": 42, "objectType": "DEAL", "properties": {"dealname": "Big deal"}},
        "inputFields": {"payment_days": "30"},
    }
    body.update(overrides)
    return orjson.dumps(body)


def test_a_call_is_parsed() -> None:
    call = parse_request(_call())
    assert (call.callback_id, call.object_type, call.object_id, call.portal_id) == ("ap-1234567-5678-1", "DEAL", "42", 62515)
    assert call.workflow_id == "7" and call.definition_id == "1001"
    assert call.properties == {"dealname": "Big deal"}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[]", "JSON object"),
        (_call(callbackId=""), "callbackId"),
        (_call(callbackId="a/b"), "callbackId"),
        (_call(object=None), "object"),
        (_call(object={"objectId": "x", "objectType": "DEAL"}), "objectId"),
        (_call(object={"objectId": 1}), "objectType"),
        (_call(inputFields=[1]), "inputFields"),
    ],
)
def test_a_body_that_is_no_call_is_malformed(body: bytes, problem: str) -> None:
    with pytest.raises(MalformedRequest, match=problem):
        parse_request(body)


def _definition(name: str) -> catalog.ActionDefinition:
    found = catalog.definition(name)
    assert found is not None
    return found


def test_inputs_are_typed() -> None:
    inputs = parse_inputs(
        _definition(catalog.CREATE_INVOICE),
        {"invoice_date": "2025-03-01", "payment_days": 15, "your_reference": " Anna ", "create_client": "true",
         "unknown": "ignored"},
    )
    assert inputs.date("invoice_date") == dt.date(2025, 3, 1)
    assert inputs.whole("payment_days") == 15
    assert inputs.text("your_reference") == "Anna"
    assert inputs.flag("create_client") is True
    assert "unknown" not in inputs.values


def test_dates_may_come_as_epoch_milliseconds() -> None:
    inputs = parse_inputs(_definition(catalog.CREATE_INVOICE), {"invoice_date": "1740787200000"})
    assert inputs.date("invoice_date") == dt.date(2025, 3, 1)


def test_empty_optional_inputs_are_absent() -> None:
    inputs = parse_inputs(_definition(catalog.CREATE_INVOICE), {"invoice_date": "", "payment_days": None})
    assert inputs.values == {}


@pytest.mark.parametrize(
    ("action", "raw", "field", "words"),
    [
        (catalog.CREATE_INVOICE, {"payment_days": "abc"}, "payment_days", "must be a number"),
        (catalog.CREATE_INVOICE, {"payment_days": "1.5"}, "payment_days", "whole number"),
        (catalog.CREATE_INVOICE, {"payment_days": "400"}, "payment_days", "at most 365"),
        (catalog.CREATE_INVOICE, {"invoice_date": "next week"}, "invoice_date", "must be a date"),
        (catalog.CREATE_INVOICE, {"invoice_date": "2025-02-30"}, "invoice_date", "must be a date"),
        (catalog.CREATE_INVOICE, {"create_client": "maybe"}, "create_client", "must be one of"),
        (catalog.CREATE_INVOICE, {"your_reference": "x" * 201}, "your_reference", "longer than 200"),
        (catalog.UPDATE_AGREEMENT, {}, "change_type", "is required"),
        (catalog.UPDATE_AGREEMENT, {"change_type": "  "}, "change_type", "is required"),
        (catalog.CREATE_PROJECT, {"budget_amount": "10.005"}, "budget_amount", "at most 2 decimals"),
    ],
)
def test_a_missing_or_wrongly_typed_input_names_the_field(action: str, raw: dict, field: str, words: str) -> None:
    with pytest.raises(InputProblem) as caught:
        parse_inputs(_definition(action), raw)
    assert caught.value.field == field
    assert f"'{field}'" in caught.value.message and words in caught.value.message


def test_enumerations_match_case_insensitively_and_numbers_stay_exact() -> None:
    inputs = parse_inputs(_definition(catalog.UPDATE_AGREEMENT), {"change_type": "Renewal"})
    assert inputs.text("change_type") == "renewal"
    project = parse_inputs(_definition(catalog.CREATE_PROJECT), {"budget_amount": "1234.50", "budget_hours": 7.5})
    assert project.number("budget_amount") == Decimal("1234.50")
    assert project.number("budget_hours") == Decimal("7.5")
