"""Knowledge ingestion jobs as the API and the worker share them: the job message, its dead letter and
progress events, the stream names, and queueing a job.

:func:`queue_job` writes the job row and its outbox row in the caller's transaction (uploaded bytes go
in first, as Postgres large objects: :func:`store_upload`), commits, and publishes through the outbox
(at once, or by the relay if Redis is briefly down). The worker (:mod:`pipelines.worker`) runs them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from common import outbox
from common.config import Settings
from common.db import repositories as repo
from common.domain import BrandProfile
from common.logging import get_logger
from common.outbox import OutboxPublisher
from common.streams import STREAM_MAXLEN, stream_key
from pipelines.ingest import IngestRequest, SourceItemIn

log = get_logger(__name__)

JOBS_STREAM = "ingest-jobs"
DEAD_STREAM = "ingest-dead"
GROUP = "ingestion-workers"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KnowledgeIngestJob(_Model):
    """One queued job on ``ingest-jobs``; the row ``ingestion_jobs[job_id]`` holds its state."""

    job_id: uuid.UUID
    tenant_id: uuid.UUID
    brand_id: uuid.UUID
    sources: list[str] = Field(default_factory=list)
    items: list[SourceItemIn] = Field(default_factory=list)
    force: bool = False

    def request(self) -> IngestRequest:
        """The pipeline request this job stands for."""
        return IngestRequest(
            tenant_id=self.tenant_id,
            brand_id=self.brand_id,
            sources=self.sources,
            items=self.items,
            force=self.force,
        )


class DeadLetter(_Model):
    """A job given up on, as stored on ``ingest-dead``."""

    job_id: uuid.UUID | None
    tenant_id: uuid.UUID | None
    brand_id: uuid.UUID | None
    attempts: int
    error: str
    failed_at: datetime
    entry_id: str = ""


class IngestProgress(_Model):
    """A progress event on ``<prefix>:ingest:<job_id>``."""

    job_id: uuid.UUID
    status: str
    done: int = 0
    total: int = 0
    attempt: int = 0
    error: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)


def progress_channel(settings: Settings, job_id: uuid.UUID) -> str:
    """Pub/Sub channel of one job's progress."""
    return settings.redis.key("ingest", str(job_id))


async def enqueue_job(redis: aioredis.Redis, settings: Settings, job: KnowledgeIngestJob) -> str:
    """XADD the job on ``ingest-jobs``; returns the entry id."""
    entry = await redis.xadd(
        stream_key(settings.redis, JOBS_STREAM),
        {"data": job.model_dump_json()},
        maxlen=STREAM_MAXLEN,
        approximate=True,
    )
    return str(entry)


async def list_dead_letters(
    redis: aioredis.Redis, settings: Settings, *, brand_id: uuid.UUID, limit: int = 100
) -> list[DeadLetter]:
    """Newest dead letters of one brand (scans the newest ``limit * 10`` entries)."""
    entries: Any = await redis.xrevrange(stream_key(settings.redis, DEAD_STREAM), count=limit * 10)
    found: list[DeadLetter] = []
    for entry_id, fields in entries:
        letter = DeadLetter.model_validate_json(fields["data"]).model_copy(update={"entry_id": str(entry_id)})
        if letter.brand_id == brand_id:
            found.append(letter)
        if len(found) >= limit:
            break
    return found


async def store_upload(session: AsyncSession, data: bytes) -> int:
    """Store uploaded bytes as a Postgres large object in the caller's transaction; its oid."""
    oid = await session.scalar(text("SELECT lo_from_bytea(0, :data)"), {"data": data})
    return int(oid)


async def queue_job(
    session: AsyncSession,
    publisher: OutboxPublisher,
    brand: BrandProfile,
    *,
    source: str,
    items: list[SourceItemIn],
    sources: list[str],
) -> uuid.UUID:
    """Job row + outbox row in the caller's transaction, commit, then publish (the relay retries)."""
    row = await repo.create_ingestion_job(
        session, tenant_id=brand.tenant_id, brand_id=brand.id, source=source
    )
    job = KnowledgeIngestJob(
        job_id=row.id, tenant_id=brand.tenant_id, brand_id=brand.id, sources=sources, items=items
    )
    entry = await outbox.add(session, stream=JOBS_STREAM, payload=job.model_dump(mode="json"))
    await session.commit()
    await publisher.publish(entry)
    log.info("ingest_job_queued", job_id=str(row.id), brand_id=str(brand.id), source=source)
    return row.id
