"""``POST /actions/{action}``: HubSpot's workflow action calls, verified like the webhooks, and their OpenAPI paths.

Order of checks (each failure a JSON error, never a 500):

1. size over the limit -> 413;
2. signature (v3, or v1/v2 when declared) over ``PUBLIC_BASE_URL`` + path +
   query, as for ``POST /webhooks/hubspot`` -> 401;
3. an action we do not define -> 404;
4. a body that is not a workflow action call -> 400;
5. a portal this deployment does not serve -> 403;
6. the event log unavailable -> 503 (HubSpot retries; the callbackId keeps it idempotent).

Then the answer: ``{"outputFields": {"hs_execution_state": ...}}`` with 200.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from libs.observability import metrics
from libs.observability.logging import get_logger
from services.inbound.actions import catalog
from services.inbound.actions.answers import EXECUTION_STATE, answer_body
from services.inbound.actions.executor import DATABASE_ERRORS, ActionExecutor
from services.inbound.actions.request import MalformedRequest, parse_request
from services.inbound.intake import error_response, refuse_unsigned
from services.inbound.openapi import _SIGNATURE_HEADERS
from services.inbound.options import InboundOptions

log = get_logger(__name__)

ACTION_ROUTE = catalog.ACTIONS_PREFIX + "{action}"
UNKNOWN = "unknown"

ExecutorSource = Callable[[], Awaitable[ActionExecutor]]


class ActionEndpoint:
    def __init__(self, options: InboundOptions, executor: ExecutorSource) -> None:
        self.options = options
        self.executor = executor

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info.get("action", "")
        label = name if catalog.definition(name) is not None else UNKNOWN
        started = time.perf_counter()
        outcome = "error"
        try:
            response, outcome = await self._handle(request, name)
            return response
        finally:
            metrics.WORKFLOW_ACTIONS.labels(action=label, outcome=outcome).inc()
            log.debug("workflow action request", action=label, outcome=outcome,
                      seconds=round(time.perf_counter() - started, 4))

    async def _handle(self, request: web.Request, name: str) -> tuple[web.Response, str]:
        limit = self.options.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return error_response(413, "too_large", f"the body is larger than {limit} bytes"), "too_large"
        body = await request.read()
        refused = refuse_unsigned(self.options, request, body, "workflow action")
        if refused is not None:
            return refused, "unauthorized"
        definition = catalog.definition(name)
        if definition is None:
            known = ", ".join(catalog.ACTION_NAMES)
            return error_response(404, "unknown_action", f"no workflow action {name!r}; known: {known}"), "not_found"
        try:
            call = parse_request(body)
        except MalformedRequest as exc:
            return error_response(400, "malformed", str(exc)), "malformed"
        connection = self.options.connection_for(call.portal_id) if call.portal_id is not None else None
        if connection is None:
            message = f"portal {call.portal_id} is not served by this deployment"
            return error_response(403, "foreign_portal", message), "foreign_portal"
        try:
            executor = await self.executor()
            fields = await executor.answer(connection, definition, call)
        except ActionsUnavailable as exc:
            return error_response(503, "unavailable", str(exc)), "unavailable"
        except DATABASE_ERRORS as exc:
            log.error("workflow action not recorded; HubSpot will retry", callback_id=call.callback_id, error=str(exc))
            return error_response(503, "unavailable", "the event log is unavailable; retry later"), "error"
        return web.json_response(answer_body(fields)), fields.get(EXECUTION_STATE, "").lower() or "error"


class ActionsUnavailable(Exception):
    """The actions cannot run here (their Kleer or HubSpot client is not configured); HubSpot retries."""


# --- OpenAPI -----------------------------------------------------------------------------------------

_OPENAPI_TYPES: Mapping[str, dict[str, Any]] = {
    catalog.STRING: {"type": "string"},
    catalog.NUMBER: {"type": "string", "description": "a number (HubSpot sends numbers as text)"},
    catalog.BOOL: {"type": "string", "enum": ["true", "false"]},
    catalog.DATE: {"type": "string", "description": "YYYY-MM-DD or epoch milliseconds"},
}


def _input_schema(spec: catalog.InputSpec) -> dict[str, Any]:
    schema = dict(_OPENAPI_TYPES.get(spec.type, {"type": "string"}))
    if spec.type == catalog.ENUMERATION:
        schema["enum"] = list(spec.options)
    schema["description"] = spec.label
    return schema


def openapi_paths() -> tuple[dict[str, Any], dict[str, Any]]:
    """The paths and component schemas of the five actions."""
    paths: dict[str, Any] = {}
    for definition in catalog.definitions().values():
        inputs = {spec.name: _input_schema(spec) for spec in definition.inputs}
        required = [spec.name for spec in definition.inputs if spec.required]
        input_schema: dict[str, Any] = {"type": "object", "properties": inputs}
        if required:
            input_schema["required"] = required
        paths[definition.path] = {
            "post": {
                "operationId": "workflowAction" + "".join(p.title() for p in definition.name.split("-")),
                "summary": f"{definition.label} (HubSpot {' / '.join(definition.object_types).lower()} workflows)",
                "description": (
                    "A HubSpot custom workflow action call, signed like the webhooks. Idempotent by callbackId: "
                    "a repeated call never creates a second Kleer record and gets the same answer. Answers "
                    "within a few seconds, or BLOCK and completes later through HubSpot's callback API."
                ),
                "tags": ["workflow actions"],
                "parameters": _SIGNATURE_HEADERS,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {
                        "allOf": [
                            {"$ref": "#/components/schemas/WorkflowActionCall"},
                            {"type": "object", "properties": {"inputFields": input_schema}},
                        ]
                    }}},
                },
                "responses": {
                    "200": {"description": "The action's answer.", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/WorkflowActionAnswer"}}}},
                    "400": _error("The body is not a workflow action call."),
                    "401": _error("Missing, wrong or stale signature."),
                    "403": _error("The portal is not served by this deployment."),
                    "404": _error("No such workflow action."),
                    "413": _error("The body is larger than 1 MiB."),
                    "503": _error("The event log (or Kleer/HubSpot configuration) is unavailable; HubSpot retries."),
                },
            }
        }
    schemas = {
        "WorkflowActionCall": {
            "type": "object",
            "required": ["callbackId", "object", "origin"],
            "properties": {
                "callbackId": {"type": "string", "maxLength": 200},
                "origin": {"type": "object", "properties": {
                    "portalId": {"type": "integer"},
                    "actionDefinitionId": {"type": "integer"},
                    "actionDefinitionVersion": {"type": "integer"},
                }},
                "context": {"type": "object", "properties": {
                    "source": {"type": "string"}, "workflowId": {"type": "integer"}}},
                "object": {"type": "object", "required": ["objectId", "objectType"], "properties": {
                    "objectId": {"type": "integer"},
                    "objectType": {"type": "string", "enum": ["COMPANY", "DEAL"]},
                    "properties": {"type": "object", "additionalProperties": {"type": "string", "nullable": True}},
                }},
                "inputFields": {"type": "object"},
            },
        },
        "WorkflowActionAnswer": {
            "type": "object",
            "required": ["outputFields"],
            "properties": {"outputFields": {
                "type": "object",
                "required": [EXECUTION_STATE],
                "properties": {
                    EXECUTION_STATE: {"type": "string", "enum": ["SUCCESS", "FAIL_CONTINUE", "BLOCK"]},
                    "hs_expiration_duration": {"type": "string", "description": "ISO-8601 duration (BLOCK)"},
                    "kleer_id": {"type": "string"},
                    "kleer_number": {"type": "string"},
                    "message": {"type": "string"},
                },
            }},
        },
    }
    return paths, schemas


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
