"""Who may use the admin pages, and proof that a form post came from one of our pages.

Authentication: ``ADMIN_TOKEN`` from the environment, sent as a bearer token
(``Authorization: Bearer …``) or as the password of HTTP basic auth (any user
name; browsers ask for it). There is no default: without ``ADMIN_TOKEN`` every
admin URL answers 503 "admin disabled: set ADMIN_TOKEN".

CSRF: every page with a form carries a token, an HMAC (keyed by the admin
token) over the time it was issued and the signed-in user name, so it is tied
to the credentials: a page of another site cannot know it, and a token stops
working when ``ADMIN_TOKEN`` changes or after ``CSRF_MAX_AGE``. Every POST must
send it back (form field ``csrf_token`` or header ``X-CSRF-Token``), and a POST
whose ``Origin`` names another site is refused even with a token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from libs.config import Secret

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
CSRF_MAX_AGE = 12 * 3600
REALM = "kleer-sync admin"
DISABLED = "admin disabled: set ADMIN_TOKEN"

USER: web.RequestKey[str] = web.RequestKey("admin_user", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class AdminAuth:
    token: Secret

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    def user_of(self, request: web.Request) -> str | None:
        """The signed-in user name, or None when the request carries no valid credentials."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return "token" if self._matches(value) else None
        if scheme.lower() == "basic" and value:
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, sep, password = decoded.partition(":")
            if sep and self._matches(password):
                return user.strip()[:64] or "admin"
        return None

    def _matches(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self.token.value.encode())

    # --- CSRF ---------------------------------------------------------------------------------------

    def _key(self) -> bytes:
        return hashlib.sha256(b"kleer-sync admin csrf\x00" + self.token.value.encode()).digest()

    def csrf_token(self, user: str, now: float | None = None) -> str:
        issued = str(int(time.time() if now is None else now))
        mac = hmac.new(self._key(), f"{issued}\x00{user}".encode(), hashlib.sha256).hexdigest()
        return f"{issued}.{mac}"

    def csrf_valid(self, token: str, user: str, now: float | None = None) -> bool:
        issued, _, mac = token.partition(".")
        if not issued.isdigit() or not mac:
            return False
        age = (time.time() if now is None else now) - int(issued)
        if not -60 <= age <= CSRF_MAX_AGE:
            return False
        expected = hmac.new(self._key(), f"{issued}\x00{user}".encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(mac, expected)


def _cross_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin == "null"
    return urlsplit(origin).netloc != request.host


def unauthorized() -> web.Response:
    response = web.Response(
        status=401,
        text="401: sign in with the admin token (bearer token, or as the basic-auth password)\n",
        content_type="text/plain",
    )
    response.headers.add("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
    response.headers.add("WWW-Authenticate", f'Bearer realm="{REALM}"')
    return response


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: under it Chromium sends "Origin: null" with our own forms, which the check refuses.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def middleware(auth: AdminAuth) -> Middleware:
    """Disabled → 503; no valid credentials → 401; a POST without a valid CSRF token → 403."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not auth.enabled:
            return web.Response(status=503, text=DISABLED + "\n", content_type="text/plain")
        user = auth.user_of(request)
        if user is None:
            return unauthorized()
        request[USER] = user
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            if _cross_origin(request):
                return web.Response(status=403, text="403: cross-site request refused\n", content_type="text/plain")
            token = request.headers.get(CSRF_HEADER, "")
            if not token and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
                token = str((await request.post()).get(CSRF_FIELD, ""))
            if not auth.csrf_valid(token, user):
                return web.Response(
                    status=403,
                    text="403: missing or stale CSRF token; reload the page and submit the form again\n",
                    content_type="text/plain",
                )
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(SECURITY_HEADERS)
            raise
        response.headers.update(SECURITY_HEADERS)
        return response

    return guard
