"""The dashboard and the alert rules use only metrics kleer-sync defines, and the dashboard shows all of them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from libs.observability import metrics

from .manifests import Manifest, alerting_rules, config_map_data, prometheus_rule_groups
from .promql import grafana_query_metric_names, metric_names

# Series Prometheus itself adds to every scrape target.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
_SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}
_MENTION = re.compile(r"\bkleer_sync_[a-z0-9_]+")


def defined_families() -> dict[str, set[str]]:
    """Each metric in libs/observability/metrics.py -> the series names it exports."""
    families: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                families[family.name] = {family.name + suffix for suffix in _SERIES_SUFFIXES[family.type]}
    return families


DEFINED_SERIES = frozenset(name for names in defined_families().values() for name in names)


def _dashboard(objects: list[Manifest]) -> dict[str, Any]:
    data = config_map_data(objects, "kleer-sync-grafana-dashboard")
    (text,) = data.values()
    dashboard: dict[str, Any] = json.loads(text)
    return dashboard


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_metric_names(dashboard: dict[str, Any]) -> dict[str, set[str]]:
    """Where -> metric names, for every panel query and variable query of a dashboard."""
    found: dict[str, set[str]] = {}
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = metric_names(target["expr"])
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query":
            text = query["query"] if isinstance(query, dict) else query
            found[f"variable ${variable['name']}"] = grafana_query_metric_names(text)
    return found


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, endpoint) (rate(kleer_sync_x_bucket{a="b_c", d=~"$e"}[$__rate_interval])))'
        " / on (pod) group_left (role) kleer_sync_build_info offset 5m > bool 1e3 and up"
    )
    assert metric_names(expr) == {"kleer_sync_x_bucket", "kleer_sync_build_info", "up"}
    assert grafana_query_metric_names('label_values(kleer_sync_y{namespace="$ns"}, connection)') == {
        "kleer_sync_y"
    }


def test_counters_export_total_and_histograms_export_buckets() -> None:
    families = defined_families()
    assert families["kleer_sync_events_appended"] == {"kleer_sync_events_appended_total"}
    assert families["kleer_sync_event_append_seconds"] == {
        "kleer_sync_event_append_seconds_bucket",
        "kleer_sync_event_append_seconds_sum",
        "kleer_sync_event_append_seconds_count",
    }
    assert families["kleer_sync_dead_letters"] == {"kleer_sync_dead_letters"}


def test_alert_rules_use_only_defined_metrics(prod_objects: list[Manifest]) -> None:
    unknown = {}
    for group in prometheus_rule_groups(prod_objects):
        for rule in group["rules"]:
            names = metric_names(rule["expr"]) - DEFINED_SERIES - PROMETHEUS_SERIES
            if names:
                unknown[rule.get("alert") or rule.get("record")] = names
    assert not unknown, f"not defined in libs/observability/metrics.py: {unknown}"


def test_alert_texts_mention_only_defined_metrics(prod_objects: list[Manifest]) -> None:
    for rule in alerting_rules(prod_objects):
        for key, text in rule.get("annotations", {}).items():
            assert set(_MENTION.findall(text)) <= DEFINED_SERIES, f"{rule['alert']} {key}"


def test_dashboard_uses_only_defined_metrics(prod_objects: list[Manifest]) -> None:
    used = dashboard_metric_names(_dashboard(prod_objects))
    unknown = {where: names - DEFINED_SERIES - PROMETHEUS_SERIES for where, names in used.items()}
    assert not {where: names for where, names in unknown.items() if names}


@pytest.mark.parametrize("family", sorted(defined_families()))
def test_dashboard_shows_metric(family: str, prod_objects: list[Manifest]) -> None:
    used = set().union(*dashboard_metric_names(_dashboard(prod_objects)).values())
    assert defined_families()[family] & used, f"no dashboard panel queries {family}"


def test_dashboard_panels_have_unique_ids_and_a_datasource(prod_objects: list[Manifest]) -> None:
    dashboard = _dashboard(prod_objects)
    ids = [panel["id"] for panel in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in _panels(dashboard):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
