"""Which event loop the services run on (libs.runtime.run_event_loop, EVENT_LOOP)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from libs.config import ConfigError, load_settings
from libs.runtime import run_event_loop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_the_services_run_on_the_standard_loop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENT_LOOP", raising=False)
    assert run_event_loop(_loop_module()).startswith("asyncio")


def test_event_loop_uvloop_runs_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_LOOP", "uvloop")
    assert run_event_loop(_loop_module()).startswith("uvloop")


def test_uvloop_chosen_but_not_installed_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_LOOP", "uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    coroutine = _loop_module()
    with pytest.raises(ConfigError, match=r"uvloop is not installed: pip install 'kleer-sync\[uvloop\]'"):
        run_event_loop(coroutine)
    assert coroutine.cr_frame is None  # closed, not left to warn "never awaited"


def test_an_unknown_event_loop_is_a_configuration_error_naming_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_LOOP", "trio")
    coroutine = _loop_module()
    with pytest.raises(ConfigError, match="EVENT_LOOP must be one of asyncio, uvloop, got 'trio'"):
        run_event_loop(coroutine)
    assert coroutine.cr_frame is None
    with pytest.raises(ConfigError, match="EVENT_LOOP must be one of asyncio, uvloop"):
        load_settings(required=[], env={"EVENT_LOOP": "trio"})
