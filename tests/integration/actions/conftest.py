"""The inbound app with the workflow actions, over a fresh database, the Kleer and HubSpot simulators.

``actions_env`` starts everything for one test: HubSpot's setup step has
created our properties in the simulated portal; the app answers on a free port
and HubSpot's simulator calls it signed (``env.invoke``). Time limits are
short: a 1.5 s answer budget, retries after 50-300 ms, a sweeper every 0.2 s.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from libs.config import Secret, Settings
from libs.events.dlq import DeadLetterQueue
from libs.events.group_commit import GroupCommitter
from libs.events.store import PostgresEventStore
from libs.hubspot.client import HubSpotClient
from libs.hubspot.objects import ObjectType
from libs.kleer import CLIENT, PRODUCT, KleerClient
from libs.mapping.loader import default_mappings
from services.inbound.actions import ACTIONS, install_routes
from services.inbound.actions.executor import ActionExecutor, ActionSettings
from services.inbound.app import app_runner, create_app
from services.inbound.deps import InboundDeps
from services.inbound.options import InboundOptions
from services.outbound.setup import setup_hubspot
from sim.broker import free_port
from sim.hubspot.actions import Invocation
from sim.kleer import KleerSimServer
from tests.fixtures.hubspot_sim import HubSpotSim
from tests.fixtures.kleer_sim import FAST_RETRY

CONNECTION = "acme"
FAST = ActionSettings(
    budget_s=4.0,  # the production answer budget; 1.5 s turned happy paths into BLOCK on a busy machine
    expiration_s=600.0,
    lease_s=5.0,
    retry_base_s=0.05,
    retry_cap_s=0.3,
    sweep_every_s=0.2,
    completion_retry_s=0.2,
    duplicate_poll_s=0.02,
    stop_grace_s=2.0,
)
_callbacks = itertools.count(1)


@dataclass
class ActionsEnv:
    base_url: str
    hubspot: HubSpotSim
    kleer_sim: KleerSimServer
    kleer: KleerClient
    client: HubSpotClient
    deps: InboundDeps
    app: web.Application

    @property
    def pool(self) -> asyncpg.Pool:
        return self.deps.pool

    @property
    def executor(self) -> ActionExecutor:
        executor = self.app[ACTIONS]._executor
        assert executor is not None
        return executor  # type: ignore[no-any-return]

    def url(self, action: str) -> str:
        return f"{self.base_url}/actions/{action}"

    async def invoke(
        self,
        action: str,
        object_id: str | int,
        *,
        object_type: str = "DEAL",
        inputs: Mapping[str, Any] | None = None,
        callback_id: str | None = None,
    ) -> Invocation:
        """A signed call from HubSpot's simulator, as a workflow makes it."""
        return await self.hubspot.invoke_action(
            self.url(action),
            objectType=object_type,
            objectId=int(object_id),
            inputFields=dict(inputs or {}),
            callbackId=callback_id or f"ap-{self.hubspot.app_id}-{next(_callbacks)}-test",
        )

    # --- data ----------------------------------------------------------------------------------------

    async def kleer_client(self, name: str = "Fjällbacka Bygg AB") -> int:
        return await self.kleer.create(CLIENT, {"name": name, "email": "ekonomi@example.se"})

    async def kleer_product(self, name: str, price_ore: int) -> int:
        return await self.kleer.create(PRODUCT, {"name": name, "price": price_ore})

    def company(self, name: str = "Fjällbacka Bygg AB", kleer_id: int | None = None, **props: str) -> str:
        values = {"name": name, **props}
        if kleer_id is not None:
            values["kleer_id"] = str(kleer_id)
        return str(self.hubspot.seed(ObjectType.COMPANIES, values).id)

    def product(self, name: str, price: str, kleer_id: int | None = None) -> str:
        values = {"name": name, "price": price}
        if kleer_id is not None:
            values["kleer_id"] = str(kleer_id)
        return str(self.hubspot.seed(ObjectType.PRODUCTS, values).id)

    def deal(self, company_id: str | None, items: Sequence[Mapping[str, str]] = (), **props: str) -> str:
        store = self.hubspot.store
        deal = self.hubspot.seed(ObjectType.DEALS, {"dealname": "Acme expansion", **props})
        if company_id is not None:
            store.associations.add(ObjectType.DEALS, deal.id, ObjectType.COMPANIES, int(company_id), 341)
        for position, item in enumerate(items):
            line = self.hubspot.seed(ObjectType.LINE_ITEMS, {"hs_position_on_quote": str(position), **item})
            store.associations.add(ObjectType.DEALS, deal.id, ObjectType.LINE_ITEMS, line.id, 19)
        return str(deal.id)

    def record(self, object_type: ObjectType, record_id: str) -> dict[str, str]:
        return dict(self.hubspot.store.get_one(object_type, str(record_id)).properties)

    def by_kleer_id(self, object_type: ObjectType, kleer_id: str) -> list[dict[str, str]]:
        return [r for r in self.hubspot.records(object_type) if r.get("kleer_id") == kleer_id]

    def associated(self, from_type: ObjectType, from_id: str, to_type: ObjectType) -> set[str]:
        return {str(i) for i in self.hubspot.store.associations.targets(from_type, int(from_id), to_type)}

    async def completion(self, callback_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """The outputFields HubSpot's callback API received for this call (waits for them)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            done = self.hubspot.sim.actions.completions.get(callback_id)
            if done:
                return dict(done[-1])
            await asyncio.sleep(0.05)
        raise AssertionError(f"no callback completion for {callback_id} within {timeout_s} s")

    async def action_row_when(self, callback_id: str, condition: str, timeout_s: float = 10.0) -> asyncpg.Record:
        """The workflow_actions row of this call once `condition` (SQL) holds for it (waits for it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        query = f"SELECT *, ({condition}) AS wanted FROM workflow_actions WHERE callback_id = $1"
        while True:
            row = await self.pool.fetchrow(query, callback_id)
            if row is not None and row["wanted"]:
                return row
            if loop.time() >= deadline:
                raise AssertionError(f"workflow_actions row of {callback_id} never had {condition}: {row}")
            await asyncio.sleep(0.05)

    async def events(self, *types: str) -> list[Any]:
        rows = await self.deps.store.read_all(0, 100_000, list(types) if types else None)
        return list(rows)


def ore(amount: str) -> int:
    return int(Decimal(amount) * 100)


@pytest.fixture
async def actions_env(
    pool: asyncpg.Pool, store: PostgresEventStore, database_url: str, hubspot_sim: HubSpotSim,
    kleer_sim: KleerSimServer,
) -> AsyncIterator[ActionsEnv]:
    hubspot_sim.set_rate_limit(0)  # not what these tests are about
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    kleer = KleerClient(company_id=kleer_sim.company_id, token=Secret(kleer_sim.token), base_url=kleer_sim.base_url,
                        retry=FAST_RETRY, timeout=5.0)
    async with kleer, hubspot_sim.client() as client, GroupCommitter(store) as committer:
        await setup_hubspot(client)
        deps = InboundDeps(
            settings=Settings({"DATABASE_URL": database_url, "CONNECTION_ID": CONNECTION}),
            options=InboundOptions(
                client_secret=Secret(hubspot_sim.client_secret),
                public_base_url=base_url,
                portals={hubspot_sim.portal_id: CONNECTION},
                app_id=hubspot_sim.app_id,
            ),
            pool=pool,
            store=store,
            dlq=DeadLetterQueue(store),
            committer=committer,
            mappings=default_mappings(),
            extras={"kleer": kleer, "hubspot_client": client, "action_settings": FAST},
        )
        app = create_app(deps, routes=(install_routes,))
        runner = app_runner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield ActionsEnv(base_url, hubspot_sim, kleer_sim, kleer, client, deps, app)
        finally:
            await runner.cleanup()
