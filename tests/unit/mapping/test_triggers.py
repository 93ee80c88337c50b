"""Trigger properties (the user's list), One-way badges and what to read from HubSpot."""

from __future__ import annotations

import pytest

from libs.mapping import (
    TRIGGER_PROPERTIES,
    hubspot_properties_to_read,
    is_trigger,
    one_way_properties,
    parse_mappings,
    trigger_properties,
)
from libs.mapping.loader import default_mappings

# Copied by hand from seed/sync-directions.txt ("Companies (Clients):"), in its order.
SEED_COMPANY_TRIGGERS = [
    "name",
    "domain",
    "phone",
    "address", "address2", "city", "state", "zip", "country",
    "description",
    "industry",
    "website",
    "numberofemployees",
    "annualrevenue",
    "orgno", "organization_number", "registration_number", "vat_number",
    "email", "invoice_email", "kleer_email",
    "invoice_delivery_method", "kleer_delivery_method",
    "invoice_payment_days", "kleer_payment_days",
    "currency", "kleer_currency", "default_currency",
]  # fmt: skip


def test_company_triggers_are_exactly_the_users_list() -> None:
    assert list(TRIGGER_PROPERTIES) == SEED_COMPANY_TRIGGERS
    assert list(trigger_properties("client")) == SEED_COMPANY_TRIGGERS
    assert list(trigger_properties("companies")) == SEED_COMPANY_TRIGGERS


@pytest.mark.parametrize("prop", SEED_COMPANY_TRIGGERS)
def test_every_listed_company_property_triggers(prop: str) -> None:
    assert is_trigger("companies", prop)
    assert is_trigger("company", prop)
    assert is_trigger("0-2", prop)


@pytest.mark.parametrize(
    "prop", ["kleer_contact", "kleer_gln", "kleer_id", "hs_lead_status", "Name", "lifecyclestage"]
)
def test_other_company_properties_do_not_trigger(prop: str) -> None:
    assert not is_trigger("client", prop)


def test_one_way_properties_are_the_mapped_ones_minus_the_triggers() -> None:
    mapped = set(hubspot_properties_to_read("client"))
    one_way = one_way_properties("client")
    assert set(one_way) == mapped - set(TRIGGER_PROPERTIES)
    assert one_way == (
        "kleer_id",
        "kleer_contact",
        "kleer_gln",
        "kleer_country_code",
        "kleer_client_type",
        "kleer_active",
    )
    for prop in one_way:
        assert not is_trigger("client", prop)


def test_trigger_synonyms_are_read_from_hubspot() -> None:
    to_read = hubspot_properties_to_read("client")
    for synonym in (
        "organization_number",
        "registration_number",
        "email",
        "kleer_email",
        "invoice_delivery_method",
        "invoice_payment_days",
        "currency",
        "default_currency",
    ):
        assert synonym in to_read
    assert len(to_read) == len(set(to_read))
    # Triggers Kleer has no field for are not read (nothing to write them to).
    for unmapped in ("domain", "website", "industry", "numberofemployees", "annualrevenue", "state"):
        assert unmapped not in to_read


def test_company_mapping_covers_the_sensible_triggers() -> None:
    mapped = set(hubspot_properties_to_read("client"))
    unmapped_triggers = set(TRIGGER_PROPERTIES) - mapped
    assert unmapped_triggers == {
        "domain",
        "website",
        "industry",
        "numberofemployees",
        "annualrevenue",
        "state",
    }


def test_project_triggers_default_to_the_two_way_project_properties() -> None:
    project = default_mappings().object("project")
    two_way = tuple(f.hubspot_property for f in project.fields if f.writes_kleer)
    assert trigger_properties("project") == two_way
    assert trigger_properties("0-970") == two_way
    assert is_trigger("projects", "hs_name")
    assert one_way_properties("project") == ("kleer_id", "kleer_client_id")


def test_project_triggers_follow_the_mappings_file() -> None:
    mappings = parse_mappings("objects:\n  project:\n    triggers: [hs_name, kleer_project_status]")
    assert trigger_properties("project", mappings=mappings) == ("hs_name", "kleer_project_status")
    assert not is_trigger("project", "kleer_comment", mappings=mappings)
    assert "kleer_comment" in one_way_properties("project", mappings=mappings)


def test_objects_without_inbound_sync_never_trigger() -> None:
    assert trigger_properties("invoices") == ()
    assert not is_trigger("invoice", "hs_number")
    assert not is_trigger("deals", "dealname")
    assert not is_trigger("0-3", "amount")
    assert set(one_way_properties("invoice")) == set(hubspot_properties_to_read("invoice"))
    with pytest.raises(ValueError, match="unknown HubSpot object"):
        is_trigger("tickets", "subject")


def test_properties_to_read_cover_every_mapped_field() -> None:
    for obj in default_mappings().objects:
        to_read = hubspot_properties_to_read(obj.object_type)
        assert to_read[0] == "kleer_id"
        assert {f.hubspot_property for f in obj.fields} <= set(to_read)
