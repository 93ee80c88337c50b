"""Typed HubSpot API errors. Each carries what a person needs to act: status, category, message,
HubSpot's correlation id and the endpoint (route template, never a URL with credentials)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Statuses worth retrying: rate limits, gateway and edge errors, "locked".
RETRYABLE_STATUSES = frozenset({423, 429, 502, 503, 504, 521, 523, 524})


class HubSpotError(Exception):
    """Base class of every HubSpot client error."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        category: str | None = None,
        correlation_id: str | None = None,
        endpoint: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.category = category
        self.correlation_id = correlation_id
        self.endpoint = endpoint
        self.context: Mapping[str, Any] = context or {}
        where = f" on {endpoint}" if endpoint else ""
        code = f"HTTP {status}" if status is not None else "no answer"
        kind = f" {category}" if category else ""
        corr = f" (correlationId {correlation_id})" if correlation_id else ""
        super().__init__(f"HubSpot {code}{kind}{where}: {message}{corr}")


class HubSpotValidationError(HubSpotError):
    """HubSpot refused the request's content (400 VALIDATION_ERROR and similar). Retrying will not help."""


class HubSpotAuthError(HubSpotError):
    """Authentication failed (401/403), also after one token refresh. Check the token, scopes or OAuth app."""


class HubSpotNotFound(HubSpotError):
    """The object, property or route does not exist (404)."""


class HubSpotConflict(HubSpotError):
    """The thing exists already or a unique value is taken (409)."""


class HubSpotRequestError(HubSpotError):
    """Any other 4xx answer that retrying will not fix."""


class HubSpotRateLimited(HubSpotError):
    """HubSpot answered 429 and retries did not get through (or the DAILY cap is spent).

    ``policy`` is HubSpot's ``policyName`` (``TEN_SECONDLY_ROLLING``, ``SECONDLY``, ``DAILY``);
    ``retry_after`` the seconds to wait before trying again, when known.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, policy: str = "UNKNOWN",
                 **kwargs: Any) -> None:
        self.retry_after = retry_after
        self.policy = policy
        super().__init__(message, **kwargs)


class HubSpotUnavailable(HubSpotError):
    """HubSpot kept failing with transient errors (5xx, edge errors, timeouts, dropped connections)."""

    def __init__(self, message: str, *, attempts: int = 0, **kwargs: Any) -> None:
        self.attempts = attempts
        super().__init__(message, **kwargs)


def error_for_status(status: int, body: Mapping[str, Any], endpoint: str) -> HubSpotError:
    """The typed error for a non-2xx answer that will not be retried."""
    message = str(body.get("message") or f"HTTP {status}")
    kwargs: dict[str, Any] = {
        "status": status,
        "category": body.get("category") if isinstance(body.get("category"), str) else None,
        "correlation_id": body.get("correlationId") if isinstance(body.get("correlationId"), str) else None,
        "endpoint": endpoint,
        "context": body.get("context") if isinstance(body.get("context"), dict) else None,
    }
    if status == 429:
        policy = str(body.get("policyName") or "UNKNOWN")
        return HubSpotRateLimited(message, policy=policy, **kwargs)
    if status in (401, 403):
        return HubSpotAuthError(message, **kwargs)
    if status == 404:
        return HubSpotNotFound(message, **kwargs)
    if status == 409:
        return HubSpotConflict(message, **kwargs)
    if status in (400, 422):
        return HubSpotValidationError(message, **kwargs)
    if status in RETRYABLE_STATUSES or status >= 500:
        return HubSpotUnavailable(message, **kwargs)
    return HubSpotRequestError(message, **kwargs)
