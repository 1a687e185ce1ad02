"""OpenTelemetry tracing: one trace per inbound message, across deployments and Redis streams.

Context crosses process boundaries explicitly: :func:`inject` writes the W3C ``traceparent`` (and
``tracestate``) into a plain dict that travels as a deployment-handle argument or inside a stream
payload, and :func:`extract` / :func:`span` continue the trace on the other side. Exporters are chosen
by settings (``TELEMETRY__EXPORTER``): ``none`` (default), ``console``, ``otlp`` (HTTP, endpoint and
headers from settings) or ``memory`` (tests read finished spans from :func:`memory_exporter`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from common.config import TelemetrySettings

TRACER_NAME = "messaging-assistant"

_configured: TracerProvider | None = None
_memory: InMemorySpanExporter | None = None


def configure_tracing(settings: TelemetrySettings) -> TracerProvider | None:
    """Install a tracer provider once per process; None when tracing is off."""
    global _configured, _memory
    if settings.exporter == "none":
        return None
    if _configured is not None:
        return _configured
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    if settings.exporter == "memory":
        _memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(_memory))
    else:
        provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    trace.set_tracer_provider(provider)
    _configured = provider
    return provider


def _exporter(settings: TelemetrySettings) -> SpanExporter:
    if settings.exporter == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    headers = _parse_headers(settings.otlp_headers.get_secret_value() if settings.otlp_headers else "")
    return OTLPSpanExporter(endpoint=settings.otlp_endpoint, headers=headers)


def _parse_headers(raw: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {k.strip(): v.strip() for k, v in pairs}


def memory_exporter() -> InMemorySpanExporter:
    """The in-memory exporter (``exporter=memory``); raises when another exporter is configured."""
    if _memory is None:
        raise RuntimeError("tracing is not configured with exporter=memory")
    return _memory


def tracer() -> trace.Tracer:
    """The project's tracer (a no-op tracer until :func:`configure_tracing` installs a provider)."""
    return trace.get_tracer(TRACER_NAME)


def inject() -> dict[str, str]:
    """The current trace context as a plain dict (W3C trace context headers)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str] | None) -> otel_context.Context:
    """A context continuing the trace carried in ``carrier`` (empty → the current context)."""
    return propagate.extract(dict(carrier or {}))


@contextmanager
def span(name: str, *, parent: Mapping[str, str] | None = None, **attributes: Any) -> Iterator[trace.Span]:
    """Start a span, as a child of ``parent`` (a carrier from :func:`inject`) when given."""
    ctx = extract(parent) if parent else None
    with tracer().start_as_current_span(name, context=ctx) as current:
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(key, value if isinstance(value, int | float | bool) else str(value))
        yield current
