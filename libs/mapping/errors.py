"""Typed errors of the mapping layer.

``MappingError`` means one record could not be mapped: it names the object
type, the HubSpot property and the Kleer field involved, the offending value
(shortened) and the reason, so an operator can find the record and fix it.
``MappingsFileError`` means the mappings file itself is wrong: it names the
file, the object type and the field, and says what to change.
"""

from __future__ import annotations

_MAX_VALUE_REPR = 80


def _short(value: object) -> str:
    text = repr(value)
    if len(text) > _MAX_VALUE_REPR:
        return f"{text[: _MAX_VALUE_REPR - 3]}...({len(text)} chars)"
    return text


class TransformError(ValueError):
    """A single value could not be converted; raised by transforms, wrapped into ``MappingError``."""


class MappingError(ValueError):
    """A record (or one of its fields) could not be mapped between Kleer and HubSpot."""

    def __init__(
        self,
        reason: str,
        *,
        object_type: str,
        field: str | None = None,
        property: str | None = None,
        kleer_path: str | None = None,
        value: object = None,
        direction: str | None = None,
    ) -> None:
        self.reason = reason
        self.object_type = object_type
        self.property = property
        self.kleer_path = kleer_path
        self.value = value
        self.direction = direction
        # ``field`` names whatever is at fault when it is neither a property nor a path.
        self.field = field or property or kleer_path
        where = []
        if kleer_path:
            where.append(f"Kleer field {kleer_path!r}")
        if property:
            where.append(f"HubSpot property {property!r}")
        if not where and field:
            where.append(f"field {field!r}")
        place = " / ".join(where) if where else "record"
        shown = "" if value is None else f" (value {_short(value)})"
        arrow = f" [{direction}]" if direction else ""
        super().__init__(f"{object_type}{arrow}: cannot map {place}: {reason}{shown}")


class MappingsFileError(ValueError):
    """The mappings file is invalid; the message says where and what to fix."""

    def __init__(
        self,
        problem: str,
        *,
        source: str,
        object_type: str | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.source = source
        self.object_type = object_type
        self.field = field
        self.fix = fix
        where = source
        if object_type:
            where += f": objects.{object_type}"
        if field:
            where += f", field {field}"
        message = f"mappings file {where}: {problem}"
        if fix:
            message += f"; {fix}"
        super().__init__(message)
