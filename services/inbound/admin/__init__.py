"""The admin pages under ``/admin`` of the inbound service (``install_routes``).

A sub-application of its own, so its middleware (authentication, CSRF, security
headers: ``admin.auth``) guards every admin URL, including unknown ones, and
nothing else of the service. Pages: overview, field mappings, record audit,
dead-letter queue with redrive/discard, replay with a dry-run preview.

Dead-letter redrive uses the services' own redrivers, opened on first use
(``services.operations.deadletters.ServiceRedrivers``); tests hand in their
own factories as ``deps.extras["redriver_factories"]``. Replay likewise
(``deps.extras["replay_pusher"]``, see ``replay_views``).
"""

from __future__ import annotations

from aiohttp import web

from services.inbound.admin.auth import AdminAuth, middleware
from services.inbound.admin.replay_views import ReplayPages
from services.inbound.admin.views import AdminPages
from services.inbound.deps import InboundDeps
from services.operations.deadletters import ServiceRedrivers

PREFIX = "/admin"


def install_routes(app: web.Application, deps: InboundDeps) -> None:
    """Mount the admin pages on ``app`` (a route installer of ``services.inbound.app``)."""
    auth = AdminAuth(deps.settings.secret("ADMIN_TOKEN"))
    redrivers = ServiceRedrivers(deps.settings, deps.extras.get("redriver_factories"))
    pages = AdminPages(deps, auth, redrivers)
    admin = web.Application(middlewares=[middleware(auth)])
    r = admin.router
    r.add_get("", pages.overview)
    r.add_get("/", pages.overview)
    r.add_get("/admin.css", pages.stylesheet)
    r.add_get("/mappings", pages.field_mappings)
    r.add_get("/records", pages.record)
    r.add_get("/correlations/{id}", pages.correlation)
    r.add_get("/dlq", pages.dead_letters)
    r.add_get("/dlq/{id}", pages.dead_letter)
    r.add_post("/dlq/{id}/redrive", pages.redrive)
    r.add_post("/dlq/{id}/discard", pages.discard)
    replay = ReplayPages(pages)
    r.add_get("/replay", replay.index)
    r.add_post("/replay/preview", replay.preview)
    r.add_post("/replay/run", replay.run)
    r.add_get("/replay/runs/{id}", replay.run_page)

    async def close_redrivers(_: web.Application) -> None:
        await redrivers.aclose()

    admin.on_cleanup.append(close_redrivers)
    admin.on_cleanup.append(replay.close)
    app.add_subapp(PREFIX, admin)
