"""No secret values in the repository; secrets reach the processes only from the Secret."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import yaml

from libs.config import VARIABLES

from .manifests import REPO, Manifest, all_containers, config_map_data, name_of, of_kind

SECRET_NAME = "kleer-sync-secrets"
SECRET_VARIABLES = {v.name for v in VARIABLES if v.secret} | {"DATABASE_URL", "DATABASE_OWNER_URL"}  # DSNs hold passwords
KNOWN_VARIABLES = {v.name for v in VARIABLES}
_SKIP_DIRS = {
    ".git",
    ".venv",
    "node_modules",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "build",
    "dist",
    ".run",
}


def _repository_documents() -> list[tuple[pathlib.Path, Any]]:
    """Every YAML or JSON document in the working tree (outside caches and the venv)."""
    documents = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
        for file in files:
            path = pathlib.Path(root) / file
            try:
                if path.suffix in (".yaml", ".yml"):
                    documents += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
                elif path.suffix == ".json":
                    documents.append((path, json.loads(path.read_text())))
            except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError):
                # Templates and fixtures that are not plain YAML/JSON cannot hold a Secret object.
                continue
    return documents


def test_the_secret_variables_are_the_ones_the_brief_names() -> None:
    assert SECRET_VARIABLES == {
        "DATABASE_URL",
        "DATABASE_OWNER_URL",
        "KLEER_TOKEN",
        "HUBSPOT_ACCESS_TOKEN",
        "HUBSPOT_REFRESH_TOKEN",
        "HUBSPOT_CLIENT_SECRET",
        "ADMIN_TOKEN",
    }


def test_no_secret_object_with_data_anywhere_in_the_repository() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for path, doc in _repository_documents()
        if isinstance(doc, dict)
        and doc.get("kind") == "Secret"
        and (doc.get("data") or doc.get("stringData"))
    ]
    assert not offenders, f"Secret values committed in: {offenders}"


def test_overlays_render_no_secret_objects(objects: list[Manifest]) -> None:
    assert not of_kind(objects, "Secret")


def test_secret_variables_come_only_from_the_secret(objects: list[Manifest]) -> None:
    for owner, _, container in all_containers(objects):
        for var in container.get("env", []):
            source = var.get("valueFrom", {}).get("secretKeyRef")
            if var["name"] in SECRET_VARIABLES:
                assert "value" not in var, f"{name_of(owner)} sets {var['name']} in plain text"
                assert source is not None, f"{name_of(owner)}: {var['name']} must come from the Secret"
                assert (source["name"], source["key"]) == (SECRET_NAME, var["name"]), name_of(owner)
            else:
                assert source is None, f"{name_of(owner)}: {var['name']} is not a secret"
        for env_from in container.get("envFrom", []):
            assert "secretRef" not in env_from, f"{name_of(owner)}: name the Secret keys one by one"


def test_every_process_gets_the_database_url(objects: list[Manifest]) -> None:
    for owner, _, container in all_containers(objects):
        assert "DATABASE_URL" in {var["name"] for var in container.get("env", [])}, name_of(owner)


def test_config_map_holds_only_known_non_secret_variables(objects: list[Manifest]) -> None:
    config = config_map_data(objects, "kleer-sync-config")
    assert set(config) <= KNOWN_VARIABLES, set(config) - KNOWN_VARIABLES
    assert not set(config) & SECRET_VARIABLES
    for owner, _, container in all_containers(objects):
        names = {var["name"] for var in container.get("env", [])}
        assert names <= KNOWN_VARIABLES, f"{name_of(owner)}: {names - KNOWN_VARIABLES} not in libs/config.py"


def test_processes_read_the_config_map_the_overlay_generates(objects: list[Manifest]) -> None:
    (config,) = [
        c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith("kleer-sync-config")
    ]
    for owner, _, container in all_containers(objects):
        for env_from in container.get("envFrom", []):
            assert env_from["configMapRef"]["name"] == config["metadata"]["name"], name_of(owner)
