"""The three-way merge of one record's fields: pure, no I/O.

An inbound sync compares, per mapped field, three values:

- *base*: what HubSpot held after the last sync both sides took part in (what
  the pusher last wrote, or what HubSpot held when inbound sync last wrote
  Kleer);
- *hubspot*: HubSpot's current value;
- *kleer*: Kleer's current value.

A side that still holds the base value did not change the field, so the other
side's value is taken. When both changed it to the same value there is nothing
to decide. Only when both changed it to *different* values is it a conflict,
settled by the policy (the side named ``winner``). Without a base (``None``),
every difference is a conflict.

A value a side does not have (an empty number HubSpot cannot clear in Kleer,
a field never written) is ``ABSENT``, which compares equal only to itself; a
merged ``ABSENT`` means "leave the field as it is".
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Final, Generic, TypeVar


class _Absent(Enum):
    ABSENT = "absent"

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent.ABSENT

K = TypeVar("K", bound=Hashable)


class Side(StrEnum):
    HUBSPOT = "hubspot"
    KLEER = "kleer"


@dataclass(frozen=True)
class Merge(Generic[K]):
    """The merged values (``ABSENT`` ones left out) and the keys both sides changed differently."""

    values: dict[K, Any]
    conflicts: tuple[K, ...]
    #: Keys whose merged value is Kleer's and differs from HubSpot's: HubSpot has yet to receive it.
    kleer_ahead: tuple[K, ...]


def three_way_merge(
    base: Mapping[K, Any] | None,
    hubspot: Mapping[K, Any],
    kleer: Mapping[K, Any],
    *,
    winner: Side = Side.HUBSPOT,
) -> Merge[K]:
    """Merge ``hubspot`` and ``kleer`` against their common ``base`` (see the module docstring).

    Guarantees: ``merge(b, b, k).values == k`` and ``merge(b, h, b).values == h`` (values compared
    with ``==``); a key is a conflict only when both sides differ from the base and from each other.
    """
    keys = list(dict.fromkeys([*hubspot, *kleer, *(base or {})]))
    values: dict[K, Any] = {}
    conflicts: list[K] = []
    ahead: list[K] = []
    for key in keys:
        h, k = hubspot.get(key, ABSENT), kleer.get(key, ABSENT)
        b = ABSENT if base is None else base.get(key, ABSENT)
        if _same(h, k):
            merged = h
        elif base is not None and _same(h, b):
            merged = k
        elif base is not None and _same(k, b):
            merged = h
        else:
            conflicts.append(key)
            merged = h if winner is Side.HUBSPOT else k
        if merged is not ABSENT:
            values[key] = merged
        if not _same(merged, h):
            ahead.append(key)
    return Merge(values, tuple(conflicts), tuple(ahead))


def _same(a: Any, b: Any) -> bool:
    if a is ABSENT or b is ABSENT:
        return a is b
    return bool(a == b)
