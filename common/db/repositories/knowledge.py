"""Knowledge sources and chunks, and ingestion jobs.

Part of :mod:`common.db.repositories` (the caller owns the transaction; see there)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from common.db.models import IngestionJob, KnowledgeChunk, KnowledgeSource
from common.db.repositories._shared import POPULATE_EXISTING
from common.schemas import ChunkRecord


async def upsert_knowledge_source(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    uri: str,
    title: str,
    content_type: str,
    content_hash: str,
) -> KnowledgeSource:
    """Create or update the source ``uri`` of a brand."""
    values = {"title": title, "content_type": content_type, "content_hash": content_hash}
    stmt = pg_insert(KnowledgeSource).values(
        id=uuid.uuid4(), tenant_id=tenant_id, brand_id=brand_id, uri=uri, **values
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[KnowledgeSource.brand_id, KnowledgeSource.uri],
        set_={**values, "updated_at": func.now()},
    )
    return (await session.scalars(stmt.returning(KnowledgeSource), execution_options=POPULATE_EXISTING)).one()


async def sync_source_chunks(
    session: AsyncSession, *, source: KnowledgeSource, chunks: list[ChunkRecord]
) -> tuple[list[str], list[str], list[str]]:
    """Make the stored chunks of ``source`` equal ``chunks``, comparing by chunk id.

    Returns ``(new_ids, unchanged_ids, deleted_ids)``: the first two in ``chunks`` order, the last sorted.
    Chunk ids are content-derived, so an unchanged id means unchanged text; only its position is refreshed.
    """
    existing_stmt = select(KnowledgeChunk.id).where(KnowledgeChunk.source_id == source.id)
    existing = set(await session.scalars(existing_stmt))
    wanted = {chunk.chunk_id: chunk for chunk in chunks}  # a repeated id is kept once

    new_ids = [cid for cid in wanted if cid not in existing]
    unchanged_ids = [cid for cid in wanted if cid in existing]
    deleted_ids = sorted(existing - wanted.keys())

    if deleted_ids:
        await session.execute(delete(KnowledgeChunk).where(KnowledgeChunk.id.in_(deleted_ids)))
    if wanted:
        rows = [_chunk_values(source, chunk) for chunk in wanted.values()]
        stmt = pg_insert(KnowledgeChunk).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=[KnowledgeChunk.id],
            set_={
                "source_id": stmt.excluded.source_id,
                "ordinal": stmt.excluded.ordinal,
                "heading_path": stmt.excluded.heading_path,
                "text": stmt.excluded.text,
                "content_hash": stmt.excluded.content_hash,
            },
        )
        await session.execute(stmt)
    return new_ids, unchanged_ids, deleted_ids


def _chunk_values(source: KnowledgeSource, chunk: ChunkRecord) -> dict[str, Any]:
    return {
        "id": chunk.chunk_id,
        "source_id": source.id,
        "tenant_id": source.tenant_id,
        "brand_id": source.brand_id,
        "ordinal": chunk.ordinal,
        "heading_path": chunk.heading_path,
        "text": chunk.text,
        "content_hash": chunk.content_hash,
    }


async def list_chunks(
    session: AsyncSession, *, tenant_id: uuid.UUID, brand_id: uuid.UUID
) -> list[KnowledgeChunk]:
    """Every stored chunk of a brand, grouped by source in reading order."""
    stmt = (
        select(KnowledgeChunk)
        .where(KnowledgeChunk.tenant_id == tenant_id, KnowledgeChunk.brand_id == brand_id)
        .order_by(KnowledgeChunk.source_id, KnowledgeChunk.ordinal)
    )
    return list(await session.scalars(stmt))


async def create_ingestion_job(
    session: AsyncSession, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, source: str
) -> IngestionJob:
    """A new job in status ``queued``."""
    job = IngestionJob(tenant_id=tenant_id, brand_id=brand_id, source=source, status="queued", counts={})
    session.add(job)
    await session.flush()
    return job


async def update_ingestion_job(
    session: AsyncSession,
    *,
    job_id: uuid.UUID,
    status: str | None = None,
    counts: dict[str, Any] | None = None,
    error: str | None = None,
    increment_attempts: bool = False,
) -> IngestionJob | None:
    """Change the given fields of a job (None leaves a field alone); None when the job does not exist."""
    job = await session.get(IngestionJob, job_id)
    if job is None:
        return None
    if status is not None:
        job.status = status
    if counts is not None:
        job.counts = counts
    if error is not None:
        job.error = error
    if increment_attempts:
        job.attempts += 1
    await session.flush()
    return job


async def get_ingestion_job(
    session: AsyncSession, *, job_id: uuid.UUID, brand_id: uuid.UUID | None = None
) -> IngestionJob | None:
    """The job, or None; pass ``brand_id`` to refuse another brand's job."""
    stmt = select(IngestionJob).where(IngestionJob.id == job_id)
    if brand_id is not None:
        stmt = stmt.where(IngestionJob.brand_id == brand_id)
    return (await session.scalars(stmt)).one_or_none()


async def chunk_texts(session: AsyncSession, *, tenant_id: uuid.UUID, brand_id: uuid.UUID) -> list[str]:
    """Heading path and text of every chunk of one brand (its vocabulary, for spelling correction)."""
    stmt = select(KnowledgeChunk.heading_path, KnowledgeChunk.text).where(
        KnowledgeChunk.tenant_id == tenant_id, KnowledgeChunk.brand_id == brand_id
    )
    return [f"{heading} {text}" for heading, text in (await session.execute(stmt)).all()]


async def list_knowledge_sources(
    session: AsyncSession, *, tenant_id: uuid.UUID, brand_id: uuid.UUID
) -> list[tuple[KnowledgeSource, int]]:
    """The brand's sources with their chunk counts, by uri."""
    chunks = func.count(KnowledgeChunk.id)
    stmt = (
        select(KnowledgeSource, chunks)
        .outerjoin(KnowledgeChunk, KnowledgeChunk.source_id == KnowledgeSource.id)
        .where(KnowledgeSource.tenant_id == tenant_id, KnowledgeSource.brand_id == brand_id)
        .group_by(KnowledgeSource.id)
        .order_by(KnowledgeSource.uri)
    )
    return [(source, int(count)) for source, count in (await session.execute(stmt)).tuples()]


async def get_knowledge_source(
    session: AsyncSession, *, source_id: uuid.UUID, tenant_id: uuid.UUID, brand_id: uuid.UUID
) -> KnowledgeSource | None:
    """One source of the brand, or None (another brand's is None too)."""
    stmt = select(KnowledgeSource).where(
        KnowledgeSource.id == source_id,
        KnowledgeSource.tenant_id == tenant_id,
        KnowledgeSource.brand_id == brand_id,
    )
    return (await session.scalars(stmt)).one_or_none()


async def delete_knowledge_source(session: AsyncSession, *, source_id: uuid.UUID) -> None:
    """Remove a source row; its chunk rows go with it (ON DELETE CASCADE)."""
    await session.execute(delete(KnowledgeSource).where(KnowledgeSource.id == source_id))


async def latest_ingestion_job(session: AsyncSession, *, brand_id: uuid.UUID) -> IngestionJob | None:
    """The brand's most recently changed ingestion job, or None."""
    stmt = (
        select(IngestionJob).where(IngestionJob.brand_id == brand_id).order_by(IngestionJob.updated_at.desc())
    )
    return (await session.scalars(stmt.limit(1))).first()


async def count_source_chunks(session: AsyncSession, *, source_id: uuid.UUID) -> int:
    """How many chunks a source has."""
    stmt = select(func.count()).select_from(KnowledgeChunk).where(KnowledgeChunk.source_id == source_id)
    return int(await session.scalar(stmt) or 0)
