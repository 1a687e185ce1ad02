"""Structured logging: structlog, JSON when stderr is not a TTY, with correlation and trace context.

Every line carries ``correlation_id`` (bound per request with :func:`bind_correlation_id`, and carried
across deployment handles by passing it explicitly) plus the current OpenTelemetry ``trace_id`` and
``span_id`` when a span is active. Message bodies and secrets are never logged at info level: log
lengths and ids instead.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog
from opentelemetry import trace

_CORRELATION_KEY = "correlation_id"


def add_otel_context(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Inject the active span's trace and span ids (hex, as OTLP backends show them)."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    return event_dict


def shared_processors() -> list[Any]:
    """Processors common to console and JSON output; ``merge_contextvars`` first so bound ids apply."""
    return [
        structlog.contextvars.merge_contextvars,
        add_otel_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]


#: A Telegram bot token in a Bot API URL (``/bot<id>:<secret>/method``).
_BOT_TOKEN_IN_URL = re.compile(r"/bot[0-9]+:[A-Za-z0-9_-]+")


class RedactBotTokens(logging.Filter):
    """Masks Telegram bot tokens in records of loggers that print URLs (httpx logs every request's URL at
    INFO, and the Bot API puts the token in the path): kept on even when someone turns httpx up to debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _BOT_TOKEN_IN_URL.sub("/bot<redacted>", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_http_client_logs() -> None:
    """Install :class:`RedactBotTokens` on the HTTP client loggers (idempotent)."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactBotTokens) for f in logger.filters):
            logger.addFilter(RedactBotTokens())


def configure_logging(*, level: str = "INFO", json: bool | None = None) -> None:
    """Configure structlog once per process (idempotent; deployments call it in ``__init__``)."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared_processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # httpx logs every request URL at INFO, and the Telegram Bot API puts the bot token in the URL.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    redact_http_client_logs()


def get_logger(name: str) -> Any:
    """A structlog logger named after the module."""
    return structlog.get_logger(name)


def new_correlation_id() -> str:
    """A fresh correlation id (hex UUID4)."""
    return uuid.uuid4().hex


@contextmanager
def bind_correlation_id(correlation_id: str | None = None, **extra: Any) -> Iterator[str]:
    """Bind a correlation id (and extra keys) to every log line inside the block."""
    cid = correlation_id or new_correlation_id()
    tokens = structlog.contextvars.bind_contextvars(**{_CORRELATION_KEY: cid}, **extra)
    try:
        yield cid
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
