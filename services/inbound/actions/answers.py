"""What a workflow action answers HubSpot: ``{"outputFields": {"hs_execution_state": ..., ...}}`` (pure).

- ``SUCCESS`` with ``kleer_id``, ``kleer_number`` and a ``message``;
- ``FAIL_CONTINUE`` with a ``message`` a person can act on (the workflow goes on);
- ``BLOCK`` with ``hs_expiration_duration``: the work goes on and its final
  answer is sent to HubSpot's callback completion endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

EXECUTION_STATE = "hs_execution_state"
EXPIRATION = "hs_expiration_duration"
MAX_MESSAGE_CHARS = 1000


class ExecutionState(StrEnum):
    SUCCESS = "SUCCESS"
    FAIL_CONTINUE = "FAIL_CONTINUE"
    BLOCK = "BLOCK"


@dataclass(frozen=True)
class Outcome:
    """The final result of one action call."""

    state: ExecutionState
    message: str
    kleer_id: str = ""
    kleer_number: str = ""

    @classmethod
    def success(cls, kleer_id: object, kleer_number: object, message: str) -> Outcome:
        return cls(ExecutionState.SUCCESS, message, _text(kleer_id), _text(kleer_number))

    @classmethod
    def failure(cls, message: str, kleer_id: object = None, kleer_number: object = None) -> Outcome:
        return cls(ExecutionState.FAIL_CONTINUE, message, _text(kleer_id), _text(kleer_number))

    def output_fields(self) -> dict[str, str]:
        return {
            EXECUTION_STATE: self.state.value,
            "kleer_id": self.kleer_id,
            "kleer_number": self.kleer_number,
            "message": self.message[:MAX_MESSAGE_CHARS],
        }

    @classmethod
    def from_output_fields(cls, fields: Mapping[str, Any]) -> Outcome:
        return cls(
            ExecutionState(str(fields.get(EXECUTION_STATE))),
            str(fields.get("message") or ""),
            str(fields.get("kleer_id") or ""),
            str(fields.get("kleer_number") or ""),
        )


def _text(value: object) -> str:
    return "" if value is None else str(value)


def block_fields(expiration: str, message: str) -> dict[str, str]:
    """The answer of a call that finishes later (``expiration``: ISO-8601 duration, e.g. ``P1D``)."""
    return {EXECUTION_STATE: ExecutionState.BLOCK.value, EXPIRATION: expiration, "message": message}


def answer_body(output_fields: Mapping[str, str]) -> dict[str, Any]:
    return {"outputFields": dict(output_fields)}


def iso_duration(seconds: float) -> str:
    """Whole seconds as an ISO-8601 duration (``P1DT2H``, ``PT30M``, ``PT45S``)."""
    total = max(1, int(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    time = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    return "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")
