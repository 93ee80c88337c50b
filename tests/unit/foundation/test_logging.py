from __future__ import annotations

import io

import orjson

from libs.observability.logging import configure_logging, get_logger, register_secret


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_logs_are_json_lines_with_secrets_redacted_by_key_and_by_value() -> None:
    buffer = io.StringIO()
    configure_logging("info", role="test", stream=buffer)
    register_secret("pat-na1-abcdef123456")
    log = get_logger("t")
    log.info(
        "calling hubspot",
        authorization="Bearer pat-na1-abcdef123456",
        headers={"X-HubSpot-Signature-v3": "sig==", "X-Token": "kleer-tok", "accept": "json"},
        url="https://api.hubapi.com/?token=pat-na1-abcdef123456",
    )
    log.warning("client_secret leaked?", client_secret="yyyy", note="uses pat-na1-abcdef123456 inside")
    text = buffer.getvalue()
    for secret in ("pat-na1-abcdef123456", "sig==", "kleer-tok", "yyyy"):
        assert secret not in text
    lines = _lines(buffer)
    assert len(lines) == 2
    assert lines[0]["headers"] == {"X-HubSpot-Signature-v3": "****", "X-Token": "****", "accept": "json"}
    assert lines[0]["role"] == "test" and lines[0]["level"] == "info"


def test_log_level_filters() -> None:
    buffer = io.StringIO()
    configure_logging("warning", stream=buffer)
    get_logger("t").info("hidden")
    get_logger("t").error("shown")
    assert [line["event"] for line in _lines(buffer)] == ["shown"]


def test_standard_library_records_are_json_and_redacted_too() -> None:
    import logging

    buffer = io.StringIO()
    configure_logging("info", role="test", stream=buffer)
    register_secret("kleer-secret-token-99")
    logging.getLogger("aiohttp.client").warning("GET failed with X-Token kleer-secret-token-99")
    logging.getLogger("aiokafka.consumer").info("Joined group")  # below the Kafka client's threshold
    lines = _lines(buffer)
    assert len(lines) == 1
    assert lines[0]["level"] == "warning" and lines[0]["logger"] == "aiohttp.client"
    assert "kleer-secret-token-99" not in buffer.getvalue()
