"""``kleer-sync hubspot register-actions``: register (or update) our workflow action definitions in the app.

Safe to run twice: the app's existing definitions are read first; one whose
``actionUrl`` is ours is updated when it differs from the JSON in the repo
(``definitions/``) and left alone when it does not; a missing one is created.
Needs ``HUBSPOT_APP_ID``, ``PUBLIC_BASE_URL`` and HubSpot credentials; HubSpot
takes the definitions API with the app's developer API key
(``HUBSPOT_DEVELOPER_API_KEY``, when the configuration declares it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from libs.config import ConfigError, Secret, Settings, load_settings
from libs.hubspot.client import HubSpotClient
from libs.hubspot.errors import HubSpotError
from services.inbound.actions import catalog

NEEDS = ("HUBSPOT_APP_ID", "PUBLIC_BASE_URL")
DEVELOPER_KEY = "HUBSPOT_DEVELOPER_API_KEY"


@dataclass(frozen=True)
class Registered:
    action: str
    status: str  # created | updated | unchanged | would create | would update
    definition_id: str | None
    label: str


def _ours(existing: Sequence[Mapping[str, Any]], url: str) -> Mapping[str, Any] | None:
    """The existing definition with our action URL (the newest, if several)."""
    matches = [d for d in existing if str(d.get("actionUrl", "")).rstrip("/") == url]
    return max(matches, key=lambda d: int(str(d.get("id") or 0)) if str(d.get("id") or "").isdigit() else 0,
               default=None)


def _differs(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return any(current.get(key) != value for key, value in wanted.items())


async def register_actions(
    client: HubSpotClient, app_id: int, public_base_url: str, *, dry_run: bool = False
) -> list[Registered]:
    """Create or update every definition of ``catalog.definitions()``; one ``Registered`` per action."""
    existing = await client.list_action_definitions(app_id)
    done: list[Registered] = []
    for definition in catalog.definitions().values():
        body = definition.api_body(public_base_url)
        current = _ours(existing, body["actionUrl"])
        if current is None:
            if dry_run:
                done.append(Registered(definition.name, "would create", None, definition.label))
                continue
            created = await client.create_action_definition(app_id, body)
            done.append(Registered(definition.name, "created", str(created.get("id")), definition.label))
        elif _differs(current, body):
            definition_id = str(current.get("id"))
            if not dry_run:
                await client.update_action_definition(app_id, definition_id, body)
            done.append(Registered(definition.name, "would update" if dry_run else "updated", definition_id,
                                   definition.label))
        else:
            done.append(Registered(definition.name, "unchanged", str(current.get("id")), definition.label))
    return done


def _developer_key(settings: Settings) -> Secret | None:
    try:
        key = settings.secret(DEVELOPER_KEY)
    except KeyError:  # not declared in libs/config.py: the private-app token is used
        return None
    return key if key else None


def register(subparsers: Any) -> None:
    from services.cli import command_group

    hubspot = command_group(subparsers, "hubspot", help="HubSpot portal tasks")
    parser = hubspot.add_parser(
        "register-actions",
        help="register our workflow actions (Create Kleer Client/Invoice/Agreement/Project, Update Kleer Agreement)",
        description=(
            "Create or update the app's workflow action definitions from the JSON in the repo; safe to run twice. "
            f"Needs {', '.join(NEEDS)} and HubSpot credentials."
        ),
    )
    parser.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(required=NEEDS)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        results = asyncio.run(_run(settings, dry_run=bool(getattr(args, "dry_run", False))))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except HubSpotError as exc:
        print(
            f"HubSpot refused the action definitions: {exc}\n"
            "Check HUBSPOT_APP_ID and that the credentials belong to the app's developer account "
            f"({DEVELOPER_KEY} or a token with the automation scope).",
            file=sys.stderr,
        )
        return 1
    for item in results:
        ident = f" (definition {item.definition_id})" if item.definition_id else ""
        print(f"{item.status:>12}  {item.action:<17} {item.label}{ident}")
    return 0


async def _run(settings: Settings, *, dry_run: bool) -> list[Registered]:
    app_id = settings.get_int("HUBSPOT_APP_ID")
    base = settings.get("PUBLIC_BASE_URL")
    assert app_id is not None and base is not None  # required above
    async with HubSpotClient.from_settings(settings, developer_api_key=_developer_key(settings)) as client:
        return await register_actions(client, app_id, base.rstrip("/"), dry_run=dry_run)
