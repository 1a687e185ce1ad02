"""The ingestion worker: runs queued knowledge ingestion jobs from the ``ingest-jobs`` Redis stream.

Lifecycle of one job (row ``ingestion_jobs``)::

    queued ──► running ──► succeeded
                 │  ▲
                 │  └── transient failure (DependencyError): back to queued, retried after a backoff
                 └────► failed  (permanent error, or ``ingestion.max_attempts`` used up) ──► ingest-dead

* Consumer group ``ingestion-workers`` on ``<prefix>:stream:ingest-jobs``; an entry is acknowledged only
  when its job reached a final state, so a worker that dies mid-job leaves it pending and another
  worker takes it over with XAUTOCLAIM once it has been idle ``ingestion.claim_idle_ms``.
* Attempts are counted in the job row *before* each run, so a job that kills its worker every time
  (a poison job) still reaches ``max_attempts`` and goes to the dead letters instead of looping.
* Dead letters are entries on ``<prefix>:stream:ingest-dead`` (:class:`pipelines.jobs.DeadLetter`), listed
  by the API.
* Progress is published on Pub/Sub channel ``<prefix>:ingest:<job_id>``
  (:class:`pipelines.jobs.IngestProgress`).
* Running a job twice (redelivery, reclaim after a crash) writes the same index: chunk ids are
  deterministic and unchanged chunks are not rewritten; a job already ``succeeded`` is only acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common import metrics
from common.config import Settings
from common.db import repositories as repo
from common.errors import AssistantError
from common.logging import get_logger
from common.observability import stage
from common.retry import RetryPolicy, default_is_retryable
from common.streams import StreamConsumer
from pipelines.ingest import IngestRequest, IngestSummary, ProgressFn
from pipelines.jobs import (
    DEAD_STREAM,
    GROUP,
    JOBS_STREAM,
    DeadLetter,
    IngestProgress,
    KnowledgeIngestJob,
    progress_channel,
)
from pipelines.sources import BLOB_PREFIX, blob_oid

log = get_logger(__name__)


RunFn = Callable[[IngestRequest, ProgressFn], IngestSummary]


class IngestionWorker:
    """Consumes ``ingest-jobs`` with one consumer name; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        settings: Settings,
        redis: aioredis.Redis,
        sessionmaker: async_sessionmaker[AsyncSession],
        run: RunFn,
        consumer: str | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._cfg = settings.ingestion
        self._redis = redis
        self._sessionmaker = sessionmaker
        self._run = run
        self._consumer = StreamConsumer(
            redis,
            settings.redis,
            stream=JOBS_STREAM,
            dead_stream=DEAD_STREAM,
            group=GROUP,
            consumer=consumer or f"worker-{uuid.uuid4().hex[:8]}",
        )
        self._sleep = sleep
        self._policy = RetryPolicy(
            attempts=self._cfg.max_attempts,
            base_delay_s=self._cfg.backoff_base_s,
            max_delay_s=self._cfg.backoff_max_s,
        )

    async def ensure_group(self) -> None:
        """Create the consumer group (and stream) if missing."""
        await self._consumer.ensure_group()

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Process jobs until ``stop`` is set; Redis outages are logged and waited out."""
        await self.ensure_group()
        while not stop.is_set():
            try:
                await self.run_once()
            except (AssistantError, OSError, ConnectionError) as exc:
                log.warning("ingestion_worker_loop_failed", error=str(exc))
                await self._sleep(self._cfg.backoff_base_s)

    async def run_once(self) -> int:
        """Take over stale jobs, else read one new job; process what was taken. Returns how many."""
        entries = await self._consumer.claim_stale(min_idle_ms=self._cfg.claim_idle_ms, count=1)
        if not entries:
            entries = await self._consumer.read_new(count=1, block_ms=self._cfg.block_ms)
        for entry in entries:
            await self.process(entry.id, entry.fields)
        return len(entries)

    async def process(self, entry_id: str, fields: dict[str, str]) -> None:
        """Run one entry's job to a final state, then acknowledge it."""
        try:
            job = KnowledgeIngestJob.model_validate_json(fields.get("data", ""))
        except ValidationError as exc:
            await self._dead_letter(
                entry_id, None, attempts=0, error=f"undecodable job: {exc.error_count()} errors"
            )
            return
        while True:
            async with self._sessionmaker() as session:
                row = await repo.get_ingestion_job(session, job_id=job.job_id, brand_id=job.brand_id)
                if row is None:
                    await self._dead_letter(entry_id, job, attempts=0, error="no such ingestion job")
                    return
                if row.status in ("succeeded", "failed"):
                    await self._ack(entry_id)  # redelivered after it finished: nothing to redo
                    return
                if row.attempts >= self._cfg.max_attempts:
                    await self._fail(
                        entry_id, job, attempts=row.attempts, error=row.error or "attempts used up"
                    )
                    return
                row = await repo.update_ingestion_job(
                    session, job_id=job.job_id, status="running", increment_attempts=True
                )
                assert row is not None
                attempt = row.attempts
                await session.commit()
            await self._publish(IngestProgress(job_id=job.job_id, status="running", attempt=attempt))
            if await self._attempt(entry_id, job, attempt):
                return

    async def _attempt(self, entry_id: str, job: KnowledgeIngestJob, attempt: int) -> bool:
        """One run; True when the job reached a final state."""
        loop = asyncio.get_running_loop()

        def progress(done: int, total: int) -> None:
            event = IngestProgress(
                job_id=job.job_id, status="running", done=done, total=total, attempt=attempt
            )
            asyncio.run_coroutine_threadsafe(self._publish(event), loop)

        try:
            with stage("ingestion.run", stage_label="ingestion", job_id=job.job_id, attempt=attempt):
                summary = await asyncio.to_thread(self._run, job.request(), progress)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if not default_is_retryable(exc) or attempt >= self._cfg.max_attempts:
                log.warning("ingestion_job_failed", job_id=str(job.job_id), attempt=attempt, error=error)
                await self._fail(entry_id, job, attempts=attempt, error=error)
                return True
            await self._set(job.job_id, status="queued", error=error)
            await self._publish(
                IngestProgress(job_id=job.job_id, status="queued", attempt=attempt, error=error)
            )
            await self._sleep(self._policy.delay(attempt))
            return False
        _count_summary(summary)
        counts = summary.model_dump(exclude={"quarantined", "seconds"})
        counts_out = {**counts, "quarantined": [q.model_dump() for q in summary.quarantined]}
        await self._set(job.job_id, status="succeeded", counts={**counts_out, "seconds": summary.seconds})
        await self._release_blobs(job)
        await self._publish(
            IngestProgress(job_id=job.job_id, status="succeeded", attempt=attempt, counts=counts)
        )
        await self._ack(entry_id)
        log.info("ingestion_job_succeeded", job_id=str(job.job_id), **counts)
        return True

    async def _fail(self, entry_id: str, job: KnowledgeIngestJob, *, attempts: int, error: str) -> None:
        metrics.inc("ema_ingestion_jobs_total", outcome="failed")
        await self._set(job.job_id, status="failed", error=error)
        await self._publish(IngestProgress(job_id=job.job_id, status="failed", attempt=attempts, error=error))
        await self._dead_letter(entry_id, job, attempts=attempts, error=error)

    async def _dead_letter(
        self, entry_id: str, job: KnowledgeIngestJob | None, *, attempts: int, error: str
    ) -> None:
        letter = DeadLetter(
            job_id=job.job_id if job else None,
            tenant_id=job.tenant_id if job else None,
            brand_id=job.brand_id if job else None,
            attempts=attempts,
            error=error,
            failed_at=datetime.now(UTC),
            entry_id=entry_id,
        )
        # The letter and the ack in one MULTI: never a lost job, never a job left pending after it.
        await self._consumer.dead_letter(entry_id, {"data": letter.model_dump_json()})

    async def _ack(self, entry_id: str) -> None:
        await self._consumer.ack(entry_id)

    async def _set(
        self,
        job_id: uuid.UUID,
        *,
        status: str,
        error: str | None = None,
        counts: dict[str, Any] | None = None,
    ) -> None:
        async with self._sessionmaker() as session:
            await repo.update_ingestion_job(session, job_id=job_id, status=status, error=error, counts=counts)
            await session.commit()

    async def _release_blobs(self, job: KnowledgeIngestJob) -> None:
        oids = [blob_oid(i.location) for i in job.items if i.location.startswith(BLOB_PREFIX)]
        if not oids:
            return
        async with self._sessionmaker() as session:
            for oid in oids:
                await session.execute(
                    text("SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = :oid"), {"oid": oid}
                )
            await session.commit()

    async def _publish(self, event: IngestProgress) -> None:
        channel = progress_channel(self._settings, event.job_id)
        await self._redis.publish(channel, json.dumps(event.model_dump(mode="json")))


def _count_summary(summary: IngestSummary) -> None:
    """Documents by outcome and chunks by operation of one finished run."""
    metrics.inc("ema_ingestion_jobs_total", outcome="succeeded")
    metrics.inc("ema_ingestion_documents_total", float(summary.documents_indexed), outcome="indexed")
    metrics.inc("ema_ingestion_documents_total", float(summary.documents_quarantined), outcome="quarantined")
    for operation in ("written", "unchanged", "deleted"):
        metrics.inc(
            "ema_ingestion_chunks_total", float(getattr(summary, f"chunks_{operation}")), operation=operation
        )
