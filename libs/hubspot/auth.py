"""Bearer tokens for the HubSpot client: a private-app token, or OAuth access tokens from a refresh token.

Tokens are kept in ``Secret`` wrappers and registered with the log redactor;
errors name what failed, never the token.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import orjson

from libs.config import Secret
from libs.hubspot.errors import RETRYABLE_STATUSES, HubSpotAuthError, HubSpotUnavailable
from libs.observability.logging import register_secret

TOKEN_PATH = "/oauth/v1/token"


class TokenSource(Protocol):
    """Gives the bearer token to send; ``refresh`` gets a new one when HubSpot refused the current."""

    @property
    def can_refresh(self) -> bool: ...

    async def token(self, session: aiohttp.ClientSession, base_url: str) -> str: ...

    async def refresh(self, session: aiohttp.ClientSession, base_url: str) -> None: ...


class PrivateAppToken:
    """A private-app token: never expires, cannot be refreshed."""

    def __init__(self, token: Secret) -> None:
        if not token:
            raise ValueError("the HubSpot private-app token is empty")
        self._token = token
        register_secret(token.value)

    @property
    def can_refresh(self) -> bool:
        return False

    async def token(self, session: aiohttp.ClientSession, base_url: str) -> str:
        return self._token.value

    async def refresh(self, session: aiohttp.ClientSession, base_url: str) -> None:
        return None


@dataclass(frozen=True)
class OAuthCredentials:
    client_id: str
    client_secret: Secret
    refresh_token: Secret


class OAuthTokens:
    """OAuth access tokens obtained with the refresh-token grant, renewed shortly before they expire."""

    def __init__(self, credentials: OAuthCredentials) -> None:
        if not (credentials.client_id and credentials.client_secret and credentials.refresh_token):
            raise ValueError("OAuth needs a client id, a client secret and a refresh token")
        self._credentials = credentials
        self._access: Secret | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.refreshes = 0
        register_secret(credentials.client_secret.value)
        register_secret(credentials.refresh_token.value)

    @property
    def can_refresh(self) -> bool:
        return True

    async def token(self, session: aiohttp.ClientSession, base_url: str) -> str:
        if self._access is None or time.monotonic() >= self._expires_at:
            async with self._lock:
                if self._access is None or time.monotonic() >= self._expires_at:
                    await self._fetch(session, base_url)
        assert self._access is not None
        return self._access.value

    async def refresh(self, session: aiohttp.ClientSession, base_url: str) -> None:
        async with self._lock:
            await self._fetch(session, base_url)

    async def _fetch(self, session: aiohttp.ClientSession, base_url: str) -> None:
        form = {
            "grant_type": "refresh_token",
            "client_id": self._credentials.client_id,
            "client_secret": self._credentials.client_secret.value,
            "refresh_token": self._credentials.refresh_token.value,
        }
        try:
            async with session.post(base_url + TOKEN_PATH, data=form) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HubSpotUnavailable(f"could not reach HubSpot to refresh the OAuth token ({type(exc).__name__})",
                                     endpoint="POST " + TOKEN_PATH) from None
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            body = {}
        if status in RETRYABLE_STATUSES or status >= 500:
            raise HubSpotUnavailable(f"HubSpot could not refresh the OAuth token now (HTTP {status}); try again",
                                     status=status, endpoint="POST " + TOKEN_PATH)
        if status != 200 or not isinstance(body, dict) or not body.get("access_token"):
            reason = body.get("status") or body.get("category") if isinstance(body, dict) else None
            message = body.get("message") if isinstance(body, dict) else None
            raise HubSpotAuthError(
                f"OAuth token refresh refused ({reason or 'no reason given'}: {message or 'no message'}); "
                "check HUBSPOT_CLIENT_ID, HUBSPOT_CLIENT_SECRET and HUBSPOT_REFRESH_TOKEN",
                status=status, endpoint="POST " + TOKEN_PATH,
            )
        access = str(body["access_token"])
        register_secret(access)
        try:
            lifetime = float(body.get("expires_in", 1800))
        except (TypeError, ValueError):
            lifetime = 1800.0
        # Renew a little early: 60 s, or a tenth of a short lifetime.
        self._expires_at = time.monotonic() + lifetime - min(60.0, lifetime / 10)
        self._access = Secret(access)
        self.refreshes += 1
