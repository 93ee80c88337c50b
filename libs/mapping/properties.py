"""The HubSpot properties our setup step creates, per HubSpot object.

Create ``PROPERTY_GROUP`` on each object first, then these properties
(``POST /crm/v3/properties/{object}`` with ``PropertyDefinition.to_api()``);
both are safe to repeat when the setup step treats 409 CONFLICT as done.
"""

from __future__ import annotations

from libs.mapping.loader import resolve
from libs.mapping.model import Mappings, PropertyDefinition
from libs.mapping.objects import (
    DEAL_KLEER_AGREEMENT_ID,
    DEAL_KLEER_INVOICE_ID,
    DEAL_KLEER_PROJECT_ID,
    DEALS,
    HUBSPOT_OBJECTS,
)

DEAL_PROPERTIES: tuple[PropertyDefinition, ...] = (
    PropertyDefinition(
        DEALS.name,
        DEAL_KLEER_INVOICE_ID,
        "Kleer invoice ID",
        "string",
        "text",
        description="Id of the Kleer invoice a workflow created from this deal.",
    ),
    PropertyDefinition(
        DEALS.name,
        DEAL_KLEER_AGREEMENT_ID,
        "Kleer agreement ID",
        "string",
        "text",
        description="Id of the Kleer agreement a workflow created or updated from this deal.",
    ),
    PropertyDefinition(
        DEALS.name,
        DEAL_KLEER_PROJECT_ID,
        "Kleer project ID",
        "string",
        "text",
        description="Id of the Kleer project a workflow created from this deal.",
    ),
)


def custom_properties(*, mappings: Mappings | None = None) -> dict[str, tuple[PropertyDefinition, ...]]:
    """Custom properties per HubSpot object name (``companies``, ``deals``, ...), in mapping order.

    Every synced object has ``kleer_id`` (unique); deals have
    ``kleer_invoice_id``, ``kleer_agreement_id`` and ``kleer_project_id``.
    Objects with no custom properties are absent.
    """
    result: dict[str, tuple[PropertyDefinition, ...]] = {}
    for obj in resolve(mappings).objects:
        defined = tuple(f.custom for f in obj.fields if f.custom is not None)
        if defined:
            result[obj.hubspot_object.name] = defined
    result[DEALS.name] = DEAL_PROPERTIES
    order = [o.name for o in HUBSPOT_OBJECTS]
    return dict(sorted(result.items(), key=lambda item: order.index(item[0])))
