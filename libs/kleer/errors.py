"""Typed Kleer API errors. Each carries Kleer's own message and the context a person needs.

Catch them where a decision is made:

- ``KleerValidationError`` (400/422): Kleer refused the record; retrying the
  same record cannot help. ``record`` is the body we sent.
- ``KleerNotFound`` (404): the record, or the company, does not exist.
- ``KleerAuthError`` (401/403): the token is wrong or lacks access; fix the
  configuration (``KLEER_TOKEN``).
- ``KleerUnavailable``: Kleer kept failing (429/5xx, timeouts, connection
  errors) after every retry, or a create failed in a way that leaves it unknown
  whether Kleer stored the record (``ambiguous=True``: look before writing again).
- ``KleerError``: anything else (another 4xx, an answer that is not JSON).

The token is never part of an error's text.
"""

from __future__ import annotations

from typing import Any


class KleerError(Exception):
    """A Kleer API call failed."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        endpoint: str = "",
        record: Any = None,
        record_id: int | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.endpoint = endpoint
        self.record = record
        self.record_id = record_id
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f" ({self.endpoint}" + (f", id {self.record_id}" if self.record_id is not None else "") + ")"
        status = f"HTTP {self.status}: " if self.status is not None else ""
        return f"Kleer: {status}{self.message}{where if self.endpoint else ''}"


class KleerValidationError(KleerError):
    """Kleer rejected the record (400): fix the data, do not retry."""


class KleerNotFound(KleerError):
    """The record or the company does not exist (404)."""


class KleerAuthError(KleerError):
    """The token was refused (401/403): check KLEER_TOKEN and the company id."""


class KleerUnavailable(KleerError):
    """Kleer did not answer successfully after all retries (or a create's outcome is unknown)."""

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        retry_after: float | None = None,
        ambiguous: bool = False,
        **context: Any,
    ) -> None:
        self.attempts = attempts
        self.retry_after = retry_after
        self.ambiguous = ambiguous
        super().__init__(message, **context)
