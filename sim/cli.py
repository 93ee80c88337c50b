"""``kleer-sync sim kleer|hubspot|broker``: run a simulator or the dev broker as its own process."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

# Each simulator module exposes add_arguments(parser) and run(args) -> int.
SIMULATORS = {
    "kleer": "sim.kleer.server",
    "hubspot": "sim.hubspot.server",
    "broker": "sim.broker",
}


def register(subparsers: Any) -> None:
    sim = subparsers.add_parser("sim", help="run a Kleer or HubSpot simulator, or the dev Kafka broker")
    kinds = sim.add_subparsers(dest="simulator", metavar="SIMULATOR")
    kinds.required = True
    for name, module_name in SIMULATORS.items():
        parser = kinds.add_parser(name, help=f"run the {name} simulator")
        parser.set_defaults(func=_runner(module_name))
        _add_arguments(parser, module_name)


def _add_arguments(parser: argparse.ArgumentParser, module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return
    module.add_arguments(parser)


def _runner(module_name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        result: int = importlib.import_module(module_name).run(args)
        return result

    return run
