"""Why an action call could not finish, as the executor decides on it.

- ``BusinessError``: the call cannot be done as asked (answer ``FAIL_CONTINUE``
  with the message: a person has to change the deal, company or workflow).
- ``Transient``: Kleer, HubSpot or Postgres failed in a way that time may fix;
  the call is retried in the background (the request answers ``BLOCK``).
- ``AmbiguousCreate``: a Kleer create was sent and its fate is unknown; it is
  never sent again (answer ``FAIL_CONTINUE`` naming the record to check).
- ``LostClaim``: another worker took the call over; this one stops quietly.
"""

from __future__ import annotations


class BusinessError(Exception):
    """The action cannot be done as asked; ``message`` says why and what to change."""

    def __init__(self, message: str, field: str | None = None, *, kleer_id: object = None,
                 kleer_number: object = None) -> None:
        self.message = message
        self.field = field
        self.kleer_id = kleer_id
        self.kleer_number = kleer_number
        super().__init__(message)


class Transient(Exception):
    """A failure worth retrying later; ``message`` is safe to log and to show."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class AmbiguousCreate(Exception):
    """A Kleer create may or may not have happened."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class LostClaim(Exception):
    """This worker no longer owns the call."""
