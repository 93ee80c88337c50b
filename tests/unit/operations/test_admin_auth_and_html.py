"""The admin pages' pure parts: credentials, CSRF tokens, escaping, the progress bar."""

from __future__ import annotations

import base64
import io

from aiohttp.test_utils import make_mocked_request

from libs.config import Secret
from services.inbound.admin.auth import CSRF_MAX_AGE, AdminAuth
from services.inbound.admin.html import Markup, h, join, options, url
from services.operations.progress import ProgressBar

AUTH = AdminAuth(Secret("s3cret-token"))


def request_with(authorization: str | None) -> object:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return make_mocked_request("GET", "/admin/", headers=headers)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_the_admin_token_is_accepted_as_bearer_or_as_the_basic_auth_password() -> None:
    assert AUTH.user_of(request_with("Bearer s3cret-token")) == "token"  # type: ignore[arg-type]
    assert AUTH.user_of(request_with(basic("alice", "s3cret-token"))) == "alice"  # type: ignore[arg-type]
    assert AUTH.user_of(request_with(basic("", "s3cret-token"))) == "admin"  # type: ignore[arg-type]
    for wrong in (None, "", "Bearer", "Bearer s3cret", basic("alice", "nope"), "Basic !!!", "Digest x", "s3cret-token"):
        assert AUTH.user_of(request_with(wrong)) is None, wrong  # type: ignore[arg-type]
    assert not AdminAuth(Secret("")).enabled


def test_csrf_tokens_are_tied_to_the_user_the_admin_token_and_their_age() -> None:
    token = AUTH.csrf_token("alice", now=1_000_000)
    assert AUTH.csrf_valid(token, "alice", now=1_000_000 + 60)
    assert not AUTH.csrf_valid(token, "bob", now=1_000_000 + 60)
    assert not AdminAuth(Secret("other-token")).csrf_valid(token, "alice", now=1_000_000 + 60)
    assert not AUTH.csrf_valid(token, "alice", now=1_000_000 + CSRF_MAX_AGE + 1)
    for forged in ("", "x", "1000000.", ".abc", token.replace(token[-1], "0" if token[-1] != "0" else "1")):
        assert not AUTH.csrf_valid(forged, "alice", now=1_000_000 + 60), forged


def test_every_interpolated_value_is_escaped_once() -> None:
    evil = '<script>alert("x")</script>'
    piece = h("<td>{}</td>", evil)
    assert piece == "<td>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</td>"
    assert h("<tr>{}</tr>", piece) == "<tr>" + piece + "</tr>"  # markup is not escaped twice
    assert join([piece, "<b>"]) == piece + "&lt;b&gt;"
    assert h('<a href="{}">', url("/admin/dlq", {"record": 'a"b', "x": None})) == '<a href="/admin/dlq?record=a%22b">'
    assert options(["a<"], "a<") == Markup('<option value="a&lt;" selected>a&lt;</option>')


def test_progress_bar_writes_a_line_per_tenth_when_not_on_a_terminal() -> None:
    out = io.StringIO()
    bar = ProgressBar("replay", stream=out)
    for done in range(0, 101):
        bar.update(done, 100)
    bar.finish()
    lines = out.getvalue().splitlines()
    assert len(lines) == 11
    assert lines[-1].startswith("replay [##############################] 100% 100/100 records")
