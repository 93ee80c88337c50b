"""The inbound aiohttp application: ``create_app(deps, routes=...)``.

Routes of the service itself: ``POST /webhooks/hubspot``, ``GET /healthz``,
``GET /readyz``, ``GET /metrics``, ``GET /openapi.json``. Other modules
(workflow actions, admin pages) add theirs with a ``RouteInstaller``: a
function ``install(app, deps) -> None`` that calls ``app.router.add_*`` and,
to be documented, ``add_openapi_paths(app, {...})``. ``create_app`` calls the
installers it is given; when given none it uses ``default_route_installers()``,
which picks up ``services.inbound.actions:install_routes`` and
``services.inbound.admin:install_routes`` once those modules exist. The dependencies are in ``app[DEPS]`` for handlers that need them.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import re
import uuid
from collections.abc import Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler

from libs.observability.health import Check, health_routes, kafka_check, migrations_check, postgres_check
from libs.observability.logging import CORRELATION_HEADER, bind_correlation_id
from services.inbound.deps import InboundDeps
from services.inbound.intake import WEBHOOK_PATH, WebhookIntake
from services.inbound.openapi import OPENAPI_PATHS, OPENAPI_SCHEMAS, base_paths, base_schemas, openapi_handler
from services.inbound.options import MAX_HEADER_FIELD_BYTES, MAX_HEADERS

DEPS: web.AppKey[InboundDeps] = web.AppKey("inbound_deps", InboundDeps)

RouteInstaller = Callable[[web.Application, InboundDeps], None]

# module:function of route installers picked up when present.
OPTIONAL_INSTALLERS: tuple[str, ...] = (
    "services.inbound.actions:install_routes",
    "services.inbound.admin:install_routes",
)


#: Request line and header limits of the HTTP server (kwargs of ``web.AppRunner``): a request over
#: them is refused by aiohttp with 400/431 before any handler runs.
SERVER_LIMITS: dict[str, int] = {
    "max_line_size": MAX_HEADER_FIELD_BYTES,
    "max_field_size": MAX_HEADER_FIELD_BYTES,
    "max_headers": MAX_HEADERS,
}


def app_runner(app: web.Application) -> web.AppRunner:
    """An ``AppRunner`` with the service's limits (no access log: metrics count every request)."""
    return web.AppRunner(app, access_log=None, **SERVER_LIMITS)  # type: ignore[arg-type]


def default_route_installers() -> list[RouteInstaller]:
    """The installers of ``OPTIONAL_INSTALLERS`` whose module exists."""
    found: list[RouteInstaller] = []
    for dotted in OPTIONAL_INSTALLERS:
        module_name, _, attr = dotted.partition(":")
        try:
            if importlib.util.find_spec(module_name) is None:
                continue
        except ModuleNotFoundError:
            continue
        installer = getattr(importlib.import_module(module_name), attr, None)
        if callable(installer):
            found.append(installer)
    return found


def readiness_checks(deps: InboundDeps) -> dict[str, Check]:
    checks: dict[str, Check] = {
        "postgres": postgres_check(deps.pool),
        "migrations": migrations_check(deps.pool),
    }
    if deps.bootstrap_servers:
        checks["kafka"] = kafka_check(deps.bootstrap_servers)
    return checks


_CORRELATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# A new id is this process's random prefix and a counter: unique across pods, and no uuid4 (a system call
# for random bytes) per request on the webhook intake's hot path.
_PROCESS_PREFIX = uuid.uuid4().hex[:16]
_REQUESTS = itertools.count(1)


@web.middleware
async def correlation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request's log lines and our calls to Kleer and HubSpot made for it carry one correlation id.

    The caller's ``X-Correlation-Id`` when it sends a sane one, else a new one; the answer names it, so a
    request can be found in the logs (the events it records keep their own chain: see ``webhook_events``).
    """
    incoming = request.headers.get(CORRELATION_HEADER)
    if incoming and _CORRELATION_ID.fullmatch(incoming):
        correlation_id = incoming
    else:
        correlation_id = f"{_PROCESS_PREFIX}-{next(_REQUESTS):x}"
    bind_correlation_id(correlation_id)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[CORRELATION_HEADER] = correlation_id
        raise
    response.headers[CORRELATION_HEADER] = correlation_id
    return response


def create_app(deps: InboundDeps, routes: Sequence[RouteInstaller] | None = None) -> web.Application:
    """The inbound service's app over ``deps`` (built by ``services.inbound.deps.bootstrap``).

    The app does not own ``deps``: whoever built them closes them.
    """
    app = web.Application(client_max_size=deps.options.max_body_bytes, middlewares=[correlation_middleware])
    app[DEPS] = deps
    app[OPENAPI_PATHS] = base_paths(WEBHOOK_PATH)
    app[OPENAPI_SCHEMAS] = base_schemas()
    intake = WebhookIntake(deps.options, deps.committer)
    app.router.add_post(WEBHOOK_PATH, intake.handle)
    health_routes(app, readiness_checks(deps), deps.pool)
    app.router.add_get("/openapi.json", openapi_handler)
    for install in default_route_installers() if routes is None else routes:
        install(app, deps)
    return app
