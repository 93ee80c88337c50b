"""Typed errors from HubSpot answers, and the per-input batch outcome types."""

from __future__ import annotations

import pytest

from libs.hubspot.client import _fan_out
from libs.hubspot.errors import (
    RETRYABLE_STATUSES,
    HubSpotAuthError,
    HubSpotConflict,
    HubSpotNotFound,
    HubSpotRateLimited,
    HubSpotRequestError,
    HubSpotUnavailable,
    HubSpotValidationError,
    error_for_status,
)
from libs.hubspot.models import BatchResult, HubSpotRecord, InputFailed, InputSucceeded, PropertySpec


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, HubSpotValidationError), (401, HubSpotAuthError), (403, HubSpotAuthError), (404, HubSpotNotFound),
     (409, HubSpotConflict), (429, HubSpotRateLimited), (503, HubSpotUnavailable), (500, HubSpotUnavailable),
     (405, HubSpotRequestError), (414, HubSpotRequestError)],
)
def test_each_status_maps_to_its_typed_error(status: int, kind: type) -> None:
    error = error_for_status(status, {"message": "m", "category": "C", "correlationId": "abc"}, "GET /x")
    assert isinstance(error, kind)
    assert error.status == status and error.category == "C" and error.correlation_id == "abc"
    assert str(error) == f"HubSpot HTTP {status} C on GET /x: m (correlationId abc)"


def test_rate_limited_carries_the_policy() -> None:
    error = error_for_status(429, {"message": "m", "policyName": "DAILY"}, "GET /x")
    assert isinstance(error, HubSpotRateLimited) and error.policy == "DAILY"


def test_retryable_statuses_are_exactly_the_documented_ones() -> None:
    assert frozenset({429, 502, 503, 504, 521, 523, 524, 423}) == RETRYABLE_STATUSES


def record(record_id: str) -> HubSpotRecord:
    return HubSpotRecord(record_id, {})


def test_fan_out_gives_every_caller_index_its_shared_outcome() -> None:
    merged = BatchResult((InputSucceeded(0, "11", record("11"), True),),
                         (InputFailed(1, "VALIDATION_ERROR", "bad"),))
    result = _fan_out(merged, [[0, 2], [1, 3]])
    assert [(s.index, s.id) for s in result.succeeded] == [(0, "11"), (2, "11")]
    assert [f.index for f in result.failed] == [1, 3]
    assert not result.ok and result.ids() == {0: "11", 2: "11"}
    assert set(result.outcomes()) == {0, 1, 2, 3}


def test_merge_orders_outcomes_by_index() -> None:
    parts = [BatchResult((InputSucceeded(5, "a", record("a")),)), BatchResult((InputSucceeded(1, "b", record("b")),))]
    assert [s.index for s in BatchResult.merge(parts).succeeded] == [1, 5]


def test_record_values_are_strings_or_none() -> None:
    parsed = HubSpotRecord.from_json({"id": 7, "properties": {"amount": 12, "name": None}})
    assert parsed.id == "7" and parsed.properties == {"amount": "12", "name": None}


def test_property_spec_uses_the_default_group_when_none_is_named() -> None:
    body = PropertySpec("kleer_id", "Kleer id", has_unique_value=True).to_json("companyinformation")
    assert body == {"name": "kleer_id", "label": "Kleer id", "type": "string", "fieldType": "text",
                    "groupName": "companyinformation", "hasUniqueValue": True, "description": ""}
