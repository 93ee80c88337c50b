"""``POST /crm/v3/objects/{type}/search``: filter groups, sorts, paging, the 200/10,000 caps."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from libs.hubspot.objects import ObjectType
from sim.hubspot.errors import validation_error
from sim.hubspot.schema import PropertyDef, to_epoch_ms
from sim.hubspot.store import CrmStore, Record

SEARCH_PAGE_LIMIT = 200
SEARCH_RESULT_CAP = 10_000
_OPERATORS = {
    "EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN",
}
_QUERY_FIELDS = ("name", "domain", "dealname", "hs_name", "hs_number", "hs_sku", "phone", "website")


def _key(prop: PropertyDef | None, value: Any) -> Any:
    """A comparable form of a stored or filter value for this property's type."""
    if value is None:
        return None
    text = str(value)
    if prop is not None and prop.type == "number":
        try:
            return Decimal(text)
        except InvalidOperation:
            return None
    if prop is not None and prop.type in ("date", "datetime"):
        return to_epoch_ms(prop.type, text)
    return text.lower()


def _matches(record: Record, flt: dict[str, Any], defs: dict[str, PropertyDef]) -> bool:
    name = flt.get("propertyName")
    operator = flt.get("operator", "EQ")
    prop = defs.get(str(name))
    stored = record.properties.get(str(name))
    if operator == "HAS_PROPERTY":
        return bool(stored)
    if operator == "NOT_HAS_PROPERTY":
        return not stored
    if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        token = str(flt.get("value", "")).lower().strip("*")
        contained = bool(stored) and token in str(stored).lower()
        return bool(contained) if operator == "CONTAINS_TOKEN" else not contained
    left = _key(prop, stored)
    if operator in ("IN", "NOT_IN"):
        values = {_key(prop, v) for v in flt.get("values") or []}
        return (left in values) if operator == "IN" else (left not in values)
    right = _key(prop, flt.get("value"))
    if operator == "EQ":
        return left is not None and bool(left == right)
    if operator == "NEQ":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        if operator == "LT":
            return bool(left < right)
        if operator == "LTE":
            return bool(left <= right)
        if operator == "GT":
            return bool(left > right)
        if operator == "GTE":
            return bool(left >= right)
        if operator == "BETWEEN":
            high = _key(prop, flt.get("highValue"))
            return high is not None and bool(right <= left <= high)
    except TypeError:
        return False
    return False


def _check_filters(groups: Any) -> list[list[dict[str, Any]]]:
    if groups is None:
        return []
    if not isinstance(groups, list) or len(groups) > 5:
        raise validation_error("'filterGroups' must be a list of at most 5 groups.")
    checked: list[list[dict[str, Any]]] = []
    total = 0
    for group in groups:
        filters = group.get("filters") if isinstance(group, dict) else None
        if not isinstance(filters, list) or len(filters) > 6:
            raise validation_error("Each filter group needs 'filters', a list of at most 6 filters.")
        for flt in filters:
            if not isinstance(flt, dict) or not isinstance(flt.get("propertyName"), str):
                raise validation_error("Each filter needs a 'propertyName'.")
            if flt.get("operator", "EQ") not in _OPERATORS:
                raise validation_error(f"Unknown filter operator {flt.get('operator')!r}.")
        total += len(filters)
        checked.append(filters)
    if total > 18:
        raise validation_error("A search may use at most 18 filters in total.")
    return checked


def search(store: CrmStore, object_type: ObjectType, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise validation_error("Invalid input JSON: expected a search request object.")
    limit = body.get("limit", 10)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= SEARCH_PAGE_LIMIT:
        raise validation_error(f"limit must be between 1 and {SEARCH_PAGE_LIMIT}.")
    after_raw = body.get("after") or "0"
    try:
        after = int(after_raw)
    except (TypeError, ValueError):
        raise validation_error("'after' must be the cursor from a previous page.") from None
    if after < 0 or after + limit > SEARCH_RESULT_CAP:
        raise validation_error(
            f"Search results are capped at {SEARCH_RESULT_CAP}: cannot page beyond that (after={after}, "
            f"limit={limit}). Narrow the filters instead."
        )
    groups = _check_filters(body.get("filterGroups"))
    defs = store.properties[object_type]
    names = store.read_names(object_type, body.get("properties"))
    query = str(body.get("query") or "").lower()
    matched: list[Record] = []
    for record in store.records[object_type].values():
        if groups and not any(all(_matches(record, f, defs) for f in g) for g in groups):
            continue
        if query and not any(query in record.properties.get(f, "").lower() for f in _QUERY_FIELDS):
            continue
        matched.append(record)
    sorts = body.get("sorts") or []
    if isinstance(sorts, list) and sorts:
        spec = sorts[0]
        if isinstance(spec, str):
            name, descending = spec.lstrip("-"), spec.startswith("-")
        elif isinstance(spec, dict):
            name, descending = str(spec.get("propertyName")), spec.get("direction") == "DESCENDING"
        else:
            raise validation_error("'sorts' entries need 'propertyName' and 'direction'.")
        prop = defs.get(name)

        def sort_key(record: Record) -> tuple[bool, Any]:
            key = _key(prop, record.properties.get(name))
            return (key is None, key if key is not None else "")

        matched.sort(key=sort_key, reverse=descending)
    page = matched[after:after + limit]
    answer: dict[str, Any] = {"total": len(matched), "results": [r.to_json(names) for r in page]}
    next_after = after + limit
    if next_after < len(matched) and next_after < SEARCH_RESULT_CAP:
        answer["paging"] = {"next": {"after": str(next_after)}}
    return answer
