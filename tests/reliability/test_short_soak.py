"""The short reliability run of ``make test``: every fault kind once, nothing lost, nothing duplicated.

The whole system as separate processes (broker, both simulators, poller,
relay, pusher, inbound, handlers; the services as a database role without
superuser) over a fresh database on the run's own PostgreSQL cluster, a book
of 100 clients, about a minute of workload (Kleer changes, HubSpot edits and
creations, workflow actions with repeated callbackIds, sustained signed
webhook load) while each fault kind is injected once at a seeded random time:
SIGKILL of every service, a broker restart that loses all data, two Postgres
restarts (stop -m fast, stop -m immediate), HubSpot 429 storms, 5xx bursts,
slow answers and dropped connections, a Kleer outage, slow Kleer and lost
Kleer answers, duplicated and shuffled deliveries, forged, stale,
cross-portal and replayed webhooks. Then the system settles (bounded) and
every invariant of ``invariants.py`` must hold; a failure lists what
diverged. The report is kept in ``bench/results/soak-short.json`` for
inspection.

Wall time: about 1.75-2 minutes (start ~6 s, first sync ~7 s, faults 65 s,
settle ~25 s of at most 100 s, checks ~2 s).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.reliability.runner import ScenarioConfig, run_scenario
from tests.reliability.workload import WorkloadConfig

REPORT = Path(__file__).resolve().parents[2] / "bench" / "results" / "soak-short.json"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def test_every_fault_kind_once_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    config = ScenarioConfig(
        workdir=tmp_path,
        seed=int(os.environ.get("SOAK_SEED", "7")),
        clients=100,
        fault_seconds=65.0,
        every_kind_once=True,
        first_sync_timeout=60.0,
        # A workflow action call whose worker was killed is taken over once its 60 s lease runs out.
        settle_timeout=100.0,
        poll_interval=3,
        workload=WorkloadConfig(load_rate=40.0, load_events_per_request=10),
    )
    report = await run_scenario(config)
    document = report.to_json()
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")
    if not report.ok:
        pytest.fail(f"{report.failure_message()}\n(seed {config.seed}; full report in {REPORT}; process logs in "
                    f"{tmp_path}/logs)", pytrace=False)
    assert document["lost"] == 0 and document["duplicated"] == 0
    assert document["faults"]["total"] >= 15, document["faults"]
    assert document["faults"]["postgres_restarts"] == 2, document["faults"]
