from __future__ import annotations

from pathlib import Path

import pytest

from libs.config import VARIABLES, ConfigError, Secret, load_settings


def test_every_missing_or_malformed_variable_is_named_in_one_error() -> None:
    env = {"PORT": "http", "HUBSPOT_API_BASE": "not-a-url", "LOG_LEVEL": "loud"}
    with pytest.raises(ConfigError) as info:
        load_settings(required=["DATABASE_URL", "KLEER_TOKEN", "PORT"], env=env)
    text = str(info.value)
    for name in ("DATABASE_URL", "KLEER_TOKEN", "PORT", "HUBSPOT_API_BASE", "LOG_LEVEL"):
        assert name in text
    assert len(info.value.problems) == 5
    assert "README.md" in text  # says where to look


def test_oauth_variables_replace_the_private_app_token() -> None:
    env = {"HUBSPOT_CLIENT_ID": "id", "HUBSPOT_CLIENT_SECRET": "s3cret", "HUBSPOT_REFRESH_TOKEN": "r"}
    settings = load_settings(required=["HUBSPOT_ACCESS_TOKEN"], env=env)
    assert settings.secret("HUBSPOT_REFRESH_TOKEN").value == "r"
    with pytest.raises(ConfigError, match="HUBSPOT_REFRESH_TOKEN"):
        load_settings(required=["HUBSPOT_ACCESS_TOKEN"], env={"HUBSPOT_CLIENT_ID": "id"})


def test_secrets_never_show_in_reprs_or_plain_getters() -> None:
    settings = load_settings(env={"KLEER_TOKEN": "tok-123456"})
    secret = settings.secret("KLEER_TOKEN")
    assert "tok-123456" not in repr(secret) and "tok-123456" not in str(secret)
    assert "tok-123456" not in repr(settings.secret("KLEER_TOKEN"))
    with pytest.raises(KeyError):
        settings.get("KLEER_TOKEN")
    assert repr(Secret("")) == "Secret('')"


def test_a_malformed_database_url_does_not_echo_it() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"DATABASE_URL": "mysql://user:s3cr3t-pw@host/db", "KLEER_API_BASE": "ftp://u:tok3n@x"})
    message = str(info.value)
    assert "DATABASE_URL=mysql://user:****@host/db is not a postgres/postgresql URL" in message
    assert "KLEER_API_BASE=ftp://u:****@x" in message
    assert "s3cr3t-pw" not in message and "tok3n" not in message


def test_defaults_apply_and_the_connection_is_named() -> None:
    settings = load_settings(env={})
    assert settings.get("PORT") == "8080"
    assert settings.connection_id == "default"


def test_the_readme_documents_every_variable() -> None:
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    missing = [v.name for v in VARIABLES if f"`{v.name}`" not in readme]
    assert missing == [], f"add these to README.md's configuration table: {missing}"


def test_the_readme_tables_are_generated_from_the_code() -> None:
    import importlib.util

    root = Path(__file__).parents[3]
    spec = importlib.util.spec_from_file_location("readme_tables", root / "scripts" / "readme_tables.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (root / "README.md").read_text()
    assert module.render(readme) == readme, "run `.venv/bin/python scripts/readme_tables.py`"
