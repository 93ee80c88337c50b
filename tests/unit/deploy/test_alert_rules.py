"""The alert rules are valid Prometheus rules, fire when they should, and tell people what to do."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest
import yaml

from .manifests import INSTALL_HINT, Manifest, alerting_rules, prometheus_rule_groups

TEST_CASES = pathlib.Path(__file__).parent / "data" / "alert-rules-test.yaml"


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(f"promtool is not installed: {INSTALL_HINT}")
    return promtool


def _run(args: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_alert_rules_pass_promtool_check(prod_objects: list[Manifest], tmp_path: pathlib.Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": prometheus_rule_groups(prod_objects)}, sort_keys=False))
    result = _run([_promtool(), "check", "rules", str(rules)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerting_rules(prod_objects))} rules found" in result.stdout


def test_alerts_fire_as_the_promtool_unit_tests_expect(
    prod_objects: list[Manifest], tmp_path: pathlib.Path
) -> None:
    groups = [
        {**group, "rules": [{k: v for k, v in rule.items() if k != "annotations"} for rule in group["rules"]]}
        for group in prometheus_rule_groups(prod_objects)
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(TEST_CASES, tmp_path / TEST_CASES.name)
    result = _run([_promtool(), "test", "rules", TEST_CASES.name], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_says_what_happened_and_what_to_do(prod_objects: list[Manifest]) -> None:
    for rule in alerting_rules(prod_objects):
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            assert annotations.get(key, "").strip(), f"{rule['alert']} has no {key}"
        assert len(annotations["runbook"]) >= 80, f"{rule['alert']}: the runbook should say what to do"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]


@pytest.mark.parametrize(
    "watched",
    [
        "kleer_sync_poll_last_success_timestamp_seconds",
        "kleer_sync_relay_lag_events",
        "kleer_sync_consumer_lag_events",
        "kleer_sync_consumer_paused",
        "kleer_sync_dead_letters",
        "kleer_sync_hubspot_rate_limited_total",
        'kleer_sync_webhook_requests_total{outcome!="accepted"}',
        'kleer_sync_webhook_requests_total{outcome="error"}',
    ],
)
def test_an_alert_watches(watched: str, prod_objects: list[Manifest]) -> None:
    assert any(watched in rule["expr"] for rule in alerting_rules(prod_objects))


def test_alert_names_are_unique(prod_objects: list[Manifest]) -> None:
    names = [rule["alert"] for rule in alerting_rules(prod_objects)]
    assert len(names) == len(set(names))
