"""The mappings file: defaults, user overrides, and validation messages that say what to fix."""

from __future__ import annotations

import pathlib

import pytest

from libs.mapping import MappingsFileError, default_mappings, load_mappings, parse_mappings
from libs.mapping.model import Direction
from libs.mapping.objects import KLEER_OBJECT_TYPES
from libs.mapping.seed import TRIGGER_PROPERTIES


def test_defaults_cover_every_object_type_with_a_unique_kleer_id() -> None:
    mappings = load_mappings(None)
    assert mappings is default_mappings()
    assert [o.object_type for o in mappings.objects] == list(KLEER_OBJECT_TYPES)
    for obj in mappings.objects:
        kleer_id = obj.field("kleer_id")
        assert kleer_id.direction == Direction.TO_HUBSPOT
        assert kleer_id.custom is not None and kleer_id.custom.has_unique_value


def test_mappings_are_frozen() -> None:
    field = default_mappings().object("client").field("name")
    with pytest.raises(AttributeError):
        field.hubspot_property = "other"  # type: ignore[misc]


def test_object_lookup_accepts_hubspot_names() -> None:
    mappings = default_mappings()
    assert mappings.object("companies") is mappings.object("client")
    assert mappings.object("0-970") is mappings.object("project")


def test_default_company_mapping_uses_canonical_synonyms_and_reads_the_others() -> None:
    client = default_mappings().object("client")
    assert client.field("organization_number").hubspot_property == "orgno"
    assert client.field("registration_number").kleer == "orgno"
    assert client.field("email").hubspot_property == "invoice_email"
    assert client.field("kleer_email").kleer == "email"
    assert client.field("invoice_delivery_method").hubspot_property == "kleer_delivery_method"
    assert client.field("invoice_payment_days").hubspot_property == "kleer_payment_days"
    assert client.field("currency").hubspot_property == "kleer_currency"
    assert client.field("default_currency").kleer == "currency-type"
    assert client.field("vat_number").kleer == "vat-nr"
    assert client.field("zip").kleer == "address.zip-code"
    assert client.field("description").kleer == "notes"


def test_an_empty_user_file_means_the_defaults(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("")
    mappings = load_mappings(str(path))
    assert mappings.source == str(path)
    assert [o.fields for o in mappings.objects] == [o.fields for o in default_mappings().objects]


def test_a_user_file_replaces_extends_and_removes_fields(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "mappings.yaml"
    path.write_text(
        """
version: 1
objects:
  client:
    fields:
      - {property: phone, kleer: phone}                            # replace (now outbound only)
      - {property: kleer_gln, remove: true}                        # remove
      - property: kleer_segment                                     # extend
        kleer: client-type
        direction: two_way
        custom: {label: Segment}
      - {property: kleer_payment_days, kleer: payment-days, direction: two_way, transform: int, default: 30}
"""
    )
    client = load_mappings(str(path)).object("client")
    props = [f.hubspot_property for f in client.fields]
    assert props.index("phone") == 2  # kept its place
    assert client.field("phone").direction == Direction.TO_HUBSPOT
    assert "kleer_gln" not in props
    assert props[-1] == "kleer_segment"
    assert client.field("kleer_segment").custom is not None
    assert client.field("kleer_payment_days").default == 30
    assert client.field("kleer_payment_days").aliases == ()  # the replacement is taken as written
    # Other objects keep their defaults.
    assert load_mappings(str(path)).object("invoice") == default_mappings().object("invoice")


def test_replace_fields_and_triggers_are_configurable() -> None:
    mappings = parse_mappings(
        """
objects:
  project:
    replace_fields: true
    triggers: [hs_name]
    fields:
      - {property: kleer_id, kleer: id, custom: {unique: true}}
      - {property: hs_name, kleer: name, direction: two_way, required: true}
      - {property: kleer_comment, kleer: comment, direction: two_way, custom: true}
"""
    )
    project = mappings.object("project")
    assert [f.hubspot_property for f in project.fields] == ["kleer_id", "hs_name", "kleer_comment"]
    assert project.triggers == ("hs_name",)
    assert project.field("kleer_comment").custom is not None
    assert project.field("kleer_comment").custom.label == "Kleer comment"  # type: ignore[union-attr]


def test_default_triggers() -> None:
    mappings = default_mappings()
    assert mappings.object("client").triggers == TRIGGER_PROPERTIES
    project = mappings.object("project")
    assert project.triggers == tuple(
        f.hubspot_property for f in project.fields if f.direction == Direction.TWO_WAY
    )
    assert mappings.object("invoice").triggers == ()


def problem(text: str) -> MappingsFileError:
    with pytest.raises(MappingsFileError) as info:
        parse_mappings(text, "user.yaml")
    return info.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, kleer: name, transform: txt}",
            ["unknown transform 'txt'", "did you mean 'text'"],
        ),
        ("objects:\n  clients: {}", ["unknown object type 'clients'", "did you mean 'client'"]),
        (
            "objects:\n  client:\n    fields:\n      - {property: Phone, kleer: phone}",
            ["internal property name", "lowercase"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y}",
            ["exactly one of `kleer`", "address.zip-code"],
        ),
        ("objects:\n  client:\n    fields:\n      - {property: x_y, kleer: zipCode}", ["kebab-case"]),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, kleer: a, compute: agreement_mrr}",
            ["exactly one"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, compute: mrr}",
            ["unknown computed value 'mrr'"],
        ),
        (
            "objects:\n  agreement:\n    fields:\n      - {property: x_y, compute: agreement_mrr, direction: two_way}",
            ["only syncs Kleer -> HubSpot"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, compute: agreement_mrr, direction: two_way}",
            ["computed value can only be written to HubSpot"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, kleer: a, direction: both}",
            ["unknown direction 'both'"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, kleer: a, transform: enum}",
            ["needs a `values` table"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, kleer: a, values: {A: a}}",
            ["only applies to `transform: enum`"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, kleer: a, direction: two_way, transform: enum, values: {A: a, B: a}}",
            ["its own HubSpot value"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, kleer: a, transform: int, default: ten}",
            ["`default` 'ten' does not fit transform int"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, kleer: a, default: 1.5}",
            ["whole number"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, kleer: a, aliases: [b]}",
            ["read inbound"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, kleer: a, direction: two_way, aliases: [x_y]}",
            ["repeat a property"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: hs_thing, kleer: a, custom: true}",
            ["hs_ prefix"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, kleer: a, custom: {lable: X}}",
            ["custom.lable", "did you mean 'label'"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, kleer: a, custom: {type: text}}",
            ["unknown custom.type 'text'"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, kleer: a, kler: b}",
            ["unknown key 'kler'", "did you mean 'kleer'"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: email_x, kleer: a, direction: two_way, aliases: [email]}",
            ["'email' is mapped twice"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, kleer: name, direction: two_way}",
            ["'name' is written inbound by both"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, kleer: address, direction: two_way}",
            ["written inbound by both"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: kleer_id, remove: true}",
            ["needs a `kleer_id` field"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: kleer_id, kleer: id}",
            ["unique values", "unique: true"],
        ),
        (
            "objects:\n  client:\n    fields:\n      - {property: nope, remove: true}",
            ["cannot remove property 'nope'"],
        ),
        ("objects:\n  invoice:\n    triggers: [hs_number]", ["cannot have triggers"]),
        ("objects:\n  client:\n    triggers: name", ["list of HubSpot property names"]),
        ("objects:\n  client:\n    hubspot_object: contacts", ["always syncs to companies"]),
        ("objects:\n  client:\n    fields: {name: name}", ["`fields` must be a list"]),
        ("objects:\n  client:\n    fields:\n      - name", ["each field must be a mapping"]),
        (
            "objects:\n  client:\n    fields:\n      - {property: x_y, kleer: a, required: yes please}",
            ["`required` must be true or false"],
        ),
        ("version: 2", ["unsupported format version 2", "version: 1"]),
        ("mappings: {}", ["unknown top-level key 'mappings'"]),
        ("- a\n- b", ["top level must be a mapping"]),
        ("objects: [client]", ["`objects` must be a mapping"]),
        ("objects:\n  client:\n    fields:\n  - {property: [", ["not valid YAML at line", "indentation"]),
    ],
)
def test_invalid_files_are_rejected_with_where_and_how_to_fix(text: str, expected: list[str]) -> None:
    error = problem(text)
    message = str(error)
    assert message.startswith("mappings file user.yaml")
    for fragment in expected:
        assert fragment in message
    assert error.source == "user.yaml"


def test_a_conflict_with_a_default_field_blames_the_user_file() -> None:
    error = problem(
        "objects:\n  client:\n    fields:\n      - {property: kleer_x, kleer: contact, direction: two_way}"
    )
    assert error.source == "user.yaml"
    assert error.field == "#1 (kleer_x)"
    assert "'contact' is written inbound by both 'kleer_contact' and 'kleer_x'" in str(error)


def test_field_errors_name_the_object_and_the_field() -> None:
    error = problem("objects:\n  client:\n    fields:\n      - {property: x_y, kleer: a, transform: txt}")
    assert error.object_type == "client"
    assert error.field == "#1 (x_y)"
    assert error.fix and "text" in error.fix
    assert "objects.client, field #1 (x_y)" in str(error)


def test_an_unreadable_file_names_the_variable_to_check(tmp_path: pathlib.Path) -> None:
    with pytest.raises(MappingsFileError, match=r"cannot be read.*MAPPINGS_FILE"):
        load_mappings(str(tmp_path / "missing.yaml"))
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(MappingsFileError, match="UTF-8"):
        load_mappings(str(binary))


def test_enum_list_form_labels_become_property_options() -> None:
    definition = default_mappings().object("client").field("kleer_delivery_method").custom
    assert definition is not None
    assert definition.type == "enumeration" and definition.field_type == "select"
    assert [(o.value, o.label) for o in definition.options] == [
        ("mail", "Mail (post)"),
        ("email", "Email"),
        ("manually", "Manually"),
        ("svea", "Svea"),
        ("efaktura", "E-faktura"),
    ]


def test_enum_mapping_form_is_accepted() -> None:
    mappings = parse_mappings(
        "objects:\n  client:\n    fields:\n"
        "      - {property: kleer_kind, kleer: client-type, transform: enum, values: {Company: company, Person: person}}\n"
    )
    table = mappings.object("client").field("kleer_kind").values
    assert table is not None and table.encode("Person") == "person"
