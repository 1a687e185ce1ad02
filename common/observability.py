"""Instrumentation at the pipeline's stages: a span and a latency sample in one ``with``, plus stream backlog.

:func:`stage` is what the code paths use: it opens a span (``common.telemetry``) and records the
stage's duration in ``ema_stage_latency_seconds{stage=...}`` (``common.metrics``), errors included.
:func:`message_received` stamps the wall-clock receipt time of a customer message into the W3C
``baggage`` of the current context, so it travels with the trace carrier across deployment handles and
Redis streams; the dispatcher reads it back (:func:`received_at`) to record the end-to-end latency.
:func:`report_stream_backlog` turns ``XINFO GROUPS`` into the pending/lag gauges; workers call it every
:data:`BACKLOG_INTERVAL_S` from their loops.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from redis.exceptions import RedisError

from common import metrics, telemetry
from common.logging import get_logger

log = get_logger(__name__)

RECEIVED_AT = "ema.received_at"
BACKLOG_INTERVAL_S = 15.0


@contextmanager
def stage(
    name: str, *, stage_label: str | None = None, parent: Mapping[str, str] | None = None, **attributes: Any
) -> Iterator[trace.Span]:
    """A span called ``name`` whose duration is also observed as ``stage=stage_label`` (default: the part
    of ``name`` after the last dot, e.g. ``knowledge.embed`` → ``embed``)."""
    label = stage_label or name.rsplit(".", 1)[-1]
    started = time.perf_counter()
    try:
        with continued(parent), telemetry.span(name, **attributes) as current:
            yield current
    finally:
        metrics.observe("ema_stage_latency_seconds", time.perf_counter() - started, stage=label)


@contextmanager
def continued(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Make the trace (and baggage) in ``carrier`` current; no change when there is no carrier.

    ``telemetry.span(parent=...)`` parents the span but leaves the carrier's baggage behind; attaching
    the extracted context keeps both for everything that runs inside.
    """
    if not carrier:
        yield
        return
    token = otel_context.attach(telemetry.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


@contextmanager
def message_received() -> Iterator[None]:
    """Stamp "now" as the receipt time of the message handled in this context (once: an outer stamp wins)."""
    if baggage.get_baggage(RECEIVED_AT) is not None:
        yield
        return
    token = otel_context.attach(baggage.set_baggage(RECEIVED_AT, f"{time.time():.6f}"))
    try:
        yield
    finally:
        otel_context.detach(token)


def received_at(carrier: Mapping[str, str] | None) -> float | None:
    """The receipt time stamped by :func:`message_received`, read from a carrier; None when absent."""
    value = baggage.get_baggage(RECEIVED_AT, context=telemetry.extract(carrier)) if carrier else None
    try:
        return float(str(value)) if value is not None else None
    except ValueError:
        return None


def carrier() -> dict[str, str] | None:
    """The current trace carrier for a stream payload, or None when there is nothing to carry."""
    return telemetry.inject() or None


async def report_stream_backlog(redis: aioredis.Redis, *, key: str, stream: str, group: str) -> None:
    """Set ``ema_stream_pending_entries`` / ``ema_stream_lag_entries`` for ``group`` on stream ``key``.

    ``stream`` is the logical name used as the label (``inbound``, ``outbound``). Best effort: a Redis
    error is logged and the gauges keep their last value.
    """
    try:
        groups: Any = await redis.xinfo_groups(key)
    except RedisError as exc:
        log.warning("stream_backlog_unavailable", stream=stream, error=type(exc).__name__)
        return
    for info in groups:
        name = info.get("name")
        if (name.decode() if isinstance(name, bytes) else name) != group:
            continue
        metrics.set_gauge(
            "ema_stream_pending_entries", float(info.get("pending") or 0), stream=stream, group=group
        )
        lag = info.get("lag")  # Redis >= 7; None when Redis cannot tell (entries deleted mid-range)
        if lag is not None:
            metrics.set_gauge("ema_stream_lag_entries", float(lag), stream=stream, group=group)


class BacklogReporter:
    """Calls :func:`report_stream_backlog` at most every ``interval_s`` (from a worker's loop)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        key: str,
        stream: str,
        group: str,
        interval_s: float = BACKLOG_INTERVAL_S,
    ) -> None:
        self._redis = redis
        self._key, self._stream, self._group = key, stream, group
        self._interval_s = interval_s
        self._last = float("-inf")

    async def maybe_report(self) -> bool:
        """Report when the interval has passed; True when it did."""
        now = time.monotonic()
        if now - self._last < self._interval_s:
            return False
        self._last = now
        await report_stream_backlog(self._redis, key=self._key, stream=self._stream, group=self._group)
        return True
