"""Run the Kleer simulator: as its own process (``kleer-sync sim kleer``) or inside a test's event loop.

Own process::

    kleer-sync sim kleer --port 8081 --seed 1 --clients 10000
    # then KLEER_API_BASE=http://127.0.0.1:8081/v1 KLEER_COMPANY_ID=1 KLEER_TOKEN=sim-kleer-token

In process (tests, demo)::

    async with KleerSimServer() as sim:
        sim.seed(n_clients=20, seed=1)
        async with KleerClient(company_id=sim.company_id, token=Secret(sim.token), base_url=sim.base_url) as kleer:
            ...
        sim.fail_next(503, 503)          # the next two API requests fail
        sim.request_count(status=503)    # what the simulator saw
"""

from __future__ import annotations

import argparse
import gc
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import web

from libs.observability.logging import configure_logging
from sim.kleer import seeding
from sim.kleer.app import ADMIN_PREFIX, API_PREFIX, SimState, create_app
from sim.kleer.faults import BadFaultPlan, FaultPlan, RequestLog
from sim.kleer.mutation import mutate
from sim.kleer.seeding import SeedSummary
from sim.kleer.store import DEFAULT_COMPANY_ID, DEFAULT_TOKEN, CompanyBook, KleerStore

DEFAULT_PORT = 8081


class KleerSimServer:
    """The simulator listening on ``host:port`` (port 0 picks a free one) in the running event loop."""

    def __init__(
        self,
        store: KleerStore | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = DEFAULT_TOKEN,
        company_id: int = DEFAULT_COMPANY_ID,
        retry_after: float = 1.0,
    ) -> None:
        """``retry_after``: the ``Retry-After`` seconds sent with injected 429/503 answers (tests use less)."""
        self.state = SimState(store or KleerStore(company_id=company_id, token=token), retry_after=retry_after)
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = create_app(self.state)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- where and who -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API base, as ``KLEER_API_BASE`` expects it: ``http://127.0.0.1:<port>/v1``."""
        return f"http://{self.host}:{self.port}{API_PREFIX}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.port}{ADMIN_PREFIX}"

    @property
    def store(self) -> KleerStore:
        return self.state.store

    @property
    def token(self) -> str:
        return next(iter(self.state.store.tokens))

    @property
    def company_id(self) -> int:
        return self.state.store.default_company_id

    @property
    def book(self) -> CompanyBook:
        """The default company's records (``book.clients.get(id)``, ``len(book.invoices)``, ...)."""
        return self.state.store.company()

    # --- data ------------------------------------------------------------------------------------------

    def seed(self, n_clients: int, seed: int = 1, **options: Any) -> SeedSummary:
        """Add a seeded book (see ``sim.kleer.seeding.seed``) to the default company."""
        return seeding.seed(self.state.store, n_clients=n_clients, seed=seed, **options)

    def mutate(self, share: float, seed: int = 1, company_id: int | None = None) -> dict[str, Any]:
        """Change ``share`` of the book (see ``sim.kleer.mutation``); returns what changed."""
        return mutate(self.state.store, share=share, seed=seed, company_id=company_id)

    # --- faults and inspection ------------------------------------------------------------------------

    @property
    def faults(self) -> FaultPlan:
        return self.state.faults

    @property
    def requests(self) -> RequestLog:
        return self.state.requests

    def set_faults(self, plan: dict[str, Any]) -> None:
        """Merge a plan in the ``POST /_sim/faults`` shape, e.g. ``{"error-rates": {"503": 0.2}}``."""
        self.state.faults.update(plan)

    def fail_next(self, *statuses: int) -> None:
        """The next API requests answer these statuses, one each, in order (0: drop the connection)."""
        self.state.faults.update({"fail-next": [*self.state.faults.fail_next, *statuses]})

    def clear_faults(self) -> None:
        self.state.clear_faults()

    def request_count(self, method: str | None = None, endpoint: str | None = None, status: int | None = None) -> int:
        """API requests seen; ``endpoint`` is a route template such as ``/v1/company/{company-id}/client``."""
        return self.state.requests.count(method, endpoint, status)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--clients", type=int, default=1000, help="clients to seed at start (default 1000; 0: empty)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the book (default 1)")
    parser.add_argument("--company-id", type=int, default=DEFAULT_COMPANY_ID, help="the company id (default 1)")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the X-Token the simulator accepts")
    parser.add_argument(
        "--faults",
        default=None,
        metavar="JSON",
        help='fault plan at start, as for POST /_sim/faults, e.g. \'{"error-rates": {"503": 0.05}}\'',
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, role="sim-kleer")
    state = SimState(KleerStore(company_id=args.company_id, token=args.token))
    if args.faults:
        try:
            state.faults.update(orjson.loads(args.faults))
        except (orjson.JSONDecodeError, BadFaultPlan) as exc:
            print(f"--faults is not a valid fault plan: {exc}")
            return 2
    summary = seeding.seed(state.store, n_clients=args.clients, seed=args.seed) if args.clients > 0 else None
    # The seeded book lives as long as the process: keep the cycle collector from rescanning it.
    gc.freeze()
    app = create_app(state)
    token_hint = f"X-Token {args.token}" if args.token == DEFAULT_TOKEN else "the X-Token given with --token"
    book = f"{summary.clients} clients, {summary.invoices} invoices, seed {summary.seed}" if summary else "empty book"
    print(
        f"Kleer simulator on http://{args.host}:{args.port}{API_PREFIX} (company {args.company_id}, {book}); "
        f"use {token_hint}. Admin: http://{args.host}:{args.port}{ADMIN_PREFIX}/state. Ctrl-C stops it.",
        flush=True,
    )
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)
    return 0
