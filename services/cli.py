"""The one console command, ``kleer-sync``.

Each area of the product contributes its subcommands through a module that
exposes ``register(subparsers)``; the subcommand sets ``func(args) -> int``.
Modules are imported lazily so ``kleer-sync --help`` stays fast and an error
in one area names that area.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from typing import Any

# Areas that contribute subcommands. An area not yet built is simply absent.
COMMAND_MODULES: tuple[str, ...] = (
    "libs.events.cli",  # db migrate, relay
    "sim.cli",  # sim kleer, sim hubspot
    "services.outbound.cli",  # outbound [poller|pusher], hubspot setup
    "services.inbound.cli",  # inbound [handlers]
    "services.inbound.actions.cli",  # hubspot register-actions
    "services.operations.cli",  # audit, replay, dlq
    "services.demo",  # demo (make run)
)


_GROUPS: dict[tuple[int, str], Any] = {}


def command_group(subparsers: Any, name: str, help: str) -> Any:
    """The sub-command set of a group shared by several areas (e.g. ``hubspot setup`` and
    ``hubspot register-actions``): created by the first area that asks, reused by the others."""
    key = (id(subparsers), name)
    if key not in _GROUPS:
        parser = subparsers.add_parser(name, help=help)
        group = parser.add_subparsers(dest=f"{name}_command", metavar="TASK")
        group.required = True
        _GROUPS[key] = group
    return _GROUPS[key]


def _area_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent package is not there yet
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kleer-sync",
        description="Two-way sync between Kleer and HubSpot around a Postgres event log.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        if not _area_exists(name):
            continue
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
