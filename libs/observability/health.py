"""/healthz, /readyz and /metrics for every process, on METRICS_PORT.

``/healthz`` answers 200 while the event loop runs. ``/readyz`` runs the
process's readiness checks (Postgres reachable, migrations current, Kafka
reachable, ...) and answers 503 naming each failing one; it recovers by itself
when they do. ``/metrics`` is the Prometheus exposition; with the process's database pool,
each scrape first refreshes the gauges read from the database (the dead-letter
queue's size), at most once per ``DB_GAUGE_INTERVAL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

Check = Callable[[], Awaitable[None]]
CHECK_TIMEOUT = 2.0
#: Database-backed gauges are refreshed at most this often (seconds), however often Prometheus scrapes.
DB_GAUGE_INTERVAL = 5.0


async def run_checks(checks: Mapping[str, Check]) -> dict[str, str]:
    """Run every check concurrently; map each failing one to its error text."""

    async def one(name: str, check: Check) -> tuple[str, str | None]:
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT)
            return name, None
        except Exception as exc:
            return name, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    results = await asyncio.gather(*(one(n, c) for n, c in checks.items()))
    return {name: error for name, error in results if error is not None}


class _DatabaseGauges:
    """Refreshes the gauges whose truth is in the database before a scrape; throttled, never fails a scrape."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._refreshed = -DB_GAUGE_INTERVAL

    async def refresh(self) -> None:
        now = time.monotonic()
        if now - self._refreshed < DB_GAUGE_INTERVAL:
            return
        self._refreshed = now
        from libs.events.dlq import refresh_gauge

        # A database that is down keeps the last values: /readyz is what reports the outage.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(refresh_gauge(self.pool, CHECK_TIMEOUT), CHECK_TIMEOUT)


def health_routes(app: web.Application, checks: Mapping[str, Check], pool: asyncpg.Pool | None = None) -> None:
    """Add /healthz, /readyz and /metrics to ``app``; ``pool``: refresh the database-backed gauges on scrape."""
    gauges = _DatabaseGauges(pool) if pool is not None else None

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        failures = await run_checks(checks)
        if failures:
            return web.json_response({"status": "unready", "failing": failures}, status=503)
        return web.json_response({"status": "ready", "checks": sorted(checks)})

    async def metrics_handler(_: web.Request) -> web.Response:
        if gauges is not None:
            await gauges.refresh()
        response = web.Response(body=generate_latest())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)


class HealthServer:
    """A tiny aiohttp server with the three endpoints; ``start``/``stop``."""

    def __init__(
        self, port: int, checks: Mapping[str, Check], host: str = "0.0.0.0", pool: asyncpg.Pool | None = None
    ) -> None:
        self.port, self.host, self.checks, self.pool = port, host, dict(checks), pool
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        _mark_build_info()
        app = web.Application()
        health_routes(app, self.checks, self.pool)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _mark_build_info() -> None:
    """``kleer_sync_build_info{version, role} 1`` for this process (role from the logging context)."""
    from importlib.metadata import PackageNotFoundError, version

    import structlog

    from libs.observability.metrics import BUILD_INFO

    try:
        release = version("kleer-sync")
    except PackageNotFoundError:
        release = "unknown"
    role = str(structlog.contextvars.get_contextvars().get("role", "kleer-sync"))
    BUILD_INFO.labels(version=release, role=role).set(1)


def postgres_check(pool: asyncpg.Pool) -> Check:
    async def check() -> None:
        async with pool.acquire(timeout=CHECK_TIMEOUT) as conn:
            await conn.fetchval("SELECT 1")

    return check


def migrations_check(pool: asyncpg.Pool) -> Check:
    async def check() -> None:
        from libs.events.migrate import pending_migrations

        async with pool.acquire(timeout=CHECK_TIMEOUT) as conn:
            pending = await pending_migrations(conn)
        if pending:
            names = ", ".join(f"{m.version:03d}_{m.name}" for m in pending)
            raise RuntimeError(f"migrations not applied: {names}; run `kleer-sync db migrate`")

    return check


def kafka_check(bootstrap_servers: str) -> Check:
    async def check() -> None:
        errors = []
        for server in bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                _, writer = await asyncio.open_connection(host or "localhost", int(port))
            except OSError as exc:
                errors.append(f"{server}: {exc}")
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        raise ConnectionError("no Kafka bootstrap server reachable: " + "; ".join(errors))

    return check
