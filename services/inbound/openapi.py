"""The OpenAPI 3 document of the inbound service's HTTP interface (served at ``/openapi.json``).

Routes added by other modules (workflow actions, admin pages) add their own
paths with ``add_openapi_paths(app, {...})`` when they install themselves.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from services.inbound.webhook_events import MAX_EVENTS_PER_REQUEST, MAX_INT, MAX_PROPERTY_VALUE_CHARS

OPENAPI_PATHS: web.AppKey[dict[str, Any]] = web.AppKey("openapi_paths", dict)
OPENAPI_SCHEMAS: web.AppKey[dict[str, Any]] = web.AppKey("openapi_schemas", dict)

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "reason": {"type": "string"},
        "index": {"type": "integer"},
        "field": {"type": "string"},
        "refused": {"type": "integer"},
    },
}

_ID = {"type": "integer", "minimum": 0, "maximum": MAX_INT}
_TEXT = {"type": "string", "maxLength": 200}

_WEBHOOK_EVENT = {
    "type": "object",
    "description": "One HubSpot webhook event. Unknown fields are ignored.",
    "required": ["eventId", "subscriptionType", "portalId", "objectId"],
    "properties": {
        "eventId": _ID,
        "subscriptionId": _ID,
        "portalId": _ID,
        "appId": _ID,
        "occurredAt": {**_ID, "description": "epoch milliseconds"},
        "attemptNumber": _ID,
        "subscriptionType": {
            "type": "string",
            "pattern": r"^[a-z][a-z_]{0,40}\.[A-Za-z][A-Za-z_]{0,60}$",
            "example": "company.propertyChange",
        },
        "objectId": _ID,
        "objectTypeId": {"type": "string", "pattern": r"^\d{1,4}-\d{1,12}$", "example": "0-970"},
        "propertyName": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]{1,200}$"},
        "propertyValue": {"type": "string", "maxLength": MAX_PROPERTY_VALUE_CHARS},
        "changeSource": _TEXT,
        "sourceId": _TEXT,
        "changeFlag": _TEXT,
        "primaryObjectId": _ID,
        "newObjectId": _ID,
        "mergedObjectIds": {"type": "array", "items": _ID, "maxItems": 1000},
        "numberOfPropertiesMoved": _ID,
    },
}

_SIGNATURE_HEADERS = [
    {
        "name": "X-HubSpot-Signature-v3",
        "in": "header",
        "required": False,
        "description": "base64 HMAC-SHA256 of method + public URI + body + timestamp (client secret as key).",
        "schema": {"type": "string"},
    },
    {
        "name": "X-HubSpot-Request-Timestamp",
        "in": "header",
        "required": False,
        "description": "Epoch milliseconds; refused when more than 5 minutes from now.",
        "schema": {"type": "string"},
    },
    {
        "name": "X-HubSpot-Signature",
        "in": "header",
        "required": False,
        "description": "v1/v2 signature (hex SHA-256), with X-HubSpot-Signature-Version.",
        "schema": {"type": "string"},
    },
    {
        "name": "X-HubSpot-Signature-Version",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "enum": ["v1", "v2", "v3"]},
    },
]


def _json(schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": dict(schema)}}}


def _error(description: str) -> dict[str, Any]:
    return _json({"$ref": "#/components/schemas/Error"}, description)


def base_paths(webhook_path: str) -> dict[str, Any]:
    health = {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string"},
            "checks": {"type": "array", "items": {"type": "string"}},
            "failing": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    return {
        webhook_path: {
            "post": {
                "operationId": "receiveHubSpotWebhook",
                "summary": "HubSpot webhook events (a JSON array, at most 100 per request from HubSpot)",
                "description": (
                    "Verifies HubSpot's signature over PUBLIC_BASE_URL + path + query, records every event "
                    "of our portal durably (redeliveries are no-ops) and answers once they are committed. "
                    "Events are applied to Kleer asynchronously."
                ),
                "parameters": _SIGNATURE_HEADERS,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": MAX_EVENTS_PER_REQUEST,
                                "items": {"$ref": "#/components/schemas/WebhookEvent"},
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["recorded", "duplicates", "refused"],
                            "properties": {
                                "recorded": {"type": "integer"},
                                "duplicates": {"type": "integer"},
                                "refused": {"type": "integer"},
                            },
                        },
                        "Recorded (durably) - new events, redelivered ones, and refused foreign-portal ones.",
                    ),
                    "400": _error("The body is not a well-formed webhook batch."),
                    "401": _error("Missing, wrong or stale signature."),
                    "403": _error("Every event belongs to another HubSpot portal."),
                    "413": _error("The body is larger than 1 MiB."),
                    "503": _error("The event log could not commit in time; HubSpot retries."),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: 200 while the event loop runs",
                "responses": {"200": _json(health, "Alive.")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: Postgres, migrations and Kafka",
                "responses": {
                    "200": _json(health, "Ready."),
                    "503": _json(health, "Not ready; `failing` names each failing check."),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
            }
        },
    }


def base_schemas() -> dict[str, Any]:
    return {"Error": copy.deepcopy(_ERROR), "WebhookEvent": copy.deepcopy(_WEBHOOK_EVENT)}


def add_openapi_paths(
    app: web.Application, paths: Mapping[str, Any], schemas: Mapping[str, Any] | None = None
) -> None:
    """Document routes another module adds (call before the app starts)."""
    app[OPENAPI_PATHS].update(paths)
    if schemas:
        app[OPENAPI_SCHEMAS].update(schemas)


def document(app: web.Application, server_url: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "kleer-sync inbound service",
            "version": "1",
            "description": "HubSpot -> Kleer: webhooks, workflow actions, health and metrics.",
        },
        "paths": app[OPENAPI_PATHS],
        "components": {"schemas": app[OPENAPI_SCHEMAS]},
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(document(request.app))
