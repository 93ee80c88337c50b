"""``python -m tests.reliability.soak --minutes 30 --report bench/results/soak.json`` (``make soak``).

Runs the reliability scenario (``runner.py``, on a private PostgreSQL cluster
it restarts among the faults) with a random stream of faults for the given minutes, prints progress and the figures, writes the JSON
report and exits non-zero if an invariant failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from tests.reliability.runner import ScenarioConfig, run_scenario
from tests.reliability.workload import WorkloadConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the fault phase (default 30)")
    parser.add_argument("--report", type=Path, default=Path("bench/results/soak.json"))
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--clients", type=int, default=1000, help="clients in the seeded Kleer book")
    parser.add_argument("--load-rate", type=float, default=100.0, help="webhook requests/s of synthetic load")
    parser.add_argument("--events-per-request", type=int, default=10)
    parser.add_argument("--mean-fault-gap", type=float, default=8.0, help="mean seconds between faults")
    parser.add_argument("--poll-interval", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="logs go here (default: a temp dir)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("SOAK_KEEP_FAILED_DB", "1")  # a failed long run is worth a look: keep its database
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kleer-soak-"))
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {line}", flush=True)

    config = ScenarioConfig(
        workdir=workdir,
        seed=args.seed,
        clients=args.clients,
        fault_seconds=args.minutes * 60,
        every_kind_once=False,
        mean_fault_gap=args.mean_fault_gap,
        first_sync_timeout=600,
        settle_timeout=300,
        poll_interval=args.poll_interval,
        workload=WorkloadConfig(mutate_every=10.0, mutate_share=0.005, edit_every=0.5,
                                create_company_every=20.0, load_rate=args.load_rate,
                                load_events_per_request=args.events_per_request),
        progress=say,
    )
    report = asyncio.run(run_scenario(config))
    document = report.to_json()
    document["workdir"] = str(workdir)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")
    say(f"report written to {args.report}")
    print(json.dumps({k: document[k] for k in ("ok", "lost", "duplicated")}, indent=None))
    print("faults:", json.dumps(document["faults"].get("injected_by_kind", {})))
    print("webhook load:", json.dumps(document["webhook_load"]))
    print("postgres restarts:", document["faults"].get("postgres_restarts"),
          "| exits restarted by the runner:", document["processes"].get("exits_restarted_by_the_runner"))
    for result in document["invariants"]:
        print(f"  {'ok  ' if result['ok'] else 'FAIL'} {result['name']}: {json.dumps(result['figures'])[:300]}")
    if not report.ok:
        print(report.failure_message(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
