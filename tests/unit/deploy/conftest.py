"""Fixtures for the deploy checks: each overlay is rendered once per test session."""

from __future__ import annotations

import pytest

from .manifests import BASE, DEPLOY, OVERLAYS, Manifest, render

_cache: dict[str, list[Manifest]] = {}


def rendered_overlay(overlay: str) -> list[Manifest]:
    if overlay not in _cache:
        directory = BASE if overlay == "base" else DEPLOY / "overlays" / overlay
        try:
            _cache[overlay] = render(directory)
        except FileNotFoundError as missing:
            pytest.fail(str(missing))
    return _cache[overlay]


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def objects(overlay: str) -> list[Manifest]:
    """Every object the overlay renders (a fresh list; the objects are shared, do not mutate)."""
    return list(rendered_overlay(overlay))


@pytest.fixture
def prod_objects() -> list[Manifest]:
    return list(rendered_overlay("prod"))
