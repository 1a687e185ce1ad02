"""Bulk ingestion end to end: real Postgres, embedded Qdrant (Edge), the real embedding model, and a real
S3-compatible server (moto's standalone ``ThreadedMotoServer`` over HTTP, not a mocked client).

Runs the ``local`` engine (same stage classes as Ray Data, in this process); the Ray Data engine is
exercised by ``test_ray_job_submit.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from common.config import S3Settings, ServiceEndpoints, Settings
from common.db import repositories as repo
from common.db.models import KnowledgeChunk
from common.db.session import make_engine, make_sessionmaker
from common.domain import Persona
from common.knowledge.vectorstore import VectorStore
from common.media_store import s3_client
from pipelines import stages
from pipelines.ingest import Engine, IngestRequest, run_ingest

pytestmark = pytest.mark.integration

SHIPPING = """# Shipping

## Domestic
Orders ship within two business days. Tracking numbers arrive by email.

## International
We ship to 40 countries. Duties are paid by the customer on delivery.
"""
RETURNS = """# Returns

You have 30 days to return an unworn item for a full refund.
"""
FAQ_CSV = (
    "question,answer\nDo you ship on weekends?,No - only on business days.\nCan I pick up in store?,Yes.\n"
)


def make_brand(database_url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """A fresh tenant and brand (real rows, committed)."""
    tenant_id, brand_id = uuid.uuid4(), uuid.uuid4()

    async def seed() -> None:
        engine = make_engine(database_url, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session:
                await repo.upsert_tenant(session, tenant_id=tenant_id, slug=f"t{tenant_id.hex[:8]}", name="T")
                await repo.upsert_brand(
                    session,
                    brand_id=brand_id,
                    tenant_id=tenant_id,
                    slug=f"b{brand_id.hex[:8]}",
                    name="B",
                    persona=Persona(),
                )
                await session.commit()
        finally:
            await engine.dispose()

    asyncio.run(seed())
    return tenant_id, brand_id


def ingest_settings(
    database_url: str, redis_url: str, prefix: str, qdrant: Path, s3: S3Settings | None = None
) -> Settings:
    endpoints = ServiceEndpoints(
        database_url=database_url, redis_url=redis_url, redis_key_prefix=prefix, qdrant_path=qdrant
    )
    settings = endpoints.apply(Settings())
    return settings.model_copy(update={"s3": s3 or S3Settings()})


def stored_ids(settings: Settings, tenant_id: uuid.UUID, brand_id: uuid.UUID, source: str) -> set[str]:
    store = VectorStore(settings)
    try:
        return store.source_chunk_ids(tenant_id=tenant_id, brand_id=brand_id, source=source)
    finally:
        store.close()


def pg_chunk_count(database_url: str, brand_id: uuid.UUID) -> int:
    async def count() -> int:
        engine = make_engine(database_url, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session:
                stmt = (
                    select(func.count())
                    .select_from(KnowledgeChunk)
                    .where(KnowledgeChunk.brand_id == brand_id)
                )
                return int((await session.scalar(stmt)) or 0)
        finally:
            await engine.dispose()

    return asyncio.run(count())


@pytest.fixture(scope="module")
def s3_server(s3: S3Settings) -> S3Settings:
    """The S3-compatible test server (``tests/conftest.py``), with a bucket ``kb-test``."""
    s3_client(s3).create_bucket(Bucket="kb-test")
    return s3


def _put(s3: S3Settings, key: str, body: bytes) -> None:
    s3_client(s3).put_object(Bucket="kb-test", Key=key, Body=body)


def test_s3_prefix_indexes_good_documents_and_quarantines_bad_ones(
    s3_server: S3Settings, database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    prefix = f"brand-{uuid.uuid4().hex[:6]}/"
    _put(s3_server, prefix + "shipping.md", SHIPPING.encode())
    _put(s3_server, prefix + "returns.txt", RETURNS.encode())
    _put(s3_server, prefix + "faq.csv", FAQ_CSV.encode())
    _put(s3_server, prefix + "broken.pdf", b"%PDF-1.7\nthis is not really a pdf\n%%EOF")
    _put(s3_server, prefix + "logo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    tenant_id, brand_id = make_brand(database_url)
    settings = ingest_settings(database_url, redis_url, redis_prefix, tmp_path / "q", s3_server)
    progress: list[tuple[int, int]] = []

    summary = run_ingest(
        IngestRequest(tenant_id=tenant_id, brand_id=brand_id, sources=[f"s3://kb-test/{prefix}"]),
        settings=settings,
        engine=Engine.LOCAL,
        progress=lambda done, total: progress.append((done, total)),
    )

    assert summary.documents_in == 5
    assert summary.documents_indexed == 3
    assert summary.documents_quarantined == 2
    assert summary.documents_in == summary.documents_indexed + summary.documents_quarantined
    bad = {q.uri.rsplit("/", 1)[1]: q for q in summary.quarantined}
    assert set(bad) == {"broken.pdf", "logo.png"}
    assert all(q.stage == "parse" and q.reason for q in bad.values())
    assert progress[0] == (0, 5) and progress[-1] == (5, 5)
    # Every chunk written is in Qdrant (scoped to this brand) and recorded in Postgres.
    total = sum(
        len(stored_ids(settings, tenant_id, brand_id, f"s3://kb-test/{prefix}{name}"))
        for name in ("shipping.md", "returns.txt", "faq.csv")
    )
    assert total == summary.chunks_total == summary.chunks_written > 3
    assert pg_chunk_count(database_url, brand_id) == summary.chunks_total
    faq_ids = stored_ids(settings, tenant_id, brand_id, f"s3://kb-test/{prefix}faq.csv")
    assert len(faq_ids) == 2  # one chunk per FAQ entry
    other_tenant, other_brand = make_brand(database_url)
    assert stored_ids(settings, other_tenant, other_brand, f"s3://kb-test/{prefix}shipping.md") == set()


def test_unreadable_s3_object_is_quarantined_at_read(
    s3_server: S3Settings, database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    tenant_id, brand_id = make_brand(database_url)
    settings = ingest_settings(database_url, redis_url, redis_prefix, tmp_path / "q", s3_server)
    _put(s3_server, "ok/a.md", b"# A\n\nAlpha text here.")
    request = IngestRequest(
        tenant_id=tenant_id,
        brand_id=brand_id,
        sources=["s3://kb-test/ok/"],
        items=[{"uri": "s3://kb-test/missing.md", "location": "s3://kb-test/missing.md"}],  # type: ignore[list-item]
    )
    summary = run_ingest(request, settings=settings, engine=Engine.LOCAL)
    assert (summary.documents_indexed, summary.documents_quarantined) == (1, 1)
    assert summary.documents_read == 1
    assert summary.quarantined[0].stage == "read" and "NoSuchKey" in summary.quarantined[0].reason


class _CountingWriter(stages.DirectPointWriter):
    writes: list[str] = []
    deletes: list[str] = []

    def write(self, records: Any, vectors: Any) -> None:
        type(self).writes.extend(r.source for r in records)
        super().write(records, vectors)

    def delete(self, *, tenant_id: Any, brand_id: Any, chunk_ids: Any) -> None:
        if chunk_ids:
            type(self).deletes.extend(chunk_ids)
        super().delete(tenant_id=tenant_id, brand_id=brand_id, chunk_ids=chunk_ids)


def test_reingestion_updates_changed_deletes_removed_and_leaves_unchanged_alone(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stages, "DirectPointWriter", _CountingWriter)
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "shipping.md").write_text(SHIPPING)
    (kb / "returns.md").write_text(RETURNS)
    tenant_id, brand_id = make_brand(database_url)
    settings = ingest_settings(database_url, redis_url, redis_prefix, tmp_path / "q")
    request = IngestRequest(tenant_id=tenant_id, brand_id=brand_id, sources=[str(kb / "*.md")])
    shipping, returns = str((kb / "shipping.md").resolve()), str((kb / "returns.md").resolve())

    first = run_ingest(request, settings=settings)
    before_shipping = stored_ids(settings, tenant_id, brand_id, shipping)
    before_returns = stored_ids(settings, tenant_id, brand_id, returns)
    assert first.chunks_written == len(before_shipping) + len(before_returns) >= 3

    # Change one section, remove another; returns.md is untouched.
    (kb / "shipping.md").write_text(
        "# Shipping\n\n## Domestic\nOrders ship within ONE business day. Tracking numbers arrive by email.\n"
    )
    _CountingWriter.writes.clear()
    _CountingWriter.deletes.clear()
    second = run_ingest(request, settings=settings)
    after_shipping = stored_ids(settings, tenant_id, brand_id, shipping)
    assert second.chunks_written == 1 and second.chunks_deleted == 2
    assert len(after_shipping) == 1 and not (after_shipping & before_shipping)
    assert sorted(_CountingWriter.deletes) == sorted(before_shipping)
    assert set(_CountingWriter.writes) == {shipping}  # nothing written for the unchanged file
    assert stored_ids(settings, tenant_id, brand_id, returns) == before_returns

    _CountingWriter.writes.clear()
    _CountingWriter.deletes.clear()
    third = run_ingest(request, settings=settings)
    assert (third.chunks_written, third.chunks_deleted) == (0, 0)
    assert third.chunks_unchanged == third.chunks_total == len(after_shipping) + len(before_returns)
    assert _CountingWriter.writes == [] and _CountingWriter.deletes == []
    assert pg_chunk_count(database_url, brand_id) == third.chunks_total


def test_unknown_brand_is_refused_before_any_work(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    from common.errors import NotFound

    tenant_id, _ = make_brand(database_url)
    settings = ingest_settings(database_url, redis_url, redis_prefix, tmp_path / "q")
    with pytest.raises(NotFound):
        run_ingest(
            IngestRequest(tenant_id=tenant_id, brand_id=uuid.uuid4(), sources=[str(tmp_path)]),
            settings=settings,
        )
