"""Value transforms between Kleer JSON values and HubSpot property strings.

Every transform has an *encode* (Kleer value -> HubSpot string) and, unless it
is one-way, a *decode* (HubSpot string -> Kleer JSON value). Encoders turn a
missing value (``None``) into ``""`` (which clears a HubSpot property);
decoders are only called with non-empty strings (the caller decides what an
empty HubSpot value means, see ``convert.to_kleer``). Both raise
``TransformError`` with a plain-language reason; the caller wraps it into a
``MappingError`` that names the field.

Money never touches ``float``: öre are ``int``, currency units are ``Decimal``
or exact strings, and arithmetic that may not terminate (division) uses
``fractions.Fraction`` and rounds once, half away from zero (what ``Decimal``
calls ROUND_HALF_UP), to whole öre.

| transform        | Kleer value                  | HubSpot string                   | HubSpot type / fieldType |
|------------------|------------------------------|----------------------------------|--------------------------|
| text             | str (ints, bools shown)      | unchanged                        | string / text            |
| ore_to_decimal   | int öre ``12950``            | ``"129.50"`` (2 decimals, exact) | number / number          |
| money (one-way)  | Decimal currency units       | ``"129.50"`` (2 decimals)        | number / number          |
| decimal          | int, Decimal, numeric str    | ``"1.5"`` (no trailing zeros)    | number / number          |
| int              | int                          | ``"30"``                         | number / number          |
| date             | ``"YYYY-MM-DD"`` (or longer) | ``"YYYY-MM-DD"``                 | date / date              |
| bool             | bool                         | ``"true"`` / ``"false"``         | bool / booleancheckbox   |
| currency         | ISO 4217 code                | upper-case 3-letter code         | string / text            |
| enum             | value of a table             | HubSpot option value             | enumeration / select     |
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from libs.mapping.errors import TransformError

# Inputs beyond these bounds are rejected rather than risking huge integer maths
# ("1e999999999"); any integer, however long, is fine.
_MAX_ABS_EXPONENT = 100
_MAX_TEXT_LENGTH = 1000
_DECIMAL_TEXT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INT_TEXT = re.compile(r"^[+-]?\d+$")
_DATE_PREFIX = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_EPOCH_MS = re.compile(r"^-?\d{1,15}$")
# Ints within this bound are written with str() (far below Python's limit on int-to-text digits).
_PLAIN_INT = 10**18


# ---------------------------------------------------------------- helpers
def _type_name(value: object) -> str:
    return type(value).__name__


def to_decimal(value: object) -> Decimal:
    """Exact ``Decimal`` of an int, Decimal, numeric string or float (floats via their shortest repr).

    Raises ``TransformError`` for booleans, non-numbers, NaN/infinity, text
    longer than 1,000 characters and exponents beyond ±100 (e.g. ``1e999``).
    """
    if isinstance(value, bool):
        raise TransformError(f"expected a number, got a boolean {value!r}")
    if isinstance(value, int):
        return Decimal(value)  # always finite, exponent 0
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_TEXT_LENGTH or not _DECIMAL_TEXT.match(text):
            raise TransformError(f"expected a number written with digits and an optional '.', got {value!r}")
        result = Decimal(text)
    else:
        raise TransformError(f"expected a number, got {_type_name(value)}")
    if not result.is_finite():
        raise TransformError(f"expected a finite number, got {value!r}")
    exponent = result.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if abs(exponent) > _MAX_ABS_EXPONENT:
        raise TransformError(f"number out of range (exponent beyond ±{_MAX_ABS_EXPONENT}): {value!r}")
    return result


def round_half_up(value: Fraction | Decimal | int, places: int = 2) -> Decimal:
    """Round exactly to ``places`` decimals, half away from zero; the result has exactly that many places."""
    frac = Fraction(value)
    scaled = frac * (10**places)
    negative = scaled < 0
    quotient, remainder = divmod(abs(scaled.numerator), scaled.denominator)
    if 2 * remainder >= scaled.denominator:
        quotient += 1
    text = str(quotient).rjust(places + 1, "0")
    whole, fraction = (text[:-places], text[-places:]) if places else (text, "")
    sign = "-" if negative and quotient else ""
    return Decimal(f"{sign}{whole}.{fraction}" if places else f"{sign}{whole}")


def format_ore(ore: int) -> str:
    """``12950`` -> ``"129.50"``; exact for any int, negative included."""
    sign = "-" if ore < 0 else ""
    whole, cents = divmod(abs(ore), 100)
    return f"{sign}{whole}.{cents:02d}"


def ore_to_units(ore: int) -> Decimal:
    """Öre -> Decimal currency units, exactly."""
    return Decimal(format_ore(ore))


def units_to_ore(value: object) -> int:
    """Currency units (``"129.5"``, ``Decimal``) -> int öre; more than two decimals round half away from zero."""
    amount = to_decimal(value)
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite, checked by to_decimal
    number = int("".join(map(str, digits)) or "0")
    shift = exponent + 2
    scale = int(10 ** abs(shift))
    if shift >= 0:
        ore = number * scale
    elif len(digits) + shift < 0:
        ore = 0  # smaller than a tenth of an öre
    else:
        ore, remainder = divmod(number, scale)
        if 2 * remainder >= scale:
            ore += 1
    return -ore if sign else ore


def as_ore(value: object) -> int:
    """A Kleer öre amount as int: ints, integral strings/Decimals and integral floats are accepted."""
    if isinstance(value, bool):
        raise TransformError(f"expected whole öre, got a boolean {value!r}")
    if isinstance(value, int):
        return value
    amount = to_decimal(value)
    if amount != amount.to_integral_value():
        raise TransformError(f"expected whole öre (an integer), got {value!r}")
    return int(amount)


def format_decimal(value: object) -> str:
    """Plain decimal notation without exponent or trailing zeros: ``1.50`` -> ``"1.5"``, ``2.0`` -> ``"2"``."""
    if type(value) is int and -_PLAIN_INT < value < _PLAIN_INT:
        return str(value)  # what the Decimal route gives an int, without it (most quantities and VAT rates)
    amount = to_decimal(value)
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text


def format_money(value: object) -> str:
    """Currency units with exactly two decimals (rounded half away from zero if finer)."""
    amount = to_decimal(value)
    if amount.as_tuple().exponent == -2:  # already two places (a computed row amount): nothing to round
        return str(amount) if amount else "0.00"  # "0.00", never "-0.00"
    return str(round_half_up(amount, 2))


# ---------------------------------------------------------------- enum tables
@dataclass(frozen=True)
class EnumOption:
    kleer: str
    hubspot: str
    label: str


@dataclass(frozen=True)
class EnumTable:
    """Kleer value <-> HubSpot option value; decoding is lenient (see ``decode``)."""

    options: tuple[EnumOption, ...]

    def encode(self, kleer_value: str) -> str:
        for option in self.options:
            if option.kleer == kleer_value:
                return option.hubspot
        known = ", ".join(o.kleer for o in self.options)
        raise TransformError(f"unknown value {kleer_value!r}; the value table knows {known}")

    def decode(self, hubspot_value: str) -> str:
        """HubSpot option value -> Kleer value.

        Exact option values first; then, ignoring case and surrounding space, an
        option value, a Kleer value or a label (so a synonym property holding
        ``"Email"`` still maps).
        """
        for option in self.options:
            if option.hubspot == hubspot_value:
                return option.kleer
        folded = hubspot_value.strip().casefold()
        for option in self.options:
            if folded in (option.hubspot.casefold(), option.kleer.casefold(), option.label.casefold()):
                return option.kleer
        known = ", ".join(o.hubspot for o in self.options)
        raise TransformError(f"unknown option {hubspot_value!r}; expected one of {known}")

    def is_invertible(self) -> bool:
        kleer = [o.kleer for o in self.options]
        hubspot = [o.hubspot for o in self.options]
        return len(set(kleer)) == len(kleer) and len(set(hubspot)) == len(hubspot)


# ---------------------------------------------------------------- encoders (Kleer -> HubSpot)
def encode_text(value: object, table: EnumTable | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal | float):
        return format_decimal(value)
    raise TransformError(f"expected text, got {_type_name(value)}")


def encode_ore(value: object, table: EnumTable | None = None) -> str:
    if value is None:
        return ""
    return format_ore(as_ore(value))


def encode_money(value: object, table: EnumTable | None = None) -> str:
    if value is None:
        return ""
    return format_money(value)


def encode_decimal(value: object, table: EnumTable | None = None) -> str:
    if value is None:
        return ""
    return format_decimal(value)


def encode_int(value: object, table: EnumTable | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        raise TransformError(f"expected a whole number, got a boolean {value!r}")
    if isinstance(value, int):
        return str(value)
    amount = to_decimal(value)
    if amount != amount.to_integral_value():
        raise TransformError(f"expected a whole number, got {value!r}")
    return str(int(amount))


def _date_from_prefix(text: str) -> dt.date:
    match = _DATE_PREFIX.match(text.strip())
    if not match:
        raise TransformError(f"expected a date written YYYY-MM-DD, got {text!r}")
    try:
        return dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError as exc:
        raise TransformError(f"not a calendar date: {text!r}") from exc


def encode_date(value: object, table: EnumTable | None = None) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        return _date_from_prefix(value).isoformat()
    raise TransformError(f"expected a date, got {_type_name(value)}")


def encode_bool(value: object, table: EnumTable | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "true" if decode_bool(value) else "false"
    raise TransformError(f"expected true or false, got {value!r}")


def _currency(value: str) -> str:
    code = value.strip().upper()
    if not _CURRENCY.match(code):
        raise TransformError(f"expected a three-letter ISO 4217 currency code such as SEK, got {value!r}")
    return code


def encode_currency(value: object, table: EnumTable | None = None) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise TransformError(f"expected a currency code, got {_type_name(value)}")
    return _currency(value)


def encode_enum(value: object, table: EnumTable | None = None) -> str:
    if value is None or value == "":
        return ""
    if table is None:  # pragma: no cover - the loader always attaches a table
        raise TransformError("enum transform without a value table")
    if not isinstance(value, str):
        raise TransformError(f"expected one of the table's values, got {_type_name(value)}")
    return table.encode(value)


# ---------------------------------------------------------------- decoders (HubSpot -> Kleer)
def decode_text(value: str, table: EnumTable | None = None) -> object:
    return value


def decode_ore(value: str, table: EnumTable | None = None) -> object:
    return units_to_ore(value)


def decode_decimal(value: str, table: EnumTable | None = None) -> object:
    return to_decimal(value)


def decode_int(value: str, table: EnumTable | None = None) -> object:
    text = value.strip()
    if _INT_TEXT.match(text):
        return int(text)
    amount = to_decimal(text)
    if amount != amount.to_integral_value():
        raise TransformError(f"expected a whole number, got {value!r}")
    return int(amount)


def decode_date(value: str, table: EnumTable | None = None) -> object:
    """``YYYY-MM-DD``, an ISO datetime (converted to UTC) or epoch milliseconds -> ``"YYYY-MM-DD"``."""
    text = value.strip()
    if _EPOCH_MS.match(text):
        try:
            moment = dt.datetime.fromtimestamp(int(text) / 1000, tz=dt.UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise TransformError(f"epoch milliseconds out of range: {value!r}") from exc
        return moment.date().isoformat()
    if len(text) > 10:
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise TransformError(
                f"expected YYYY-MM-DD, an ISO datetime or epoch milliseconds, got {value!r}"
            ) from exc
        if moment.tzinfo is not None:
            moment = moment.astimezone(dt.UTC)
        return moment.date().isoformat()
    return _date_from_prefix(text).isoformat()


_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def decode_bool(value: str, table: EnumTable | None = None) -> bool:
    folded = value.strip().casefold()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise TransformError(f"expected true or false, got {value!r}")


def decode_currency(value: str, table: EnumTable | None = None) -> object:
    return _currency(value)


def decode_enum(value: str, table: EnumTable | None = None) -> object:
    if table is None:  # pragma: no cover - the loader always attaches a table
        raise TransformError("enum transform without a value table")
    return table.decode(value)


# ---------------------------------------------------------------- registry
Encoder = Callable[[object, "EnumTable | None"], str]
Decoder = Callable[[str, "EnumTable | None"], object]


@dataclass(frozen=True)
class Transform:
    """A named transform: how to encode, decode, and which HubSpot property type it needs."""

    name: str
    encode: Encoder
    decode: Decoder | None
    hubspot_type: str
    field_type: str
    #: text keeps whitespace-only values; for every other transform blank means empty.
    keeps_blank: bool = False

    def is_empty(self, value: str | None) -> bool:
        if value is None:
            return True
        return value == "" if self.keeps_blank else value.strip() == ""


TRANSFORMS: Mapping[str, Transform] = {
    t.name: t
    for t in (
        Transform("text", encode_text, decode_text, "string", "text", keeps_blank=True),
        Transform("ore_to_decimal", encode_ore, decode_ore, "number", "number"),
        Transform("money", encode_money, None, "number", "number"),
        Transform("decimal", encode_decimal, decode_decimal, "number", "number"),
        Transform("int", encode_int, decode_int, "number", "number"),
        Transform("date", encode_date, decode_date, "date", "date"),
        Transform("bool", encode_bool, decode_bool, "bool", "booleancheckbox"),
        Transform("currency", encode_currency, decode_currency, "string", "text"),
        Transform("enum", encode_enum, decode_enum, "enumeration", "select"),
    )
}
