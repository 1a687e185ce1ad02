"""Transactional outbox relay: publishes committed, unpublished outbox rows to their streams.

Every stream (``inbound``, ``outbound``) goes through the same table. A batch is read oldest first with
``FOR UPDATE SKIP LOCKED`` (several relays share the work without waiting on each other), each row is
XADDed, and the rows that were published are stamped in the same transaction. A crash after XADD but
before the commit publishes those rows again on the next pass: at-least-once on the stream, and every
consumer is idempotent (the dispatcher through ``deliveries``, ``process_stored`` through the unique
reply index). The orchestrator's own immediate publish can race the relay the same way, harmlessly.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import repositories as repo
from common.errors import StreamUnavailable
from common.logging import get_logger
from common.observability import stage
from common.streams import StreamPublisher

log = get_logger(__name__)


@dataclass(frozen=True)
class RelayPass:
    """What one :meth:`OutboxRelay.run_once` did."""

    published: int
    failed: bool = False


class OutboxRelay:
    """Moves outbox rows to Redis Streams; run :meth:`run` as a background task or call :meth:`run_once`."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        publisher: StreamPublisher,
        batch_size: int = 100,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._publisher = publisher
        self._batch_size = batch_size

    async def run_once(self) -> RelayPass:
        """Publish one batch; rows published before a Redis failure are still marked."""
        async with self._sessionmaker() as session:
            rows = await repo.unpublished_outbox(session, limit=self._batch_size)
            done = []
            failed = False
            for row in rows:
                try:
                    with stage(
                        "relay.publish", stage_label="relay", parent=_trace_of(row.payload), stream=row.stream
                    ):
                        await self._publisher.publish(row.stream, row.payload)
                except StreamUnavailable as exc:
                    log.warning(
                        "relay_publish_failed", outbox_id=str(row.id), stream=row.stream, error=str(exc)
                    )
                    failed = True
                    break  # keep stream order: later rows wait for the next pass
                done.append(row.id)
            await repo.mark_outbox_published(session, outbox_ids=done)
            await session.commit()
        if done:
            log.info("relay_published", rows=len(done))
        return RelayPass(published=len(done), failed=failed)

    async def run(self, stop: asyncio.Event, *, interval_s: float = 1.0) -> None:
        """Publish until ``stop`` is set; drains full batches back to back, then waits ``interval_s``."""
        while not stop.is_set():
            try:
                result = await self.run_once()
            except SQLAlchemyError as exc:
                log.warning("relay_database_error", error=type(exc).__name__)
                result = RelayPass(published=0, failed=True)
            if result.published >= self._batch_size and not result.failed:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)


def _trace_of(payload: Any) -> dict[str, str] | None:
    """The trace carrier a stream payload holds (``OutboundPayload.trace`` / ``InboundQueued.trace``)."""
    trace = payload.get("trace") if isinstance(payload, dict) else None
    if not isinstance(trace, dict):
        return None
    return {str(k): str(v) for k, v in trace.items()}
