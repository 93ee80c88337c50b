"""Which event loop the services run on (libs.runtime.run_event_loop, EVENT_LOOP)."""

from __future__ import annotations

import asyncio

import pytest

from libs.config import ConfigError, load_settings
from libs.runtime import run_event_loop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_the_services_run_on_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv("EVENT_LOOP", raising=False)
    assert run_event_loop(_loop_module()).startswith("uvloop")


def test_event_loop_asyncio_runs_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_LOOP", "asyncio")
    assert run_event_loop(_loop_module()).startswith("asyncio")


def test_an_unknown_event_loop_is_a_configuration_error_naming_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_LOOP", "trio")
    coroutine = _loop_module()
    with pytest.raises(ConfigError, match="EVENT_LOOP must be one of uvloop, asyncio, got 'trio'"):
        run_event_loop(coroutine)
    assert coroutine.cr_frame is None  # closed, not left to warn "never awaited"
    with pytest.raises(ConfigError, match="EVENT_LOOP must be one of uvloop, asyncio"):
        load_settings(required=[], env={"EVENT_LOOP": "trio"})
