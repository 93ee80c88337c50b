"""The Dockerfile builds in stages from a pinned base and runs kleer-sync as a numeric non-root user."""

from __future__ import annotations

import re

from .manifests import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
_PINNED = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")


def _instructions(name: str) -> list[str]:
    return re.findall(rf"^{name}\s+(.+)$", DOCKERFILE, re.M)


def test_base_image_is_an_exact_python_release() -> None:
    (default,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert _PINNED.match(default), default
    stages = _instructions("FROM")
    assert len(stages) >= 2, "build and runtime stages"
    assert all(stage.startswith("${PYTHON_IMAGE} AS ") for stage in stages), stages


def test_runtime_runs_kleer_sync_as_a_numeric_non_root_user() -> None:
    (user,) = _instructions("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0
    last_stage = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    assert "\nUSER " in last_stage
    assert _instructions("ENTRYPOINT") == ['["kleer-sync"]']


def test_no_secret_is_baked_into_the_image() -> None:
    for line in _instructions("ENV") + _instructions("ARG"):
        assert not re.search(r"TOKEN|SECRET|PASSWORD|DATABASE_URL", line), line


def test_build_context_leaves_out_the_venv_git_and_env_files() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    entries = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if entries[0] == "*":  # an allow-list: everything is out unless re-included
        assert not {"!.git", "!.venv", "!.env", "!tests"} & set(entries)
    else:
        assert {".git", ".venv"} <= set(entries)
    assert "**/.env" in entries


def test_the_image_can_run_every_event_loop_choice() -> None:
    """EVENT_LOOP=uvloop needs the uvloop extra: built into the wheels and installed from them."""
    from libs.config import EVENT_LOOPS

    optional = set(EVENT_LOOPS) - {"asyncio"}
    assert optional == {"uvloop"}
    assert re.search(r"pip wheel --wheel-dir /wheels '\.\[uvloop\]'", DOCKERFILE)
    assert re.search(r"pip install --no-index --find-links=/wheels 'kleer-sync\[uvloop\]'", DOCKERFILE)
