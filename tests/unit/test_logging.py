"""Every log line carries the correlation id and the active OpenTelemetry trace/span ids."""

from __future__ import annotations

import io
import json

import structlog
from opentelemetry.sdk.trace import TracerProvider

from common.logging import bind_correlation_id, configure_logging, get_logger


def _capture_json() -> io.StringIO:
    buf = io.StringIO()
    configure_logging(level="INFO", json=True)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buf))
    return buf


def test_correlation_and_trace_ids_are_injected() -> None:
    buf = _capture_json()
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("handle") as span, bind_correlation_id("cid-123", brand_id="b1"):
        get_logger("t").info("answered", chars=3)
        ctx = span.get_span_context()
    line = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert line["event"] == "answered"
    assert line["correlation_id"] == "cid-123" and line["brand_id"] == "b1"
    assert line["trace_id"] == format(ctx.trace_id, "032x")
    assert line["span_id"] == format(ctx.span_id, "016x")
    assert line["level"] == "info" and "timestamp" in line


def test_context_is_unbound_after_the_block() -> None:
    buf = _capture_json()
    with bind_correlation_id() as cid:
        assert len(cid) == 32
    get_logger("t").info("later")
    line = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert "correlation_id" not in line and "trace_id" not in line


def test_level_filtering() -> None:
    buf = _capture_json()
    configure_logging(level="WARNING", json=True)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buf))
    get_logger("t").info("hidden")
    get_logger("t").warning("shown")
    assert "hidden" not in buf.getvalue() and "shown" in buf.getvalue()
