"""Kleer's XML form: well-formed answers, and XML bodies read into the same dicts JSON bodies give."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.kleer import xml
from sim.kleer.schema import ValidationFailed, validate_body
from sim.kleer.seeding import seed
from sim.kleer.store import KleerStore


def test_a_record_renders_field_by_field_without_nulls() -> None:
    record = {"id": 5, "name": "Åre & Öst AB", "active": True, "notes": None, "address": {"zip-code": "830 13"}}
    text = xml.render("client", record)
    assert text == (
        "<client><id>5</id><name>Åre &amp; Öst AB</name><active>true</active>"
        "<address><zip-code>830 13</zip-code></address></client>"
    )


def test_rows_render_as_row_elements() -> None:
    root = ElementTree.fromstring(xml.render("client-invoice", {"rows": [{"quantity": 1.5}, {"quantity": 2}]}))
    assert [row.findtext("quantity") for row in root.iter("row")] == ["1.5", "2"]


def test_a_list_answer_is_a_paged_result() -> None:
    root = ElementTree.fromstring(xml.list_document("clients", "client", [{"id": 1}, {"id": 2}], 10, 12))
    assert root.tag == "clients" and root.attrib == {"offset": "10", "limit": "2", "size": "12"}
    assert [c.findtext("id") for c in root] == ["1", "2"]


@given(st.text())
def test_any_text_renders_to_well_formed_xml(value: str) -> None:
    ElementTree.fromstring(xml.render("client", {"name": value}))


def test_an_xml_body_reads_as_the_json_body_would() -> None:
    raw = (
        b"<client-invoice><client-ref><id>7</id></client-ref><certified>false</certified>"
        b"<rows><row><quantity>1.5</quantity><price>12950</price><vat>0.25</vat></row>"
        b"<row><quantity>2</quantity><price>-100</price></row></rows></client-invoice>"
    )
    assert xml.parse_body("client-invoice", raw) == {
        "client-ref": {"id": 7},
        "certified": False,
        "rows": [{"quantity": 1.5, "price": 12950, "vat": 0.25}, {"quantity": 2, "price": -100}],
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"<client><name>A", "not well-formed XML"),
        (b"<product><name>A</name></product>", "must have a <client> root element"),
        (b"<client><colour>blue</colour></client>", "unknown field 'colour' in client"),
        (b"<client><payment-days>ten</payment-days></client>", "client.payment-days must be an integer"),
        (b"<client><active>maybe</active></client>", "true or false"),
        (b"<client><address>Storgatan 1</address></client>", "must hold elements"),
        (b"<client><name>A</name><name>B</name></client>", "appears more than once"),
    ],
)
def test_bad_xml_bodies_are_refused_with_a_message(raw: bytes, message: str) -> None:
    with pytest.raises(ValidationFailed, match=message):
        xml.parse_body("client", raw)


def test_seeded_records_survive_a_round_trip_through_xml() -> None:
    store = KleerStore(today=date(2026, 1, 31))
    seed(store, n_clients=30, seed=2)
    for resource, table in store.company().tables.items():
        for record in list(table)[:20]:
            parsed = xml.parse_body(resource, xml.render(resource, record).encode())
            assert validate_body(resource, parsed, partial=True) == _without_nulls(
                validate_body(resource, record, partial=True)
            )


def _without_nulls(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: f"<client>{t}</client>".encode()))
def test_no_xml_body_crashes_the_reader(raw: bytes) -> None:
    try:
        xml.parse_body("client", raw)
    except ValidationFailed:
        pass
