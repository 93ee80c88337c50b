"""Custom workflow actions (automation v4): definitions, signed invocations, callback completions."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from libs.hubspot.objects import OBJECTS, object_type
from libs.hubspot.signatures import v3_headers
from sim.hubspot.config import SimConfig
from sim.hubspot.errors import ApiError, not_found, validation_error
from sim.hubspot.store import CrmStore

USER_AGENT = "HubSpot Connect 2.0 (http://dev.hubspot.com/) - AutomationActionsExecutor"


@dataclass
class Invocation:
    callback_id: str
    url: str
    request: dict[str, Any]
    attempts: list[dict[str, Any]] = field(default_factory=list)
    response: Any = None
    status: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"callbackId": self.callback_id, "url": self.url, "request": self.request,
                "attempts": self.attempts, "status": self.status, "response": self.response}


class ActionRegistry:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.definitions: dict[int, dict[str, dict[str, Any]]] = {}
        self.invocations: list[Invocation] = []
        self.completions: dict[str, list[dict[str, Any]]] = {}
        self.callback_ids: set[str] = set()
        self._ids = itertools.count(1001)
        self._callbacks = itertools.count(1)

    # --- definitions API --------------------------------------------------------------

    def list_definitions(self, app_id: int) -> dict[str, Any]:
        return {"results": list(self.definitions.get(app_id, {}).values())}

    def get_definition(self, app_id: int, definition_id: str) -> dict[str, Any]:
        found = self.definitions.get(app_id, {}).get(definition_id)
        if found is None:
            raise not_found(f"Action definition {definition_id} not found for app {app_id}")
        return found

    def create_definition(self, app_id: int, body: Any) -> dict[str, Any]:
        self._check_definition(body, partial=False)
        definition_id = str(next(self._ids))
        definition = {**body, "id": definition_id, "revisionId": "1", "published": bool(body.get("published"))}
        self.definitions.setdefault(app_id, {})[definition_id] = definition
        return definition

    def update_definition(self, app_id: int, definition_id: str, body: Any) -> dict[str, Any]:
        current = self.get_definition(app_id, definition_id)
        self._check_definition(body, partial=True)
        revision = str(int(current.get("revisionId", "1")) + 1)
        updated = {**current, **body, "id": definition_id, "revisionId": revision}
        self.definitions[app_id][definition_id] = updated
        return updated

    def delete_definition(self, app_id: int, definition_id: str) -> None:
        self.get_definition(app_id, definition_id)
        del self.definitions[app_id][definition_id]

    @staticmethod
    def _check_definition(body: Any, *, partial: bool) -> None:
        if not isinstance(body, dict):
            raise validation_error("Invalid input JSON: expected an action definition object.")
        if not partial:
            for key in ("actionUrl", "objectTypes"):
                if key not in body:
                    raise validation_error(f"An action definition needs '{key}'.")
        if "actionUrl" in body and not (isinstance(body["actionUrl"], str) and body["actionUrl"].startswith("http")):
            raise validation_error("'actionUrl' must be an http(s) URL.")
        if "objectTypes" in body and not isinstance(body["objectTypes"], list):
            raise validation_error("'objectTypes' must be a list.")
        if "inputFields" in body and not isinstance(body["inputFields"], list):
            raise validation_error("'inputFields' must be a list.")

    # --- callbacks ---------------------------------------------------------------------

    def complete(self, callback_id: str, body: Any) -> None:
        if callback_id not in self.callback_ids:
            raise not_found(f"Callback {callback_id} does not exist or has already expired.")
        if not isinstance(body, dict) or not isinstance(body.get("outputFields"), dict):
            raise validation_error("Invalid input JSON: expected {\"outputFields\": {...}}.")
        self.completions.setdefault(callback_id, []).append(body["outputFields"])

    def complete_batch(self, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            raise validation_error("Invalid input JSON: expected {\"inputs\": [...]}.")
        for item in body["inputs"]:
            if not isinstance(item, dict) or not isinstance(item.get("callbackId"), str):
                raise validation_error("Each input needs a 'callbackId' and 'outputFields'.")
        for item in body["inputs"]:
            self.complete(item["callbackId"], item)

    # --- invocation --------------------------------------------------------------------

    def build_request(self, store: CrmStore, params: Any) -> tuple[str, dict[str, Any]]:
        """The action URL and the payload HubSpot would POST for ``params`` (see ``/_sim/workflow-actions``)."""
        if not isinstance(params, dict):
            raise validation_error("invoke needs an object")
        definition: dict[str, Any] = {}
        if params.get("definitionId") is not None:
            definition = self.get_definition(int(params.get("appId", self.config.app_id)),
                                             str(params["definitionId"]))
        url = params.get("url") or definition.get("actionUrl")
        if not isinstance(url, str) or not url.startswith("http"):
            raise validation_error("invoke needs 'url' or the 'definitionId' of a definition with an actionUrl")
        raw_type = str(params.get("objectType", "DEAL"))
        kind = object_type(raw_type)
        if kind is None:
            raise validation_error(f"unknown objectType {raw_type!r}")
        object_id = params.get("objectId")
        properties = params.get("properties")
        if properties is None:
            wanted = params.get("propertiesToFetch") or (definition.get("objectRequestOptions") or {}).get(
                "properties", [])
            properties = {}
            if object_id is not None and wanted:
                try:
                    record = store.get_one(kind, str(object_id))
                except ApiError:
                    record = None
                if record is not None:
                    properties = {n: record.properties.get(n) for n in wanted}
        callback_id = str(params.get("callbackId") or f"ap-{self.config.app_id}-{next(self._callbacks)}-"
                          f"{uuid.uuid4().hex[:8]}")
        self.callback_ids.add(callback_id)
        payload = {
            "callbackId": callback_id,
            "origin": {
                "portalId": self.config.portal_id,
                "actionDefinitionId": int(definition.get("id") or params.get("definitionId") or 0),
                "actionDefinitionVersion": int(definition.get("revisionId", 1)),
            },
            "context": {"source": "WORKFLOWS", "workflowId": int(params.get("workflowId", 1))},
            "object": {
                "objectId": int(object_id) if object_id is not None else None,
                "objectType": OBJECTS[kind].action_name,
                "properties": properties,
            },
            "inputFields": params.get("inputFields") or {},
        }
        return url, payload

    async def invoke(self, store: CrmStore, params: dict[str, Any]) -> Invocation:
        """POST the signed action request; retry on 429/5xx/timeouts up to ``max_attempts`` (default 1)."""
        url, payload = self.build_request(store, params)
        signed_url = str(params.get("signedUrl") or url)
        timeout = aiohttp.ClientTimeout(total=float(params.get("timeout_s", 20)))
        attempts = max(1, int(params.get("max_attempts", 1)))
        invocation = Invocation(payload["callbackId"], url, payload)
        self.invocations.append(invocation)
        body = orjson.dumps(payload)
        async with aiohttp.ClientSession(headers={"User-Agent": USER_AGENT}) as session:
            for attempt in range(attempts):
                headers = {"Content-Type": "application/json",
                           **v3_headers(self.config.client_secret, "POST", signed_url, body, int(time.time() * 1000))}
                started = time.monotonic()
                record: dict[str, Any] = {"attempt": attempt}
                try:
                    async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
                        raw = await resp.read()
                        record["status"] = resp.status
                        try:
                            record["body"] = orjson.loads(raw) if raw else None
                        except orjson.JSONDecodeError:
                            record["body"] = raw.decode(errors="replace")
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    record["error"] = f"{type(exc).__name__}: {exc}"
                record["elapsed_ms"] = round((time.monotonic() - started) * 1000, 2)
                invocation.attempts.append(record)
                status = record.get("status")
                invocation.status = status
                invocation.response = record.get("body")
                if status is not None and status < 500 and status != 429:
                    break
                if attempt + 1 < attempts:
                    await asyncio.sleep(self.config.scaled_ms(1000 * 2 ** attempt) / 1000)
        return invocation
