"""Every long-running process refuses to start on a missing or malformed variable with one clear error.

The error names every problem at once (not the first one, then the next on the
next start) and says how to fix it; the exit code is 2; no secret value is echoed.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

COMMANDS = [
    ["relay"],
    ["outbound"],
    ["outbound", "poller"],
    ["outbound", "pusher"],
    ["inbound"],
    ["inbound", "handlers"],
]
SECRET = "pat-na1-do-not-print-0000"


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "KAFKA_", "KLEER_", "HUBSPOT_",
                                                                       "PUBLIC_", "PORT", "METRICS_", "MAPPINGS_"))}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env={**clean, **env}, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_a_process_without_its_settings_names_every_missing_one_and_exits_2(args: list[str]) -> None:
    result = _run(args, {})
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["outbound", "pusher"], ["inbound"]], ids=["outbound pusher", "inbound"])
def test_malformed_values_are_named_together_without_echoing_secrets(args: list[str]) -> None:
    result = _run(args, {
        "DATABASE_URL": "mysql://kleer:s3cret@db/kleer",
        "PORT": "eighty",
        "METRICS_PORT": "70000",
        "HUBSPOT_ACCESS_TOKEN": SECRET,
        "LOG_LEVEL": "loud",
    })
    assert result.returncode == 2, (result.stdout, result.stderr)
    for name in ("DATABASE_URL", "PORT", "METRICS_PORT", "LOG_LEVEL"):
        assert name in result.stderr, (name, result.stderr)
    assert "s3cret" not in result.stderr and SECRET not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
