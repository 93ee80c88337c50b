"""HubSpot custom workflow actions: Create Kleer Client / Invoice / Agreement / Project, Update Kleer Agreement.

``install_routes(app, deps)`` (picked up by ``services.inbound.app``) adds
``POST /actions/{action}`` and its OpenAPI paths, and builds the actions'
parts when the app starts: the Kleer client, the HubSpot client and the
outbound pusher (for the push-back), reusing those in ``deps`` when present
(``deps.kleer``, ``deps.hubspot.client``; tests may pass ``deps.extras``
``"kleer"``, ``"hubspot_client"``, ``"pusher"``, ``"action_settings"`` and
``"today"``). Without Kleer or HubSpot credentials the actions answer 503
(HubSpot retries) and the rest of the service runs.

Modules: ``catalog`` (the JSON definitions in ``definitions/``), ``request``
(parsing and input checks), ``drafts`` (Kleer bodies, pure), ``crm`` (HubSpot
reads), ``workflows`` (the five actions), ``ledger`` (migration 005),
``executor`` (budget, BLOCK, background completion), ``routes`` (HTTP,
OpenAPI), ``cli`` (``kleer-sync hubspot register-actions``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from libs.config import ConfigError
from libs.observability.logging import get_logger
from services.inbound.deps import InboundDeps

log = get_logger(__name__)


class ActionRuntime:
    """Builds the actions' parts at app start-up and closes what it opened at clean-up."""

    def __init__(self, deps: InboundDeps) -> None:
        self.deps = deps
        self._executor: Any = None
        self._problem: str | None = None

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        from services.inbound.actions.executor import ActionExecutor

        async with contextlib.AsyncExitStack() as stack:
            try:
                parts, settings = await self._build(stack)
            except (ConfigError, ValueError) as exc:
                self._problem = f"workflow actions are not configured: {exc}"
                log.error("workflow actions disabled", problem=str(exc))
            else:
                executor = ActionExecutor(parts, settings)
                await executor.start()
                stack.push_async_callback(executor.stop)
                self._executor = executor
            yield
            self._executor = None

    async def executor(self) -> Any:
        from services.inbound.actions.routes import ActionsUnavailable

        if self._executor is None:
            raise ActionsUnavailable(self._problem or "the workflow actions are starting; retry in a moment")
        return self._executor

    async def _build(self, stack: contextlib.AsyncExitStack) -> tuple[Any, Any]:
        from libs.hubspot.client import HubSpotClient
        from libs.hubspot.rate_budget import PostgresRateBudget
        from libs.kleer import KleerClient
        from services.inbound.actions.executor import ActionSettings
        from services.inbound.actions.ledger import Ledger
        from services.inbound.actions.workflows import ActionParts
        from services.outbound.pusher import Pusher

        deps, extras = self.deps, self.deps.extras
        settings = deps.settings
        kleer = extras.get("kleer") or deps.kleer
        if kleer is None:
            kleer = await stack.enter_async_context(KleerClient.from_settings(settings))
        hubspot: HubSpotClient | None = extras.get("hubspot_client") or getattr(deps.hubspot, "client", None)
        if hubspot is None:
            portal = settings.get("HUBSPOT_PORTAL_ID") or settings.connection_id
            hubspot = await stack.enter_async_context(
                HubSpotClient.from_settings(settings, budget=PostgresRateBudget(deps.pool, portal))
            )
        pusher = extras.get("pusher") or Pusher(
            deps.store, {connection: hubspot for connection in set(deps.options.portals.values())}
        )
        action_settings = extras.get("action_settings") or ActionSettings(budget_s=deps.options.answer_within_seconds)
        parts = ActionParts(
            pool=deps.pool,
            store=deps.store,
            ledger=Ledger(deps.pool, deps.store),
            kleer=kleer,
            hubspot=hubspot,
            pusher=pusher,
            mappings=deps.mappings,
            today=extras.get("today") or dt.date.today,
        )
        return parts, action_settings


ACTIONS: web.AppKey[ActionRuntime] = web.AppKey("workflow_actions", ActionRuntime)


def install_routes(app: web.Application, deps: InboundDeps) -> None:
    """Add ``POST /actions/{action}`` to the inbound app (see the module docstring)."""
    from services.inbound.actions.routes import ACTION_ROUTE, ActionEndpoint, openapi_paths
    from services.inbound.openapi import add_openapi_paths

    runtime = ActionRuntime(deps)
    app[ACTIONS] = runtime
    app.cleanup_ctx.append(runtime.lifecycle)
    app.router.add_post(ACTION_ROUTE, ActionEndpoint(deps.options, runtime.executor).handle)
    paths, schemas = openapi_paths()
    add_openapi_paths(app, paths, schemas)


def register(subparsers: Any) -> None:
    """``kleer-sync hubspot register-actions`` (for ``services.cli.COMMAND_MODULES``)."""
    from services.inbound.actions.cli import register as register_cli

    register_cli(subparsers)
