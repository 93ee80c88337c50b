"""Every transform, both ways, including the odd inputs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.mapping.errors import TransformError
from libs.mapping.transforms import (
    TRANSFORMS,
    EnumOption,
    EnumTable,
    as_ore,
    format_decimal,
    format_money,
    format_ore,
    round_half_up,
    to_decimal,
    units_to_ore,
)

DELIVERY = EnumTable(
    (
        EnumOption("Mail", "mail", "Mail (post)"),
        EnumOption("Email", "email", "Email"),
        EnumOption("Manually", "manually", "Manually"),
        EnumOption("Svea", "svea", "Svea"),
        EnumOption("Efaktura", "efaktura", "E-faktura"),
    )
)


def enc(name: str, value: object, table: EnumTable | None = None) -> str:
    return TRANSFORMS[name].encode(value, table)


def dec(name: str, value: str, table: EnumTable | None = None) -> object:
    decoder = TRANSFORMS[name].decode
    assert decoder is not None
    return decoder(value, table)


# ---------------------------------------------------------------- öre <-> decimal
@pytest.mark.parametrize(
    ("ore", "text"),
    [
        (12950, "129.50"),
        (0, "0.00"),
        (5, "0.05"),
        (-5, "-0.05"),
        (-12950, "-129.50"),
        (100, "1.00"),
        (99, "0.99"),
    ],
)
def test_ore_to_decimal_is_exact(ore: int, text: str) -> None:
    assert enc("ore_to_decimal", ore) == text
    assert dec("ore_to_decimal", text) == ore


def test_ore_to_decimal_of_none_clears_the_property() -> None:
    assert enc("ore_to_decimal", None) == ""


def test_ore_to_decimal_accepts_integral_strings_and_floats_but_not_fractions_of_ore() -> None:
    assert enc("ore_to_decimal", "12950") == "129.50"
    assert enc("ore_to_decimal", 12950.0) == "129.50"
    with pytest.raises(TransformError, match="whole öre"):
        enc("ore_to_decimal", 12950.5)
    with pytest.raises(TransformError):
        enc("ore_to_decimal", True)
    with pytest.raises(TransformError):
        enc("ore_to_decimal", "12,950")


@given(st.integers())
def test_any_ore_amount_round_trips_exactly(ore: int) -> None:
    text = format_ore(ore)
    assert units_to_ore(text) == ore
    assert Fraction(Decimal(text)) * 100 == ore  # exact, unlike Decimal arithmetic in a 28-digit context


@given(st.integers(min_value=-(10**40), max_value=10**40))
def test_two_decimal_strings_round_trip_through_ore(ore: int) -> None:
    text = format_ore(ore)
    assert format_ore(units_to_ore(text)) == text


@pytest.mark.parametrize(
    ("text", "ore"),
    [
        ("129.5", 12950),
        ("129", 12900),
        ("+1.00", 100),
        (".5", 50),
        ("1e2", 10000),
        ("0.005", 1),  # half away from zero
        ("0.0049", 0),
        ("-0.005", -1),
        ("1.2345", 123),
        ("1E-50", 0),
        (" 7.10 ", 710),
    ],
)
def test_decimal_to_ore_parses_and_rounds_half_away_from_zero(text: str, ore: int) -> None:
    assert dec("ore_to_decimal", text) == ore


@pytest.mark.parametrize(
    "text", ["abc", "1,5", "NaN", "Infinity", "1_000", "", "1e999", "1" * 1001, "0." + "0" * 200 + "1"]
)
def test_decimal_to_ore_rejects_non_numbers(text: str) -> None:
    with pytest.raises(TransformError):
        units_to_ore(text)


# ---------------------------------------------------------------- money / decimal / int
def test_money_always_has_two_decimals_and_rounds_once() -> None:
    assert enc("money", Decimal("189.25")) == "189.25"
    assert enc("money", Decimal("3.335")) == "3.34"
    assert enc("money", Decimal("-3.335")) == "-3.34"
    assert enc("money", 5) == "5.00"
    assert enc("money", None) == ""
    assert TRANSFORMS["money"].decode is None  # derived values never flow back


@given(st.integers(min_value=-(10**30), max_value=10**30))
def test_money_of_whole_ore_is_written_exactly(ore: int) -> None:
    # Computed row amounts arrive with two places already; they are written as they are.
    assert enc("money", Decimal(f"{ore}e-2")) == format_ore(ore)
    assert enc("money", Decimal(ore)) == f"{ore}.00"


def test_money_never_writes_a_negative_zero() -> None:
    assert enc("money", Decimal("-0.00")) == "0.00"
    assert enc("money", Decimal("-0.001")) == "0.00"
    assert enc("money", Decimal("-0")) == "0.00"


@given(st.integers(min_value=-(10**40), max_value=10**40))
def test_whole_numbers_are_written_as_plain_digits(number: int) -> None:
    assert enc("decimal", number) == enc("decimal", str(number)) == str(number)
    assert enc("text", number) == str(number)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("1.50"), "1.5"),
        (2.0, "2"),
        (2, "2"),
        ("0.000", "0"),
        (Decimal("-0"), "0"),
        (Decimal("1E+2"), "100"),
        (-1.25, "-1.25"),
    ],
)
def test_decimal_is_written_without_exponent_or_trailing_zeros(value: object, text: str) -> None:
    assert enc("decimal", value) == text


def test_decimal_decodes_to_exact_decimal() -> None:
    assert dec("decimal", "1.10") == Decimal("1.10")
    with pytest.raises(TransformError):
        dec("decimal", "one")
    with pytest.raises(TransformError):
        enc("decimal", float("nan"))
    with pytest.raises(TransformError):
        enc("decimal", [1])


def test_int_both_ways() -> None:
    assert enc("int", 30) == "30"
    assert enc("int", "30") == "30"
    assert enc("int", None) == ""
    assert dec("int", "30") == 30
    assert dec("int", " -4 ") == -4
    assert dec("int", "30.0") == 30
    for bad in ("30.5", "thirty"):
        with pytest.raises(TransformError):
            dec("int", bad)
    with pytest.raises(TransformError):
        enc("int", 1.5)
    with pytest.raises(TransformError):
        enc("int", False)


# ---------------------------------------------------------------- text
def test_text_passes_any_string_through_unchanged() -> None:
    long_name = "Å" * 2000
    assert enc("text", long_name) == long_name
    assert dec("text", long_name) == long_name
    assert enc("text", "Ünïcødé AB 株式会社") == "Ünïcødé AB 株式会社"
    assert enc("text", None) == ""
    assert enc("text", 123) == "123"
    assert enc("text", True) == "true"
    with pytest.raises(TransformError, match="expected text"):
        enc("text", {"a": 1})


def test_only_text_keeps_whitespace_only_values() -> None:
    assert not TRANSFORMS["text"].is_empty("  ")
    assert TRANSFORMS["text"].is_empty("")
    assert TRANSFORMS["int"].is_empty("  ")
    assert TRANSFORMS["date"].is_empty(None)


# ---------------------------------------------------------------- dates
@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("2024-02-29", "2024-02-29"),
        ("2024-02-29T13:45:00", "2024-02-29"),
        ("2024-02-29+01:00", "2024-02-29"),
        (dt.date(2024, 1, 31), "2024-01-31"),
        (dt.datetime(2024, 1, 31, 23, 59), "2024-01-31"),
        (None, ""),
        ("", ""),
    ],
)
def test_date_to_hubspot(value: object, text: str) -> None:
    assert enc("date", value) == text


@pytest.mark.parametrize("value", ["2023-02-29", "31/01/2024", "yesterday", 20240131])
def test_date_to_hubspot_rejects_non_dates(value: object) -> None:
    with pytest.raises(TransformError):
        enc("date", value)


@pytest.mark.parametrize(
    ("text", "date"),
    [
        ("2024-01-31", "2024-01-31"),
        ("1706659200000", "2024-01-31"),  # epoch ms at midnight UTC
        ("2024-01-31T00:00:00Z", "2024-01-31"),
        ("2024-01-31T23:30:00-02:00", "2024-02-01"),  # converted to UTC
        ("2024-01-31T10:00:00", "2024-01-31"),
    ],
)
def test_date_from_hubspot(text: str, date: str) -> None:
    assert dec("date", text) == date


@pytest.mark.parametrize("text", ["2024-13-01", "soon", "2024-01-31Tnope", "999999999999999"])
def test_date_from_hubspot_rejects_garbage(text: str) -> None:
    with pytest.raises(TransformError):
        dec("date", text)


@given(st.dates())
def test_dates_round_trip(day: dt.date) -> None:
    assert dec("date", enc("date", day.isoformat())) == day.isoformat()


# ---------------------------------------------------------------- bool
def test_bool_both_ways() -> None:
    assert enc("bool", True) == "true"
    assert enc("bool", False) == "false"
    assert enc("bool", None) == ""
    assert enc("bool", "TRUE") == "true"
    for text, value in [("true", True), ("false", False), ("Yes", True), ("0", False), (" on ", True)]:
        assert dec("bool", text) is value
    with pytest.raises(TransformError):
        dec("bool", "maybe")
    with pytest.raises(TransformError):
        enc("bool", 1)


# ---------------------------------------------------------------- currency
def test_currency_is_normalised_to_upper_case() -> None:
    assert enc("currency", "sek") == "SEK"
    assert dec("currency", " eur ") == "EUR"
    assert enc("currency", None) == ""


def test_unknown_but_well_formed_currency_passes_through() -> None:
    assert enc("currency", "XYZ") == "XYZ"


@pytest.mark.parametrize("value", ["SEKK", "kr", "12A", "S€K"])
def test_malformed_currency_is_rejected(value: str) -> None:
    with pytest.raises(TransformError, match="ISO 4217"):
        enc("currency", value)
    with pytest.raises(TransformError):
        dec("currency", value)


# ---------------------------------------------------------------- enum
@pytest.mark.parametrize(
    ("kleer", "hubspot"),
    [
        ("Mail", "mail"),
        ("Email", "email"),
        ("Manually", "manually"),
        ("Svea", "svea"),
        ("Efaktura", "efaktura"),
    ],
)
def test_delivery_type_maps_both_ways(kleer: str, hubspot: str) -> None:
    assert enc("enum", kleer, DELIVERY) == hubspot
    assert dec("enum", hubspot, DELIVERY) == kleer


def test_enum_decoding_accepts_kleer_values_and_labels_ignoring_case() -> None:
    assert dec("enum", "EMAIL", DELIVERY) == "Email"
    assert dec("enum", "E-faktura", DELIVERY) == "Efaktura"
    assert dec("enum", " Mail (post) ", DELIVERY) == "Mail"


def test_unknown_enum_values_are_errors_both_ways() -> None:
    with pytest.raises(TransformError, match="unknown value 'Fax'"):
        enc("enum", "Fax", DELIVERY)
    with pytest.raises(TransformError, match="unknown option 'fax'"):
        dec("enum", "fax", DELIVERY)
    assert enc("enum", None, DELIVERY) == ""


def test_many_to_one_enum_is_not_invertible() -> None:
    table = EnumTable((EnumOption("A", "x", "A"), EnumOption("B", "x", "B")))
    assert not table.is_invertible()
    assert DELIVERY.is_invertible()


# ---------------------------------------------------------------- helpers
def test_round_half_up_is_exact_and_symmetric() -> None:
    assert round_half_up(Fraction(1, 3)) == Decimal("0.33")
    assert round_half_up(Fraction(2, 3)) == Decimal("0.67")
    assert round_half_up(Fraction(-1, 200)) == Decimal("-0.01")
    assert round_half_up(Fraction(1, 1000)) == Decimal("0.00")
    assert str(round_half_up(Fraction(-1, 1000))) == "0.00"  # no negative zero
    assert round_half_up(Fraction(5, 2), 0) == Decimal(3)
    assert round_half_up(Decimal("12.345"), 2) == Decimal("12.35")


def test_to_decimal_bounds_and_types() -> None:
    assert to_decimal(0.1) == Decimal("0.1")  # floats via their shortest repr, not binary expansion
    with pytest.raises(TransformError):
        to_decimal(True)
    with pytest.raises(TransformError):
        to_decimal(Decimal("1E+200"))
    assert to_decimal("1" * 70) == Decimal("1" * 70)
    assert as_ore("-5") == -5
    assert format_decimal("1.000") == "1"
    assert format_money("0.1") == "0.10"
