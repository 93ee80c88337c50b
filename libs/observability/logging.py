"""Structured JSON logs (structlog), one line per event, secrets redacted.

``configure_logging`` is called once by each process's entry point. A
correlation id is bound with ``bind_correlation_id`` (contextvars), so it
follows a request across the log, Kafka and HTTP calls.

Redaction: any key that looks like a secret (token, secret, password,
authorization, signature, cookie, api key) is replaced by ``****``, and known
secret values registered with ``register_secret`` are masked wherever they
appear in a string.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

_SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|authorization|signature|cookie|api[_-]?key|x-token)", re.I
)
_secret_values: set[str] = set()
REDACTED = "****"


def register_secret(value: str | None) -> None:
    """Mask this exact value wherever it would appear in a log line."""
    if value and len(value) >= 4:
        _secret_values.add(value)


def _mask_text(text: str) -> str:
    for secret in _secret_values:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact(value: Any, key: str = "") -> Any:
    if key and _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, str):
        return _mask_text(value)
    if isinstance(value, dict):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def redact_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        event_dict[key] = _redact(event_dict[key], key)
    return event_dict


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(level: str = "info", role: str = "kleer-sync", stream: Any = None) -> None:
    """JSON logs to stdout (or ``stream``) at ``level``; idempotent.

    Records from libraries that use the standard ``logging`` module (aiohttp,
    aiokafka, asyncpg) go through the same JSON rendering and redaction; the
    chatty Kafka client logs only warnings and worse unless ``level`` is debug.
    """
    numeric = getattr(logging, level.upper(), logging.INFO)
    output = stream or sys.stdout
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    handler = logging.StreamHandler(output)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.processors.format_exc_info],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redact_processor, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)
    quiet = numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING)
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(quiet)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, redact_processor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=output),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(role=role)


CORRELATION_HEADER = "X-Correlation-Id"


def bind_correlation_id(correlation_id: str) -> None:
    """Name the chain of work this task belongs to: its log lines and its HTTP requests carry it."""
    structlog.contextvars.bind_contextvars(correlation_id=correlation_id)


def current_correlation_id() -> str | None:
    """The correlation id bound in this context (log lines, ``X-Correlation-Id`` on our HTTP requests)."""
    value = structlog.contextvars.get_contextvars().get("correlation_id")
    return str(value) if value else None


def correlation_headers(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` plus ``X-Correlation-Id`` when one is bound: the id crosses HTTP to Kleer and HubSpot."""
    correlation_id = current_correlation_id()
    if correlation_id is not None:
        headers[CORRELATION_HEADER] = correlation_id
    return headers


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
