"""The custom properties our setup step creates."""

from __future__ import annotations

from libs.mapping import custom_properties, parse_mappings


def test_every_synced_object_gets_a_unique_kleer_id() -> None:
    props = custom_properties()
    assert list(props) == [
        "companies",
        "deals",
        "products",
        "line_items",
        "invoices",
        "subscriptions",
        "projects",
    ]
    for obj, definitions in props.items():
        if obj == "deals":
            continue
        kleer_id = next(p for p in definitions if p.name == "kleer_id")
        assert kleer_id.has_unique_value
        assert kleer_id.to_api()["hasUniqueValue"] is True
        assert kleer_id.hubspot_object == obj


def test_deals_carry_the_kleer_record_ids() -> None:
    deals = custom_properties()["deals"]
    assert [p.name for p in deals] == ["kleer_invoice_id", "kleer_agreement_id", "kleer_project_id"]
    assert all(not p.has_unique_value for p in deals)


def test_company_custom_properties_are_the_ones_hubspot_lacks() -> None:
    names = [p.name for p in custom_properties()["companies"]]
    assert names == [
        "kleer_id", "orgno", "vat_number", "invoice_email", "kleer_delivery_method", "kleer_payment_days", "kleer_currency",
        "kleer_contact", "kleer_gln", "kleer_country_code", "kleer_client_type", "kleer_active",
    ]  # fmt: skip
    # Built-in company properties are never created.
    for builtin in ("name", "phone", "address", "city", "zip", "country", "description"):
        assert builtin not in names
    # Synonyms are the user's own properties; we read them but never create them.
    assert "organization_number" not in names and "email" not in names


def test_subscriptions_carry_mrr_and_arr() -> None:
    names = {p.name: p for p in custom_properties()["subscriptions"]}
    assert names["mrr"].type == "number" and names["arr"].field_type == "number"


def test_no_hubspot_builtin_is_ever_created() -> None:
    for definitions in custom_properties().values():
        for definition in definitions:
            assert not definition.name.startswith("hs_")


def test_property_bodies_match_hubspots_properties_api() -> None:
    by_name = {p.name: p for p in custom_properties()["companies"]}
    assert by_name["kleer_payment_days"].to_api() == {
        "name": "kleer_payment_days",
        "label": "Payment days",
        "type": "number",
        "fieldType": "number",
        "groupName": "kleer",
        "hasUniqueValue": False,
    }
    delivery = by_name["kleer_delivery_method"].to_api()
    assert delivery["type"] == "enumeration" and delivery["fieldType"] == "select"
    assert delivery["options"][0] == {"label": "Mail (post)", "value": "mail", "displayOrder": 0}  # type: ignore[index]
    active = by_name["kleer_active"].to_api()
    assert active["type"] == "bool" and active["fieldType"] == "booleancheckbox"
    assert [o["value"] for o in active["options"]] == ["true", "false"]  # type: ignore[attr-defined]
    assert "description" in by_name["invoice_email"].to_api()


def test_user_fields_add_custom_properties() -> None:
    mappings = parse_mappings(
        "objects:\n  client:\n    fields:\n"
        "      - {property: kleer_segment, kleer: client-type, custom: {label: Segment, field_type: textarea}}\n"
    )
    segment = custom_properties(mappings=mappings)["companies"][-1]
    assert (segment.name, segment.label, segment.type, segment.field_type) == (
        "kleer_segment",
        "Segment",
        "string",
        "textarea",
    )
