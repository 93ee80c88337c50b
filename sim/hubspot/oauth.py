"""Access tokens: the private-app token never expires; OAuth access tokens do."""

from __future__ import annotations

import secrets
import time
from enum import Enum


class TokenStatus(Enum):
    PRIVATE_APP = "private_app"
    OAUTH = "oauth"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


class TokenIssuer:
    def __init__(self, private_app_token: str) -> None:
        self.private_app_token = private_app_token
        self._access: dict[str, float] = {}  # token → monotonic expiry
        self.issued = 0

    def issue(self, lifetime_s: float) -> str:
        token = "sim-oauth-" + secrets.token_urlsafe(24)
        self._access[token] = time.monotonic() + lifetime_s
        self.issued += 1
        if len(self._access) > 10_000:
            now = time.monotonic()
            self._access = {t: e for t, e in self._access.items() if e > now - 3600}
        return token

    def check(self, token: str) -> tuple[TokenStatus, float]:
        """Status and, for expired tokens, how many seconds ago they expired."""
        if token == self.private_app_token:
            return TokenStatus.PRIVATE_APP, 0.0
        expiry = self._access.get(token)
        if expiry is None:
            return TokenStatus.UNKNOWN, 0.0
        now = time.monotonic()
        if now >= expiry:
            return TokenStatus.EXPIRED, now - expiry
        return TokenStatus.OAUTH, 0.0

    def expire_all(self) -> None:
        """Make every issued access token expire now (tests of the refresh path)."""
        now = time.monotonic()
        self._access = {t: min(e, now) for t, e in self._access.items()}
