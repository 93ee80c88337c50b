"""The Kleer client's request bodies: Decimals go out as exact JSON numbers."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.kleer.client import encode_body


def test_decimals_are_sent_as_exact_json_numbers_deep() -> None:
    body = {
        "budget-hours": Decimal("1.50"),
        "payment-days": 30,
        "address": {"zip-code": "411 01"},
        "recurring-rows": [{"quantity": Decimal("2.125"), "price": 12950}],
        "big": Decimal("1E+3"),
    }
    text = encode_body(body)
    assert b'"budget-hours":1.50' in text and b'"quantity":2.125' in text and b'"big":1000' in text
    assert orjson.loads(text)["recurring-rows"][0] == {"quantity": 2.125, "price": 12950}


@given(st.decimals(allow_nan=False, allow_infinity=False, places=6))
def test_a_decimal_reads_back_as_the_same_number(value: Decimal) -> None:
    text = encode_body({"quantity": value})
    assert Decimal(text.decode()[len('{"quantity":'):-1]) == value


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_a_non_finite_decimal_is_refused(value: Decimal) -> None:
    with pytest.raises(TypeError) as raised:
        encode_body({"quantity": value})
    assert "JSON has no such number" in str(raised.value.__cause__)


def test_other_unknown_types_are_still_refused() -> None:
    with pytest.raises(TypeError):
        encode_body({"when": object()})
