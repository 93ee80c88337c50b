"""Associations between records (v4): typed, directional, stored both ways.

Writing ``from → to`` with type id N also records ``to → from`` with the
paired id (e.g. invoice→company 179 and company→invoice 180). Writes are
idempotent. Pairs whose ids the facts file does not give (projects ↔
companies, for instance) get simulator-assigned ids from 90001 up; use the
default-association endpoints for those, as the real integration must.
"""

from __future__ import annotations

import zlib
from typing import Any

from libs.hubspot.objects import ASSOCIATION_TYPE_IDS, HUBSPOT_DEFINED, ObjectType

_SYNTHETIC_BASE = 90_001


class AssociationStore:
    def __init__(self) -> None:
        # (from type, from id) → to type → to id → type ids
        self._links: dict[tuple[ObjectType, int], dict[ObjectType, dict[int, set[int]]]] = {}
        self._synthetic: dict[tuple[ObjectType, ObjectType], int] = {}

    def default_type_id(self, from_type: ObjectType, to_type: ObjectType) -> int:
        known = ASSOCIATION_TYPE_IDS.get((from_type, to_type))
        if known is not None:
            return known
        pair = (from_type, to_type)
        if pair not in self._synthetic:
            ordered = sorted([from_type.value, to_type.value])
            base = _SYNTHETIC_BASE + 2 * (zlib.crc32("|".join(ordered).encode()) % 5000)
            self._synthetic[pair] = base if from_type.value == ordered[0] else base + 1
            reverse = (to_type, from_type)
            self._synthetic[reverse] = base + 1 if from_type.value == ordered[0] else base
        return self._synthetic[pair]

    def valid_type_id(self, from_type: ObjectType, to_type: ObjectType, type_id: int) -> bool:
        known = ASSOCIATION_TYPE_IDS.get((from_type, to_type))
        if known is not None:
            return type_id == known
        return type_id > 0

    def _reverse_id(self, from_type: ObjectType, to_type: ObjectType, type_id: int) -> int:
        if ASSOCIATION_TYPE_IDS.get((from_type, to_type)) == type_id:
            return ASSOCIATION_TYPE_IDS[(to_type, from_type)]
        if self.default_type_id(from_type, to_type) == type_id:
            return self.default_type_id(to_type, from_type)
        return type_id

    def add(self, from_type: ObjectType, from_id: int, to_type: ObjectType, to_id: int, type_id: int) -> bool:
        """Record the association both ways; False if it already existed."""
        forward = self._links.setdefault((from_type, from_id), {}).setdefault(to_type, {}).setdefault(to_id, set())
        if type_id in forward:
            return False
        forward.add(type_id)
        reverse_id = self._reverse_id(from_type, to_type, type_id)
        self._links.setdefault((to_type, to_id), {}).setdefault(from_type, {}).setdefault(from_id, set()).add(
            reverse_id
        )
        return True

    def count(self) -> int:
        """Associations stored, each counted once (not once per direction)."""
        total = sum(len(ids) for links in self._links.values() for targets in links.values() for ids in targets.values())
        return total // 2

    def remove(self, from_type: ObjectType, from_id: int, to_type: ObjectType, to_id: int) -> None:
        for a_type, a_id, b_type, b_id in ((from_type, from_id, to_type, to_id), (to_type, to_id, from_type, from_id)):
            targets = self._links.get((a_type, a_id), {}).get(b_type)
            if targets and b_id in targets:
                del targets[b_id]

    def remove_object(self, object_type: ObjectType, object_id: int) -> None:
        links = self._links.pop((object_type, object_id), {})
        for to_type, targets in links.items():
            for to_id in targets:
                back = self._links.get((to_type, to_id), {}).get(object_type)
                if back is not None:
                    back.pop(object_id, None)

    def targets(self, from_type: ObjectType, from_id: int, to_type: ObjectType) -> dict[int, set[int]]:
        return self._links.get((from_type, from_id), {}).get(to_type, {})

    def to_json(self, from_type: ObjectType, from_id: int, to_type: ObjectType) -> list[dict[str, Any]]:
        return [
            {
                "toObjectId": to_id,
                "associationTypes": [
                    {"category": HUBSPOT_DEFINED, "typeId": t, "label": None} for t in sorted(type_ids)
                ],
            }
            for to_id, type_ids in sorted(self.targets(from_type, from_id, to_type).items())
        ]
