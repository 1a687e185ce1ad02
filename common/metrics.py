"""Prometheus metrics, named by Prometheus conventions (``ema_<what>_<unit>``, ``_total`` for counters).

One definition serves two pipelines:

* In a plain process (in-process wiring, tests, the gateway's own ``/metrics``) metrics live in a
  ``prometheus_client`` registry rendered by :func:`render_latest`.
* Inside Ray workers (every Serve replica) they are recorded through ``ray.util.metrics`` so Ray's
  metrics agent exports them from every node (Prometheus scrapes the Ray metrics export port; Ray
  prefixes names with ``ray_``). :func:`use_ray_metrics` switches a process over; deployments call it
  in ``__init__``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REGISTRY = CollectorRegistry(auto_describe=True)


@dataclass(frozen=True)
class _Spec:
    kind: str  # counter | histogram | gauge
    name: str
    doc: str
    labels: tuple[str, ...]


_SPECS: dict[str, _Spec] = {
    s.name: s
    for s in (
        _Spec(
            "counter",
            "ema_messages_total",
            "Messages by channel, brand and direction",
            ("channel", "brand", "direction"),
        ),
        _Spec("histogram", "ema_stage_latency_seconds", "Latency of one pipeline stage", ("stage",)),
        _Spec(
            "histogram",
            "ema_message_latency_seconds",
            "End to end: customer message received to reply accepted by the provider",
            ("channel",),
        ),
        _Spec("counter", "ema_llm_tokens_total", "LLM tokens by kind (prompt/completion)", ("model", "kind")),
        _Spec("histogram", "ema_llm_latency_seconds", "LLM call latency", ("model",)),
        _Spec("counter", "ema_guardrail_decisions_total", "Guardrail decisions", ("rule", "action")),
        _Spec("counter", "ema_escalations_total", "Conversations handed to a human", ("brand", "trigger")),
        _Spec(
            "counter",
            "ema_outbound_attempts_total",
            "Provider send attempts by outcome",
            ("channel", "outcome"),
        ),
        _Spec(
            "counter",
            "ema_media_total",
            "Media customers sent, by outcome (stored, too_large, failed, transcribed, untranscribed)",
            ("channel", "kind", "outcome"),
        ),
        _Spec("counter", "ema_dead_letters_total", "Entries moved to a dead-letter stream", ("stream",)),
        _Spec("counter", "ema_ingestion_documents_total", "Ingested documents by outcome", ("outcome",)),
        _Spec("counter", "ema_ingestion_jobs_total", "Ingestion jobs finished, by outcome", ("outcome",)),
        _Spec("counter", "ema_ingestion_chunks_total", "Chunks written/deleted/unchanged", ("operation",)),
        _Spec(
            "gauge",
            "ema_stream_pending_entries",
            "Entries delivered but not acknowledged",
            ("stream", "group"),
        ),
        _Spec(
            "gauge", "ema_stream_lag_entries", "Entries not yet delivered to the group", ("stream", "group")
        ),
    )
}

_prom: dict[str, Any] = {}
_ray: dict[str, Any] | None = None


def _prom_metric(spec: _Spec) -> Any:
    metric = _prom.get(spec.name)
    if metric is None:
        if spec.kind == "counter":
            metric = Counter(spec.name, spec.doc, spec.labels, registry=REGISTRY)
        elif spec.kind == "histogram":
            metric = Histogram(spec.name, spec.doc, spec.labels, buckets=LATENCY_BUCKETS, registry=REGISTRY)
        else:
            metric = Gauge(spec.name, spec.doc, spec.labels, registry=REGISTRY)
        _prom[spec.name] = metric
    return metric


def use_ray_metrics() -> None:
    """Record through ``ray.util.metrics`` from now on (call inside a Ray worker)."""
    global _ray
    if _ray is not None:
        return
    from ray.util import metrics as ray_metrics

    built: dict[str, Any] = {}
    for spec in _SPECS.values():
        if spec.kind == "counter":
            built[spec.name] = ray_metrics.Counter(spec.name, spec.doc, tag_keys=spec.labels)
        elif spec.kind == "histogram":
            built[spec.name] = ray_metrics.Histogram(
                spec.name, spec.doc, boundaries=list(LATENCY_BUCKETS), tag_keys=spec.labels
            )
        else:
            built[spec.name] = ray_metrics.Gauge(spec.name, spec.doc, tag_keys=spec.labels)
    _ray = built


def _labels(spec: _Spec, labels: dict[str, str]) -> dict[str, str]:
    missing = set(spec.labels) - set(labels)
    if missing:
        raise ValueError(f"{spec.name}: missing labels {sorted(missing)}")
    return {k: str(labels[k]) for k in spec.labels}


def inc(name: str, value: float = 1.0, **labels: str) -> None:
    """Increment a counter; a zero increment records nothing (Ray's counters refuse it)."""
    spec = _SPECS[name]
    tags = _labels(spec, labels)
    if value < 0:
        raise ValueError(f"{name}: counters only go up, got {value}")
    if value == 0:
        return
    if _ray is not None:
        _ray[name].inc(value, tags=tags)
    else:
        _prom_metric(spec).labels(**tags).inc(value)


def observe(name: str, value: float, **labels: str) -> None:
    """Record one histogram observation (seconds for latencies)."""
    spec = _SPECS[name]
    tags = _labels(spec, labels)
    if _ray is not None:
        _ray[name].observe(value, tags=tags)
    else:
        _prom_metric(spec).labels(**tags).observe(value)


def set_gauge(name: str, value: float, **labels: str) -> None:
    """Set a gauge."""
    spec = _SPECS[name]
    tags = _labels(spec, labels)
    if _ray is not None:
        _ray[name].set(value, tags=tags)
    else:
        _prom_metric(spec).labels(**tags).set(value)


def render_latest() -> bytes:
    """Text exposition of this process's registry (served at ``/metrics``)."""
    for spec in _SPECS.values():
        _prom_metric(spec)  # so every metric is listed even before its first sample
    return bytes(generate_latest(REGISTRY))


def metric_names() -> Sequence[str]:
    """Every metric this project defines."""
    return tuple(_SPECS)
