"""What the workflow actions read from and write to HubSpot, over the shared ``HubSpotClient``.

Errors become the executor's vocabulary: HubSpot unavailable, rate limited or
refusing our token -> ``Transient`` (retried in the background); a record that
does not exist or a refused write -> ``BusinessError`` (the message says what
to fix).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from libs.hubspot.client import HubSpotClient
from libs.hubspot.errors import (
    HubSpotAuthError,
    HubSpotError,
    HubSpotNotFound,
    HubSpotRateLimited,
    HubSpotUnavailable,
)
from libs.hubspot.models import RecordInput
from libs.hubspot.objects import ObjectType
from libs.mapping.objects import KLEER_ID
from services.inbound.actions.drafts import LINE_ITEM_PROPERTIES, DealLineItem
from services.inbound.actions.failures import BusinessError, Transient

Properties = dict[str, str | None]

PRIMARY_COMPANY_TYPE_ID = 5  # HubSpot's "Primary" deal -> company label


def is_transient(exc: HubSpotError) -> bool:
    """HubSpot unavailable, rate limited or refusing our token: time (or an operator) may fix it."""
    return isinstance(exc, HubSpotUnavailable | HubSpotRateLimited | HubSpotAuthError)


def _failure(exc: HubSpotError, doing: str) -> Exception:
    if is_transient(exc):
        return Transient(f"HubSpot could not {doing}: {exc}")
    return BusinessError(f"HubSpot refused to {doing}: {exc.message}")


class Crm:
    def __init__(self, client: HubSpotClient) -> None:
        self.client = client

    async def read(self, kind: ObjectType, ids: Sequence[str], properties: Sequence[str]) -> dict[str, Properties]:
        """Current properties by record id; ids that do not exist are absent."""
        if not ids:
            return {}
        try:
            result = await self.client.batch_read(kind, list(ids), properties=list(properties))
        except HubSpotError as exc:
            raise _failure(exc, f"read {kind.value}") from exc
        for failed in result.failed:
            if failed.category not in ("OBJECT_NOT_FOUND",) and failed.status != 404:
                raise BusinessError(f"HubSpot refused to read {kind.value}: {failed.category}: {failed.message}")
        return {s.id: dict(s.record.properties) for s in result.succeeded if not s.record.archived}

    async def one(self, kind: ObjectType, record_id: str, properties: Sequence[str]) -> Properties:
        found = await self.read(kind, [record_id], properties)
        if record_id not in found:
            raise BusinessError(f"The HubSpot {kind.value[:-1]} {record_id} does not exist (any more)")
        return found[record_id]

    async def associated(self, kind: ObjectType, record_id: str, to: ObjectType) -> list[tuple[str, tuple[int, ...]]]:
        try:
            found = await self.client.get_associations(kind, record_id, to)
        except HubSpotNotFound:
            return []
        except HubSpotError as exc:
            raise _failure(exc, f"read the {to.value} of {kind.value} {record_id}") from exc
        return [(a.to_id, a.type_ids) for a in found]

    async def deal_company(self, deal_id: str) -> str:
        """The deal's company: the only one, or the one labelled primary."""
        companies = await self.associated(ObjectType.DEALS, deal_id, ObjectType.COMPANIES)
        if not companies:
            raise BusinessError("The deal has no associated company: associate the customer's company with the deal")
        if len(companies) == 1:
            return companies[0][0]
        primary = [c for c, types in companies if PRIMARY_COMPANY_TYPE_ID in types]
        if len(primary) == 1:
            return primary[0]
        raise BusinessError(
            f"The deal has {len(companies)} companies and none is marked primary: mark the customer's company "
            "as the deal's primary company"
        )

    async def line_items(self, deal_id: str) -> list[DealLineItem]:
        """The deal's line items, with the Kleer id of each one's HubSpot product (when it has one)."""
        ids = [i for i, _ in await self.associated(ObjectType.DEALS, deal_id, ObjectType.LINE_ITEMS)]
        found = await self.read(ObjectType.LINE_ITEMS, ids, LINE_ITEM_PROPERTIES)
        product_ids = sorted({p for props in found.values() if (p := (props.get("hs_product_id") or "").strip())})
        products = await self.read(ObjectType.PRODUCTS, product_ids, [KLEER_ID])
        items = []
        for item_id in ids:
            props = found.get(item_id)
            if props is None:
                continue  # deleted between the two reads
            product = products.get((props.get("hs_product_id") or "").strip()) or {}
            kleer_product = (product.get(KLEER_ID) or "").strip() or None
            items.append(DealLineItem(item_id, props, kleer_product))
        return items

    async def set_properties(self, kind: ObjectType, record_id: str, properties: Mapping[str, str]) -> None:
        try:
            result = await self.client.batch_update(kind, [RecordInput(dict(properties), id=record_id)])
        except HubSpotError as exc:
            raise _failure(exc, f"update {kind.value} {record_id}") from exc
        for failed in result.failed:
            if failed.category == "RATE_LIMITS" or (failed.status or 0) >= 500:
                raise Transient(f"HubSpot could not update {kind.value} {record_id}: {failed.message}")
            raise BusinessError(
                f"HubSpot refused to set {', '.join(properties)} on {kind.value} {record_id}: {failed.message} "
                "(has `kleer-sync hubspot setup` created the Kleer properties?)"
            )
