"""``kleer-sync sim hubspot``: the HubSpot simulator as its own process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from sim.hubspot.app import create_app
from sim.hubspot.config import DEFAULT_TOKEN, SimConfig, WebhookConfig
from sim.hubspot.simulator import HubSpotSimulator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port to listen on (default 8090)")
    parser.add_argument("--portal-id", type=int, default=62515, help="portal (hub) id")
    parser.add_argument("--app-id", type=int, default=1_234_567, help="our app id (sourceId of our writes)")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the private-app token the simulator accepts")
    parser.add_argument("--client-id", default=SimConfig.client_id, help="OAuth client id")
    parser.add_argument("--client-secret", default=SimConfig.client_secret,
                        help="app client secret (signs webhooks and actions; OAuth)")
    parser.add_argument("--refresh-token", default=SimConfig.refresh_token, help="the OAuth refresh token accepted")
    parser.add_argument("--access-token-lifetime", type=float, default=1800.0,
                        help="seconds an OAuth access token lives (default 1800)")
    parser.add_argument("--rate-limit", type=int, default=110,
                        help="requests per interval per portal; 0 turns the limit off (default 110)")
    parser.add_argument("--rate-interval-ms", type=int, default=10_000, help="rate-limit window (default 10000)")
    parser.add_argument("--search-limit", type=int, default=5, help="search requests per second; 0 = off")
    parser.add_argument("--daily-limit", type=int, default=0, help="private-app daily cap; 0 = off")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="run windows and retry delays this many times faster (default 1)")
    parser.add_argument("--strict-value-types", action="store_true",
                        help="reject non-string property values instead of coercing them like HubSpot")
    parser.add_argument("--webhook-url", default=None, help="where to deliver webhooks (off when unset)")
    parser.add_argument("--webhook-signed-url", default=None,
                        help="public URL the webhook signature covers, if it differs (ingress)")
    parser.add_argument("--webhook-duplicate-rate", type=float, default=0.0, help="share of events sent twice")
    parser.add_argument("--webhook-shuffle", action="store_true", help="deliver events out of order")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        portal_id=args.portal_id,
        app_id=args.app_id,
        private_app_token=args.token,
        client_id=args.client_id,
        client_secret=args.client_secret,
        refresh_token=args.refresh_token,
        access_token_lifetime_s=args.access_token_lifetime,
        rate_limit_max=args.rate_limit,
        rate_limit_interval_ms=args.rate_interval_ms,
        search_limit_per_s=args.search_limit,
        daily_limit=args.daily_limit,
        time_scale=args.time_scale,
        strict_value_types=args.strict_value_types,
        webhook=WebhookConfig(
            target_url=args.webhook_url,
            signed_url=args.webhook_signed_url,
            duplicate_rate=args.webhook_duplicate_rate,
            shuffle=args.webhook_shuffle,
        ),
    )


async def serve(config: SimConfig, host: str, port: int) -> None:
    app = create_app(HubSpotSimulator(config))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(f"HubSpot simulator on http://{host}:{port} (portal {config.portal_id}, app {config.app_id}, "
          f"rate limit {config.rate_limit_max or 'off'}; admin under /_sim/)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(serve(config_from_args(args), args.host, args.port))
    except OSError as exc:
        print(f"cannot start the HubSpot simulator on {args.host}:{args.port}: {exc}. Pick another --port.")
        return 1
    return 0
