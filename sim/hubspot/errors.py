"""HubSpot's error answer: ``{status: "error", message, correlationId, category}``."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiohttp import web


class ApiError(Exception):
    """A request-level failure the simulator answers with HubSpot's error JSON."""

    def __init__(self, status: int, category: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return error_body(self.category, self.message, **self.extra)


def correlation_id() -> str:
    return str(uuid.uuid4())


def error_body(category: str, message: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": correlation_id(),
        "category": category,
    }
    body.update(extra)
    return body


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def validation_error(message: str, **extra: Any) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", message, **extra)


def not_found(message: str) -> ApiError:
    return ApiError(404, "OBJECT_NOT_FOUND", message)


def batch_error(category: str, message: str, context: dict[str, list[str]], **extra: Any) -> dict[str, Any]:
    """One entry of a 207 answer's ``errors`` list."""
    entry: dict[str, Any] = {"status": "error", "category": category, "message": message, "context": context}
    entry.update(extra)
    return entry
