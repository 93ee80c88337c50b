"""``make run`` end to end: the demo syncs visibly, every process exports the documented metrics, Ctrl-C stops all.

Runs ``kleer-sync demo`` (what ``make run`` runs after installing) as a real
process tree: broker, both simulators, inbound and outbound services.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.unit.deploy.conftest import rendered_overlay
from tests.unit.deploy.manifests import alerting_rules
from tests.unit.deploy.promql import metric_names
from tests.unit.deploy.test_metric_names import _dashboard, dashboard_metric_names

pytestmark = pytest.mark.slow

_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def _exported_series(text: str) -> set[str]:
    series = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if kind == "counter" and name.endswith("_total"):  # newer clients name the family with _total
            name = name.removesuffix("_total")
        series.update(name + suffix for suffix in _SUFFIXES.get(kind, ("",)))
    return series


def _value(text: str, pattern: str) -> float:
    match = re.search(rf"^{pattern} (\S+)$", text, re.M)
    assert match, f"no sample matching {pattern}"
    return float(match.group(1))


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_demo_syncs_exports_every_documented_metric_and_stops_on_ctrl_c(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    demo = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "demo", "--clients", "40", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.startswith("Running."):
                break
        text = "".join(output)
        assert "first sync complete" in text, text
        ports = {role: int(port) for port, role in re.findall(r"127\.0\.0\.1:(\d+)/metrics \((\w+)\)", text)}
        assert set(ports) == {"outbound", "inbound"}, text
        time.sleep(6)  # a freshness and lag refresh after the first sync
        scraped = {role: _scrape(f"http://127.0.0.1:{port}/metrics") for role, port in ports.items()}
        outbound, inbound = scraped["outbound"], scraped["inbound"]

        assert _value(outbound, r'kleer_sync_poll_freshness_seconds\{connection="default",object_type="client"\}') < 60
        assert _value(outbound, "kleer_sync_relay_lag_events") == 0
        assert _value(outbound, r'kleer_sync_consumer_lag_events\{consumer="outbound-pusher"\}') == 0
        assert _value(outbound, r'kleer_sync_events_appended_total\{type="KleerClientChanged"\}') == 40
        assert _value(outbound, r'kleer_sync_hubspot_records_upserted_total\{object_type="companies"\}') >= 40
        assert re.search(r'^kleer_sync_build_info\{role="\w+",version="[^"]+"\} 1\.0$', outbound, re.M)

        exported = _exported_series(outbound) | _exported_series(inbound)
        objects = rendered_overlay("prod")
        used = set().union(*dashboard_metric_names(_dashboard(objects)).values())
        for rule in alerting_rules(objects):
            used |= metric_names(rule["expr"])
        ours = {name for name in used if name.startswith("kleer_sync_")}
        assert ours - exported == set(), "dashboard/alerts use metrics no running process exports"

        # The printed inbound example works: a HubSpot UI edit reaches Kleer.
        edit_url = re.search(r"curl -s -X POST (\S+/_sim/ui-edit/companies/\d+)", text)
        kleer_url = re.search(r"(http://127\.0\.0\.1:\d+/v1/company/\d+/client/\d+)", text)
        token = re.search(r"-H 'X-Token: (\S+)'", text)
        assert edit_url and kleer_url and token, text
        request = urllib.request.Request(
            edit_url.group(1),
            data=b'{"properties": {"name": "Renamed From The README AB"}}',
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).read()
        deadline = time.monotonic() + 10
        name = None
        while time.monotonic() < deadline and name != "Renamed From The README AB":
            read = urllib.request.Request(
                kleer_url.group(1), headers={"X-Token": token.group(1), "Accept": "application/json"}
            )
            name = json.loads(urllib.request.urlopen(read, timeout=10).read())["name"]
            time.sleep(0.2)
        assert name == "Renamed From The README AB"
    finally:
        demo.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            rest = demo.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            raise
    assert demo.returncode == 0, rest
    assert "stopping" in rest
    for port in ports.values():
        assert not _port_open(port), "a service kept running after Ctrl-C"
