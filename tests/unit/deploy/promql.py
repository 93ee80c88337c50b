"""Just enough PromQL reading to list the metric names an expression selects.

String literals, comments, label matchers, range and subquery brackets and grouping
clauses are removed first; what is left that looks like an identifier, is not a
keyword and is not called like a function is a metric name.
"""

from __future__ import annotations

import re

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_COMMENT = re.compile(r"#[^\n]*")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")
_CALL = re.compile(r"\s*\(")
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "atan2",
        "start",
        "end",
    }
)
_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?P<selector>.*?)\s*(?:,\s*[A-Za-z_][A-Za-z0-9_]*\s*)?\)\s*$", re.S
)


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (Grafana ``$variables`` allowed)."""
    text = _COMMENT.sub(" ", _STRING.sub('""', expr))
    text = _MATCHERS.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        if match[0].lower() not in _KEYWORDS and not _CALL.match(text, match.end()):
            names.add(match[0])
    return names


def grafana_query_metric_names(query: str) -> set[str]:
    """Metric names in a Grafana variable query: ``label_values(selector, label)`` or PromQL."""
    match = _LABEL_VALUES.match(query)
    if match:
        return metric_names(match["selector"]) if match["selector"] else set()
    for function in ("query_result", "metrics"):
        if query.strip().startswith(function + "("):
            return metric_names(query.strip()[len(function) + 1 : -1])
    return metric_names(query)
