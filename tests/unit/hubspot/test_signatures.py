"""Signature verification: the published vector, each version, every refusal reason, tampering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.hubspot.signatures import (
    HEADER_SIGNATURE,
    HEADER_SIGNATURE_V3,
    HEADER_SIGNATURE_VERSION,
    HEADER_TIMESTAMP,
    SignatureError,
    SignatureFailure,
    decode_signed_uri,
    sign_v1,
    sign_v2,
    sign_v3,
    v3_headers,
    verify_request,
)

SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
URI = "https://www.example.com/webhook_uri"
BODY = b"{'example_field':'example_value'}"
TS = 1693657560000
EXPECTED = "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="


def test_published_v3_vector_signs_to_the_documented_value() -> None:
    assert sign_v3(SECRET, "POST", URI, BODY, TS) == EXPECTED


def test_published_v3_vector_verifies() -> None:
    headers = {HEADER_SIGNATURE_V3: EXPECTED, HEADER_TIMESTAMP: str(TS)}
    verify_request(SECRET, "POST", URI, BODY, headers, now_ms=TS + 1_000)


def test_header_names_match_case_insensitively() -> None:
    headers = {"x-hubspot-signature-v3": EXPECTED, "x-hubspot-request-timestamp": str(TS)}
    verify_request(SECRET, "POST", URI, BODY, headers, now_ms=TS)


def test_percent_encoded_reserved_characters_are_decoded_before_signing() -> None:
    encoded = "https://h.example/hook?a=b%3Ac%2Fd%40e%21%24%27%28%29%2a%2C%3B%3F"
    assert decode_signed_uri(encoded) == "https://h.example/hook?a=b:c/d@e!$'()*,;?"
    # HubSpot signs the decoded form; the service sees the encoded one and must still verify.
    signature = sign_v3(SECRET, "POST", decode_signed_uri(encoded), b"[]", TS)
    headers = {HEADER_SIGNATURE_V3: signature, HEADER_TIMESTAMP: str(TS)}
    verify_request(SECRET, "POST", encoded, b"[]", headers, TS)


def test_other_escapes_are_left_alone() -> None:
    assert decode_signed_uri("https://h/p?q=a%20b%26c") == "https://h/p?q=a%20b%26c"


def test_stale_timestamp_is_refused() -> None:
    headers = v3_headers(SECRET, "POST", URI, BODY, TS)
    with pytest.raises(SignatureError) as info:
        verify_request(SECRET, "POST", URI, BODY, headers, now_ms=TS + 300_001)
    assert info.value.reason is SignatureFailure.STALE_TIMESTAMP


def test_timestamp_far_in_the_future_is_refused() -> None:
    headers = v3_headers(SECRET, "POST", URI, BODY, TS)
    with pytest.raises(SignatureError) as info:
        verify_request(SECRET, "POST", URI, BODY, headers, now_ms=TS - 300_001)
    assert info.value.reason is SignatureFailure.STALE_TIMESTAMP


def test_malformed_timestamp_is_refused_as_stale() -> None:
    headers = {HEADER_SIGNATURE_V3: EXPECTED, HEADER_TIMESTAMP: "yesterday"}
    with pytest.raises(SignatureError) as info:
        verify_request(SECRET, "POST", URI, BODY, headers, now_ms=TS)
    assert info.value.reason is SignatureFailure.STALE_TIMESTAMP


def test_unsigned_request_is_refused() -> None:
    with pytest.raises(SignatureError) as info:
        verify_request(SECRET, "POST", URI, BODY, {}, now_ms=TS)
    assert info.value.reason is SignatureFailure.UNSIGNED


def test_v3_signature_without_timestamp_is_unsigned() -> None:
    with pytest.raises(SignatureError) as info:
        verify_request(SECRET, "POST", URI, BODY, {HEADER_SIGNATURE_V3: EXPECTED}, now_ms=TS)
    assert info.value.reason is SignatureFailure.UNSIGNED


def test_unknown_version_is_refused() -> None:
    headers = {HEADER_SIGNATURE: "abc", HEADER_SIGNATURE_VERSION: "v9"}
    with pytest.raises(SignatureError) as info:
        verify_request(SECRET, "POST", URI, BODY, headers, now_ms=TS)
    assert info.value.reason is SignatureFailure.UNKNOWN_VERSION


def test_legacy_signature_without_declared_version_is_unknown_version() -> None:
    with pytest.raises(SignatureError) as info:
        verify_request(SECRET, "POST", URI, BODY, {HEADER_SIGNATURE: sign_v1(SECRET, BODY)}, now_ms=TS)
    assert info.value.reason is SignatureFailure.UNKNOWN_VERSION


def test_v2_signature_verifies_and_is_method_uri_and_body_bound() -> None:
    headers = {HEADER_SIGNATURE: sign_v2(SECRET, "POST", URI, BODY), HEADER_SIGNATURE_VERSION: "v2"}
    verify_request(SECRET, "POST", URI, BODY, headers, now_ms=TS)
    with pytest.raises(SignatureError) as info:
        verify_request(SECRET, "POST", URI + "x", BODY, headers, now_ms=TS)
    assert info.value.reason is SignatureFailure.BAD_SIGNATURE


def test_v1_signature_verifies_and_is_body_bound() -> None:
    headers = {HEADER_SIGNATURE: sign_v1(SECRET, BODY), HEADER_SIGNATURE_VERSION: "v1"}
    verify_request(SECRET, "POST", URI, BODY, headers, now_ms=TS)
    with pytest.raises(SignatureError) as info:
        verify_request(SECRET, "POST", URI, BODY + b" ", headers, now_ms=TS)
    assert info.value.reason is SignatureFailure.BAD_SIGNATURE


def test_wrong_secret_is_a_bad_signature() -> None:
    headers = v3_headers("other-secret", "POST", URI, BODY, TS)
    with pytest.raises(SignatureError) as info:
        verify_request(SECRET, "POST", URI, BODY, headers, now_ms=TS)
    assert info.value.reason is SignatureFailure.BAD_SIGNATURE


def test_error_message_never_contains_the_secret_or_expected_signature() -> None:
    headers = {HEADER_SIGNATURE_V3: "AAAA", HEADER_TIMESTAMP: str(TS)}
    with pytest.raises(SignatureError) as info:
        verify_request(SECRET, "POST", URI, BODY, headers, now_ms=TS)
    assert SECRET not in str(info.value)
    assert EXPECTED not in str(info.value)


_methods = st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH"])
_uris = st.builds(
    lambda path, query: f"https://sync.example.com/{path}" + (f"?{query}" if query else ""),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_/", max_size=30),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789=&", max_size=20),
)


@given(method=_methods, uri=_uris, body=st.binary(max_size=200), ts=st.integers(10**12, 2 * 10**12))
def test_any_signed_request_verifies(method: str, uri: str, body: bytes, ts: int) -> None:
    verify_request(SECRET, method, uri, body, v3_headers(SECRET, method, uri, body, ts), now_ms=ts)


@given(
    method=_methods,
    uri=_uris,
    body=st.binary(max_size=200),
    ts=st.integers(10**12, 2 * 10**12),
    tamper=st.sampled_from(["method", "uri", "body", "timestamp"]),
    extra=st.binary(min_size=1, max_size=8),
    shift=st.integers(1, 299_000),
)
def test_any_tampering_fails_verification(
    method: str, uri: str, body: bytes, ts: int, tamper: str, extra: bytes, shift: int
) -> None:
    headers = v3_headers(SECRET, method, uri, body, ts)
    if tamper == "method":
        method = "GET" if method != "GET" else "POST"
    elif tamper == "uri":
        uri = uri + "x"
    elif tamper == "body":
        body = body + extra
    else:
        headers[HEADER_TIMESTAMP] = str(ts + shift)
    with pytest.raises(SignatureError) as info:
        verify_request(SECRET, method, uri, body, headers, now_ms=ts)
    assert info.value.reason is SignatureFailure.BAD_SIGNATURE
