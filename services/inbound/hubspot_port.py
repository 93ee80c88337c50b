"""What the inbound handlers need from HubSpot: read current records, set properties.

``HubSpotPort`` is the interface the handlers are written against (tests may
pass any object with these two calls). ``ClientHubSpotPort`` implements it over
the shared ``libs.hubspot.HubSpotClient``, which owns retries (429/5xx/timeouts)
and the portal's rate budget shared by every pod (``PostgresRateBudget``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from libs.config import Settings
from libs.hubspot.client import HubSpotClient
from libs.hubspot.errors import HubSpotError
from libs.hubspot.models import InputFailed, RecordInput
from libs.hubspot.objects import ObjectType, object_type
from libs.hubspot.rate_budget import PostgresRateBudget

Properties = dict[str, str | None]


class HubSpotPortError(Exception):
    """HubSpot refused a call (after the client's retries for transient failures)."""

    def __init__(self, message: str, *, status: int | None = None, category: str = "") -> None:
        self.status, self.category = status, category
        super().__init__(message)

    @property
    def permanent(self) -> bool:
        """A 4xx other than 429: retrying the same call cannot help."""
        return self.status is not None and 400 <= self.status < 500 and self.status != 429


class HubSpotPort(Protocol):
    async def read(self, object_name: str, ids: Sequence[str], properties: Sequence[str]) -> dict[str, Properties]:
        """Current properties of existing records by id; ids that do not exist (or are archived) are absent."""
        ...

    async def set_properties(self, object_name: str, hubspot_id: str, properties: Mapping[str, str]) -> None:
        """Set properties of one record (raises ``HubSpotPortError``)."""
        ...


def _refusal_status(failed: InputFailed) -> int:
    """The HTTP status of one refused input: a refusal inside a 2xx/207 answer counts as a 400.

    (The 207 of a batch that refused one input is not a transient failure: retrying it refuses again.)
    """
    return failed.status if failed.status is not None and failed.status >= 400 else 400


def _kind(object_name: str) -> ObjectType:
    kind = object_type(object_name)
    if kind is None:
        raise ValueError(f"unknown HubSpot object {object_name!r}")
    return kind


class ClientHubSpotPort:
    """``HubSpotPort`` over a started ``HubSpotClient``."""

    def __init__(self, client: HubSpotClient) -> None:
        self.client = client

    async def read(self, object_name: str, ids: Sequence[str], properties: Sequence[str]) -> dict[str, Properties]:
        if not ids:
            return {}
        try:
            result = await self.client.batch_read(_kind(object_name), list(ids), properties=list(properties))
        except HubSpotError as exc:
            raise HubSpotPortError(str(exc), status=exc.status, category=exc.category or "") from exc
        for failed in result.failed:
            if failed.category != "OBJECT_NOT_FOUND" and failed.status != 404:
                raise HubSpotPortError(
                    f"HubSpot refused to read {object_name}: {failed.category}: {failed.message}",
                    status=_refusal_status(failed),
                    category=failed.category,
                )
        return {
            s.id: dict(s.record.properties) for s in result.succeeded if not s.record.archived
        }

    async def set_properties(self, object_name: str, hubspot_id: str, properties: Mapping[str, str]) -> None:
        try:
            result = await self.client.batch_update(
                _kind(object_name), [RecordInput(dict(properties), id=hubspot_id)]
            )
        except HubSpotError as exc:
            raise HubSpotPortError(str(exc), status=exc.status, category=exc.category or "") from exc
        for failed in result.failed:
            raise HubSpotPortError(
                f"HubSpot refused to update {object_name} {hubspot_id}: {failed.category}: {failed.message}",
                status=_refusal_status(failed),
                category=failed.category,
            )


@contextlib.asynccontextmanager
async def hubspot_port_from_settings(settings: Settings, pool: Any = None) -> AsyncIterator[HubSpotPort]:
    """The port over a ``HubSpotClient`` from the environment; with ``pool`` the rate budget is shared."""
    options: dict[str, Any] = {}
    if pool is not None:
        portal = settings.get("HUBSPOT_PORTAL_ID") or settings.connection_id
        options["budget"] = PostgresRateBudget(pool, portal)
    async with HubSpotClient.from_settings(settings, **options) as client:
        yield ClientHubSpotPort(client)
