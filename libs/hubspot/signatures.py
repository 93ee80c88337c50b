"""HubSpot request signatures (webhooks and workflow actions): sign and verify.

Pure functions, no I/O. The simulator signs with the ``sign_*`` functions and
the inbound service checks every request with ``verify_request``.

* **v3** — ``X-HubSpot-Signature-v3`` + ``X-HubSpot-Request-Timestamp`` (epoch ms):
  ``base64(HMAC-SHA256(secret, method + uri + body + timestamp))``. Before
  signing HubSpot percent-decodes a fixed set of characters in the URI
  (``decode_signed_uri``); the URI is the full public one HubSpot called,
  ``https://host/path?query``. Timestamps older than ``max_age_ms`` are refused.
* **v2** — ``X-HubSpot-Signature`` with ``X-HubSpot-Signature-Version: v2``:
  ``hex(SHA-256(secret + method + uri + body))``.
* **v1** — ``X-HubSpot-Signature`` with ``X-HubSpot-Signature-Version: v1``:
  ``hex(SHA-256(secret + body))``.

v1 and v2 carry no timestamp, so they cannot be checked for staleness; they
are accepted only because HubSpot still sends them for older app settings.
An unsigned request, or one declaring a version we do not know, is refused.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from collections.abc import Mapping
from enum import StrEnum

from multidict import CIMultiDict, CIMultiDictProxy

HEADER_SIGNATURE_V3 = "X-HubSpot-Signature-v3"
HEADER_TIMESTAMP = "X-HubSpot-Request-Timestamp"
HEADER_SIGNATURE = "X-HubSpot-Signature"
HEADER_SIGNATURE_VERSION = "X-HubSpot-Signature-Version"

DEFAULT_MAX_AGE_MS = 300_000

# The escapes HubSpot decodes in the URI before computing a v3 signature.
_DECODED_ESCAPES: dict[str, str] = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_ESCAPE_RE = re.compile("|".join(re.escape(k) for k in _DECODED_ESCAPES), re.IGNORECASE)


class SignatureFailure(StrEnum):
    """Why a request's signature was refused."""

    UNSIGNED = "unsigned"
    STALE_TIMESTAMP = "stale_timestamp"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_VERSION = "unknown_version"


class SignatureError(Exception):
    """The request is not proven to come from HubSpot; answer 401 and record nothing.

    ``reason`` is one ``SignatureFailure``; ``detail`` says what was wrong in
    words safe to log (never the secret or the expected signature).
    """

    def __init__(self, reason: SignatureFailure, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"HubSpot signature refused ({reason.value}){': ' + detail if detail else ''}")


def decode_signed_uri(uri: str) -> str:
    """Percent-decode the characters HubSpot decodes before it signs (one pass, case-insensitive)."""
    return _ESCAPE_RE.sub(lambda m: _DECODED_ESCAPES[m.group(0).upper()], uri)


@functools.lru_cache(maxsize=256)
def _signed_uri_bytes(uri: str) -> bytes:
    """``decode_signed_uri(uri)`` encoded, cached: a webhook endpoint is called on a handful of URIs."""
    return decode_signed_uri(uri).encode()


def sign_v3(secret: str, method: str, uri: str, body: bytes, timestamp_ms: int) -> str:
    """The ``X-HubSpot-Signature-v3`` value for a request HubSpot makes to ``uri``."""
    message = b"".join((method.upper().encode(), _signed_uri_bytes(uri), body, str(timestamp_ms).encode()))
    return base64.b64encode(hmac.digest(secret.encode(), message, "sha256")).decode("ascii")


def sign_v2(secret: str, method: str, uri: str, body: bytes) -> str:
    """The v2 ``X-HubSpot-Signature`` value: hex SHA-256 of secret + method + uri + body."""
    return hashlib.sha256(secret.encode() + method.upper().encode() + uri.encode() + body).hexdigest()


def sign_v1(secret: str, body: bytes) -> str:
    """The v1 ``X-HubSpot-Signature`` value: hex SHA-256 of secret + body."""
    return hashlib.sha256(secret.encode() + body).hexdigest()


def v3_headers(secret: str, method: str, uri: str, body: bytes, timestamp_ms: int) -> dict[str, str]:
    """Both v3 headers, ready to send (used by the simulator and by tests)."""
    return {
        HEADER_SIGNATURE_V3: sign_v3(secret, method, uri, body, timestamp_ms),
        HEADER_TIMESTAMP: str(timestamp_ms),
    }


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def verify_request(
    secret: str,
    method: str,
    uri: str,
    body: bytes,
    headers: Mapping[str, str],
    now_ms: int,
    max_age_ms: int = DEFAULT_MAX_AGE_MS,
) -> None:
    """Return if the request is signed by HubSpot with ``secret``; raise ``SignatureError`` otherwise.

    ``uri`` is the full URI HubSpot called (public scheme, host, path and
    query), ``body`` the raw bytes as received. Header names are matched
    case-insensitively. A v3 signature wins over a v1/v2 one if both are sent.
    Timestamps more than ``max_age_ms`` away from ``now_ms`` (past or future)
    are stale. Comparisons are constant-time.
    """
    # aiohttp's headers are case-insensitive already; any other mapping is looked up by lower-case name.
    lowered = headers
    if not isinstance(headers, CIMultiDictProxy | CIMultiDict):
        lowered = {k.lower(): v for k, v in headers.items()}
    v3 = lowered.get(HEADER_SIGNATURE_V3.lower())
    legacy = lowered.get(HEADER_SIGNATURE.lower())
    version = lowered.get(HEADER_SIGNATURE_VERSION.lower(), "").strip().lower()
    if v3:
        _verify_v3(secret, method, uri, body, v3, lowered.get(HEADER_TIMESTAMP.lower()), now_ms, max_age_ms)
        return
    if not legacy:
        raise SignatureError(SignatureFailure.UNSIGNED, "no X-HubSpot-Signature-v3 nor X-HubSpot-Signature")
    if version == "v2":
        expected = sign_v2(secret, method, uri, body)
    elif version == "v1":
        expected = sign_v1(secret, body)
    elif version == "v3":
        raise SignatureError(SignatureFailure.UNSIGNED, "version v3 declared without X-HubSpot-Signature-v3")
    else:
        shown = version[:20] if version else "(none)"
        raise SignatureError(SignatureFailure.UNKNOWN_VERSION, f"X-HubSpot-Signature-Version is {shown!r}")
    if not _same(expected, legacy.strip().lower()):
        raise SignatureError(SignatureFailure.BAD_SIGNATURE, f"{version} signature does not match")


def _verify_v3(
    secret: str,
    method: str,
    uri: str,
    body: bytes,
    signature: str,
    raw_timestamp: str | None,
    now_ms: int,
    max_age_ms: int,
) -> None:
    if raw_timestamp is None:
        raise SignatureError(SignatureFailure.UNSIGNED, "v3 signature without X-HubSpot-Request-Timestamp")
    try:
        timestamp_ms = int(raw_timestamp.strip())
    except ValueError:
        raise SignatureError(SignatureFailure.STALE_TIMESTAMP, "timestamp is not epoch ms") from None
    if abs(now_ms - timestamp_ms) > max_age_ms:
        raise SignatureError(
            SignatureFailure.STALE_TIMESTAMP,
            f"timestamp is {(now_ms - timestamp_ms) // 1000}s from now, allowed {max_age_ms // 1000}s",
        )
    expected = sign_v3(secret, method, uri, body, timestamp_ms)
    if not _same(expected, signature.strip()):
        raise SignatureError(SignatureFailure.BAD_SIGNATURE, "v3 signature does not match")
