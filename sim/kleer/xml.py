"""Kleer's XML form: answers for clients that do not ask for JSON, and XML request bodies.

Rendering follows the published schema's shape: one element per field,
nested objects as nested elements, lists as a wrapper element holding one
``<row>`` per item, ``null`` fields left out, booleans as ``true``/``false``.
A list answer is the schema's ``paged-result``::

    <clients offset="0" limit="2" size="7"><client>...</client><client>...</client></clients>

Parsing turns an XML body into the same dict a JSON body would give, typed
by the resource schema, so one validator serves both.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from sim.kleer.schema import BOOL, DECIMAL, INT, LIST, MONEY, OBJECT, SCHEMAS, Field, ValidationFailed

_PROLOG = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})
# Characters XML 1.0 cannot carry at all, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def escape(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text).translate(_ESCAPES)


def render(tag: str, value: Any) -> str:
    """One element (and its children) for ``value``; an XML document with ``document``."""
    parts: list[str] = []
    _render(tag, value, parts)
    return "".join(parts)


def document(tag: str, value: Any) -> str:
    return _PROLOG + render(tag, value)


def list_document(list_tag: str, item_tag: str, items: list[Any], offset: int, size: int) -> str:
    parts = [_PROLOG, f'<{list_tag} offset="{offset}" limit="{len(items)}" size="{size}">']
    for item in items:
        _render(item_tag, item, parts)
    parts.append(f"</{list_tag}>")
    return "".join(parts)


def _render(tag: str, value: Any, parts: list[str]) -> None:
    if value is None:
        return
    if isinstance(value, dict):
        parts.append(f"<{tag}>")
        for key, item in value.items():
            _render(escape(str(key)), item, parts)
        parts.append(f"</{tag}>")
    elif isinstance(value, list):
        parts.append(f"<{tag}>")
        for item in value:
            _render("row", item, parts)
        parts.append(f"</{tag}>")
    elif isinstance(value, bool):
        parts.append(f"<{tag}>{'true' if value else 'false'}</{tag}>")
    elif isinstance(value, str):
        parts.append(f"<{tag}>{escape(value)}</{tag}>")
    else:
        parts.append(f"<{tag}>{value}</{tag}>")


def parse_body(resource: str, raw: bytes) -> dict[str, Any]:
    """An XML request body of ``resource`` as the dict its JSON form would be; raises ``ValidationFailed``."""
    try:
        root = ElementTree.fromstring(raw)
    except (ElementTree.ParseError, ValueError) as exc:
        raise ValidationFailed(f"the body is not well-formed XML: {exc}") from None
    if root.tag != resource:
        raise ValidationFailed(f"the XML body must have a <{resource}> root element, got <{_tag(root)}>")
    return _object(SCHEMAS[resource], root, resource)


def _object(fields: Mapping[str, Field], element: ElementTree.Element, where: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for child in element:
        name = _tag(child)
        spec = fields.get(name)
        if spec is None:
            raise ValidationFailed(f"unknown field {name!r} in {where}")
        if name in values:
            raise ValidationFailed(f"{where}.{name} appears more than once")
        values[name] = _value(spec, child, f"{where}.{name}")
    return values


def _value(spec: Field, element: ElementTree.Element, where: str) -> Any:
    if spec.kind == OBJECT:
        assert spec.fields is not None
        if not len(element) and (element.text or "").strip():
            raise ValidationFailed(f"{where} must hold elements, not text")
        return _object(spec.fields, element, where)
    if spec.kind == LIST:
        assert spec.fields is not None
        items = []
        for index, child in enumerate(element):
            if _tag(child) != spec.item_tag:
                raise ValidationFailed(f"{where} may only hold <{spec.item_tag}> elements, got <{_tag(child)}>")
            items.append(_object(spec.fields, child, f"{where}[{index}]"))
        return items
    if len(element):
        raise ValidationFailed(f"{where} must be a single value, not nested elements")
    text = element.text or ""
    if spec.kind in (INT, MONEY, DECIMAL, BOOL):
        text = text.strip()
        if not text:
            return None
    if spec.kind in (INT, MONEY):
        try:
            return int(text)
        except ValueError:
            if spec.kind == MONEY:
                raise ValidationFailed(f"{where} must be a whole number of öre, got {text[:60]!r}") from None
            raise ValidationFailed(f"{where} must be an integer, got {text[:60]!r}") from None
    if spec.kind == DECIMAL:
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise ValidationFailed(f"{where} must be a number, got {text[:60]!r}") from None
        if not number.is_finite():
            raise ValidationFailed(f"{where} must be a finite number")
        return int(number) if number == number.to_integral_value() and abs(number) < 10**18 else float(number)
    if spec.kind == BOOL:
        if text not in ("true", "false", "1", "0"):
            raise ValidationFailed(f"{where} must be true or false, got {text[:60]!r}")
        return text in ("true", "1")
    return text


def _tag(element: ElementTree.Element) -> str:
    tag = element.tag
    return tag if isinstance(tag, str) else str(tag)
