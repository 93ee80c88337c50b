"""Server-rendered HTML where every interpolated value is escaped unless it is already ``Markup``.

``h("<td>{}</td>", value)`` formats like ``str.format`` but escapes each
value (``& < > " '``); the result is ``Markup`` and is not escaped again when
it is interpolated into a larger piece. Templates are literals in the code, so
nothing a user or HubSpot sends can become markup.
"""

from __future__ import annotations

import html
import string
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode


class Markup(str):
    """A string that is already safe HTML."""

    __slots__ = ()


class _Escaping(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, Markup):
            return str(value)
        return html.escape(super().format_field(value, format_spec), quote=True)


_FORMATTER = _Escaping()


def h(template: str, /, *args: Any, **kwargs: Any) -> Markup:
    """Format ``template`` (a literal) with every argument escaped."""
    return Markup(_FORMATTER.vformat(template, args, kwargs))


def join(parts: Iterable[Markup], separator: str = "") -> Markup:
    """Concatenate pieces of markup (a plain string among them is escaped)."""
    return Markup(separator.join(p if isinstance(p, Markup) else html.escape(p, quote=True) for p in parts))


def url(path: str, query: Mapping[str, object | None] | None = None) -> str:
    """A URL with its query string (None values left out); escape it with ``h`` where it lands in markup."""
    pairs = [(k, str(v)) for k, v in (query or {}).items() if v is not None and v != ""]
    return path + ("?" + urlencode(pairs) if pairs else "")


def options(values: Iterable[str], selected: str | None, *, blank: str | None = None) -> Markup:
    """``<option>`` elements for a ``<select>``."""
    items = [h('<option value="">{}</option>', blank)] if blank is not None else []
    items.extend(
        h('<option value="{0}"{1}>{0}</option>', value, Markup(" selected") if value == selected else Markup(""))
        for value in values
    )
    return join(items)


NAV: tuple[tuple[str, str], ...] = (
    ("/admin/", "Overview"),
    ("/admin/mappings", "Field mappings"),
    ("/admin/records", "Records"),
    ("/admin/dlq", "Dead letters"),
    ("/admin/replay", "Replay"),
)


def page(title: str, body: Markup, *, active: str = "", user: str = "") -> Markup:
    """The whole document: navigation, the page's body, no scripts."""
    nav = join(
        h('<a href="{}"{}>{}</a>', path, Markup(' aria-current="page"') if path == active else Markup(""), label)
        for path, label in NAV
    )
    return h(
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>{title} · kleer-sync admin</title>"
        '<link rel="stylesheet" href="/admin/admin.css"></head>'
        '<body><header><strong>kleer-sync</strong> <nav>{nav}</nav>'
        '<span class="user">{user}</span></header>'
        "<main><h1>{title}</h1>{body}</main></body></html>\n",
        title=title,
        nav=nav,
        user=f"signed in as {user}" if user else "",
        body=body,
    )


STYLESHEET = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #1d2733; background: #f7f8fa; }
header { background: #14324a; color: #fff; padding: .6rem 1.2rem; display: flex; gap: 1.5rem; align-items: center; }
header nav a { color: #cfe3f5; margin-right: 1rem; text-decoration: none; }
header nav a[aria-current=page] { color: #fff; font-weight: 600; text-decoration: underline; }
header .user { margin-left: auto; color: #cfe3f5; font-size: .9em; }
main { padding: 1rem 1.2rem 3rem; max-width: 1400px; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 1.6rem; }
table { border-collapse: collapse; background: #fff; width: 100%; margin: .6rem 0; }
th, td { border: 1px solid #dde3ea; padding: .35rem .5rem; text-align: left; vertical-align: top; }
th { background: #eef2f6; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, monospace; font-size: .9em; }
.badge { display: inline-block; padding: .05rem .45rem; border-radius: .6rem; font-size: .8em; font-weight: 600; }
.badge.one-way { background: #fff1cc; color: #7a5200; border: 1px solid #e5c56b; }
.badge.trigger { background: #dff3e4; color: #1e6b34; border: 1px solid #9fd3ad; }
.status-open { color: #a1260d; font-weight: 600; } .status-redriven { color: #1e6b34; }
.warn { color: #a1260d; } .ok { color: #1e6b34; } .muted { color: #6b7785; }
.flash { background: #e8f4ff; border: 1px solid #9cc8ef; padding: .5rem .8rem; margin: .6rem 0; }
.flash.error { background: #fdecea; border-color: #f0a39a; }
form.inline { display: inline; margin: 0 .2rem 0 0; }
form.filters { display: flex; gap: .6rem; flex-wrap: wrap; align-items: end; background: #fff;
  padding: .6rem; border: 1px solid #dde3ea; }
form.filters label { display: flex; flex-direction: column; font-size: .85em; }
button { cursor: pointer; } .tabs a { margin-right: .8rem; }
del { color: #a1260d; } ins { color: #1e6b34; text-decoration: none; }
.progress { width: 100%; max-width: 40rem; height: 1.2rem; }
"""
