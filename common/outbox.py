"""The transactional outbox: a stream entry is written as a row in the same transaction as the state it
announces, published right after commit, and published by the relay if that publish did not happen.

* :func:`add` writes the row (in the caller's transaction) and :meth:`OutboxPublisher.publish` does the
  best-effort publish after commit: XADD, then mark the row published; a failed XADD leaves the row
  for the relay. Every writer of an outbox row (intake, replies, agent events, ingestion jobs) uses
  these two, so "add, publish, mark published" is written once.
* :class:`OutboxRelay` publishes committed, unpublished rows.

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
import uuid
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
class OutboxEntry:
    """A written outbox row: what to publish, and the row to mark once it is published."""

    id: uuid.UUID
    stream: str
    payload: dict[str, Any]


async def add(session: AsyncSession, *, stream: str, payload: dict[str, Any]) -> OutboxEntry:
    """Write an outbox row in the caller's transaction (the caller commits, then publishes it)."""
    row = await repo.add_outbox(session, stream=stream, payload=payload)
    return OutboxEntry(row.id, stream, payload)


class OutboxPublisher:
    """Publishes committed outbox entries at once; what fails is left to the relay."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], publisher: StreamPublisher | None
    ) -> None:
        """``publisher=None``: nothing is published here (the relay does it all)."""
        self._sessionmaker = sessionmaker
        self._publisher = publisher

    async def publish(self, *entries: OutboxEntry) -> None:
        """XADD each entry in order and mark it published; a failure is logged and left to the relay."""
        for entry in entries:
            await self._publish_one(entry)

    async def _publish_one(self, entry: OutboxEntry) -> None:
        if self._publisher is None:
            return
        try:
            with stage("stream.publish", stage_label="publish", stream=entry.stream):
                await self._publisher.publish(entry.stream, entry.payload)
        except StreamUnavailable as exc:
            log.warning(
                "outbox_publish_deferred", outbox_id=str(entry.id), stream=entry.stream, error=str(exc)
            )
            return
        async with self._sessionmaker() as session:
            await repo.mark_outbox_published(session, outbox_ids=[entry.id])
            await session.commit()


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
