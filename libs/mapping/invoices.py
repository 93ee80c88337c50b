"""Which Kleer invoices sync to HubSpot."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from libs.mapping.errors import MappingError
from libs.mapping.objects import INVOICE


def is_credit_invoice(invoice: Mapping[str, object]) -> bool:
    """A credit invoice carries the number of the invoice it credits in ``debit-invoice-nr``."""
    return invoice.get("debit-invoice-nr") not in (None, "", 0)


def should_sync_invoice(
    invoice: Mapping[str, object],
    include_credit: bool = False,
    history_from: dt.date | None = None,
) -> bool:
    """True when this Kleer invoice belongs in HubSpot.

    - Only certified invoices (``certified`` is true) are final; drafts never sync.
    - Credit invoices (non-empty ``debit-invoice-nr``) sync only with ``include_credit``.
    - With ``history_from``, only invoices whose ``invoice-date`` is on or after
      that day; an invoice without a readable ``invoice-date`` is then left out.
    ``MappingError`` if ``invoice`` is not an object.
    """
    if not isinstance(invoice, Mapping):
        raise MappingError("a Kleer invoice must be a JSON object", object_type=INVOICE, value=invoice)
    if invoice.get("certified") not in (True, "true"):
        return False
    if is_credit_invoice(invoice) and not include_credit:
        return False
    if history_from is not None:
        raw = invoice.get("invoice-date")
        try:
            invoice_date = dt.date.fromisoformat(str(raw)[:10])
        except ValueError:
            return False
        return invoice_date >= history_from
    return True
