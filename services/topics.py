"""Kafka topics and which events travel on them (the relay's router). One home for topic names.

Topic names carry a prefix (``KAFKA_TOPIC_PREFIX``, default ``kleer-sync``) so
several deployments or test runs can share a cluster.
"""

from __future__ import annotations

import os

from libs.events.relay import routes_by_type

DEFAULT_PREFIX = "kleer-sync"

OUTBOUND_CHANGES = "outbound.changes"
INBOUND_WEBHOOKS = "inbound.webhooks"
INBOUND_COMMANDS = "inbound.commands"
TOPICS = (OUTBOUND_CHANGES, INBOUND_WEBHOOKS, INBOUND_COMMANDS)

# Event types consumed by a service, by topic. Everything else is an audit-only fact.
ROUTES: dict[str, str] = {
    "WebhookReceived": INBOUND_WEBHOOKS,
}
# Kleer change events (Kleer{Client,Product,Invoice,Agreement,Project,LineItem}{Changed,Removed})
# and push requests from replay/workflow actions go to the pusher.
_OUTBOUND_PREFIXES = ("Kleer",)
_OUTBOUND_SUFFIXES = ("Changed", "Removed", "PushRequested")
_COMMAND_PREFIXES = ("UpdateKleer", "CreateKleer")


def prefix() -> str:
    return os.environ.get("KAFKA_TOPIC_PREFIX") or DEFAULT_PREFIX


def topic_name(topic: str, topic_prefix: str | None = None) -> str:
    return f"{topic_prefix or prefix()}.{topic}"


def all_topic_names(topic_prefix: str | None = None) -> list[str]:
    return [topic_name(t, topic_prefix) for t in TOPICS]


def route_topic(event_type: str) -> str | None:
    """The topic (without prefix) an event type travels on, or None."""
    if event_type in ROUTES:
        return ROUTES[event_type]
    if event_type.startswith(_OUTBOUND_PREFIXES) and event_type.endswith(_OUTBOUND_SUFFIXES):
        return OUTBOUND_CHANGES
    if event_type.startswith(_COMMAND_PREFIXES):
        return INBOUND_COMMANDS
    return None


def make_router(topic_prefix: str | None = None) -> object:
    """The relay's router: by event type only (so the relay leaves the events it does not publish undecoded)."""
    chosen = topic_prefix or prefix()

    def route(event_type: str) -> str | None:
        topic = route_topic(event_type)
        return f"{chosen}.{topic}" if topic else None

    return routes_by_type(route)
