"""Tracing context crosses a process boundary as a dict; metrics render in Prometheus format."""

from __future__ import annotations

import re

import pytest

from common import metrics, telemetry
from common.config import TelemetrySettings


@pytest.fixture(scope="module")
def spans():
    telemetry.configure_tracing(TelemetrySettings(exporter="memory"))
    exporter = telemetry.memory_exporter()
    exporter.clear()
    return exporter


def test_context_carried_in_a_dict_continues_the_trace(spans) -> None:
    with telemetry.span("gateway.webhook", channel="whatsapp") as root:
        carrier = telemetry.inject()
    assert "traceparent" in carrier
    # ...the carrier travels inside a stream payload; the consumer continues the same trace:
    with telemetry.span("dispatcher.send", parent=carrier, attempts=1) as child:
        pass
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert finished["dispatcher.send"].context.trace_id == root.get_span_context().trace_id
    assert finished["dispatcher.send"].parent.span_id == root.get_span_context().span_id
    assert finished["gateway.webhook"].attributes["channel"] == "whatsapp"
    assert child.get_span_context().span_id != root.get_span_context().span_id


def test_otlp_headers_are_parsed() -> None:
    assert telemetry._parse_headers("api-key=abc, x-tenant = t1,bad") == {"api-key": "abc", "x-tenant": "t1"}


def test_metrics_render_with_conventional_names() -> None:
    metrics.inc("ema_messages_total", channel="webchat", brand="b1", direction="inbound")
    metrics.observe("ema_stage_latency_seconds", 0.12, stage="retrieval")
    text = metrics.render_latest().decode()
    assert re.search(r'ema_messages_total\{brand="b1",channel="webchat",direction="inbound"\} 1\.0', text)
    assert 'ema_stage_latency_seconds_bucket{le="0.25",stage="retrieval"} 1.0' in text
    for name in metrics.metric_names():
        assert f"# HELP {name}" in text or f"# HELP {name.removesuffix('_total')}" in text
    with pytest.raises(ValueError, match="missing labels"):
        metrics.inc("ema_messages_total", channel="webchat")
