"""A faithful Kleer API simulator: in-memory book, seeding, mutation, fault injection (see ``app``)."""

from sim.kleer.app import SimState, create_app
from sim.kleer.faults import FaultPlan, RequestLog
from sim.kleer.mutation import mutate
from sim.kleer.seeding import SeedSummary, seed
from sim.kleer.server import KleerSimServer
from sim.kleer.store import DEFAULT_COMPANY_ID, DEFAULT_TOKEN, CompanyBook, KleerStore

__all__ = [
    "DEFAULT_COMPANY_ID",
    "DEFAULT_TOKEN",
    "CompanyBook",
    "FaultPlan",
    "KleerSimServer",
    "KleerStore",
    "RequestLog",
    "SeedSummary",
    "SimState",
    "create_app",
    "mutate",
    "seed",
]
