"""The user's own lists, copied exactly from ``seed/sync-directions.txt``.

"Inbound sync is triggered when one of the following HubSpot properties is
changed. When triggered, all mapped fields are synced — not just the one that
changed." Properties not in the list get the "One-way" badge in the field
mappings table: they still sync both ways, but a change to one of them alone
starts no inbound sync.
"""

from __future__ import annotations

#: Companies (Clients): the triggering HubSpot properties, in the seed's order.
TRIGGER_PROPERTIES: tuple[str, ...] = (
    "name",
    "domain",
    "phone",
    "address",
    "address2",
    "city",
    "state",
    "zip",
    "country",
    "description",
    "industry",
    "website",
    "numberofemployees",
    "annualrevenue",
    "orgno",
    "organization_number",
    "registration_number",
    "vat_number",
    "email",
    "invoice_email",
    "kleer_email",
    "invoice_delivery_method",
    "kleer_delivery_method",
    "invoice_payment_days",
    "kleer_payment_days",
    "currency",
    "kleer_currency",
    "default_currency",
)
