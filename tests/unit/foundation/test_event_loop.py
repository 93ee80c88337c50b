"""Every process runs on the loop EVENT_LOOP names: uvloop by default, asyncio on request."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from libs import runtime
from libs.config import ConfigError, load_settings


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_processes_run_on_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENT_LOOP", raising=False)
    assert runtime.run(_loop_type()) is uvloop.Loop
    loop = runtime.new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_event_loop_asyncio_is_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_LOOP", "asyncio")
    assert not issubclass(runtime.run(_loop_type()), uvloop.Loop)
    assert runtime.event_loop_factory() is None


def test_a_misspelt_event_loop_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(required=[], env={"EVENT_LOOP": "uv-loop"})
    assert "EVENT_LOOP must be one of uvloop, asyncio, got 'uv-loop'" in str(info.value)
