"""Knowledge upload and ingestion-job API, mounted on the gateway (``build_knowledge_router``).

* ``POST /v1/brands/{brand_id}/knowledge/uploads``: multipart files (Markdown, text, HTML, PDF, FAQ CSV,
  DOCX; each up to ``ingestion.max_upload_bytes`` → else 413; other types → 415), or JSON
  ``{"urls": ["s3://bucket/prefix", ...]}``. Answers ``202 {job_id}`` at once; the ingestion worker does
  the rest.
* ``GET /v1/brands/{brand_id}/knowledge/jobs/{job_id}``: status, attempts, counts, error.
* ``GET /v1/brands/{brand_id}/knowledge/dead-letters``: jobs given up on, newest first.
* ``GET /v1/brands/{brand_id}/knowledge/sources``: the brand's documents with their chunk counts, and its
  latest ingestion job; ``DELETE .../sources/{source_id}``: remove one document, its vectors and chunks.

Uploaded bytes are stored as **Postgres large objects** (``lo_from_bytea``) in the same transaction as
the job row and the job's outbox row: durable before the 202, readable by a worker on any node, no extra
storage service. The worker unlinks them when the job succeeds. The job message goes through the
transactional outbox: published at once, or by the outbox relay if Redis is briefly down. Only
``s3://`` URLs are accepted by the API; local paths are a CLI-only source (they would expose the
server's filesystem).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from common.access.management import Management
from common.access.principal import Principal, Scope
from common.db import repositories as repo
from common.domain import BrandProfile
from common.errors import InvalidInput, NotFound, PayloadTooLarge, UnsupportedMediaType
from common.knowledge import parsing
from common.logging import get_logger
from common.outbox import OutboxPublisher
from common.streams import StreamPublisher
from pipelines.ingest import SourceItemIn
from pipelines.jobs import DeadLetter, list_dead_letters, queue_job, store_upload
from pipelines.sources import UPLOAD_SCHEME, blob_location, split_s3_url
from serve_apps.gateway.auth import requires
from serve_apps.gateway.backend import GatewayBackend

log = get_logger(__name__)

MAX_FILES = 50


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UrlsIn(_Model):
    """JSON body of an upload by reference."""

    urls: list[str] = Field(min_length=1, max_length=100)


class JobAccepted(_Model):
    """``202`` answer: the queued job."""

    job_id: uuid.UUID
    status: str = "queued"


class JobOut(_Model):
    """An ingestion job as the API shows it."""

    job_id: uuid.UUID
    brand_id: uuid.UUID
    status: str
    source: str
    attempts: int
    counts: dict[str, Any]
    error: str | None
    created_at: datetime
    updated_at: datetime


class SourceOut(_Model):
    """One document of the brand's knowledge."""

    id: uuid.UUID
    uri: str
    title: str
    content_type: str
    chunks: int
    updated_at: datetime


class SourcesOut(_Model):
    """``GET .../sources``: the documents, and the brand's latest ingestion job (None before any)."""

    sources: list[SourceOut]
    last_job: JobOut | None


class SourceDeletedOut(_Model):
    """``DELETE .../sources/{id}``: what was removed."""

    id: uuid.UUID
    uri: str
    chunks_deleted: int


class DeadLettersOut(_Model):
    """``GET .../dead-letters``."""

    dead_letters: list[DeadLetter]


def build_knowledge_router(backend: GatewayBackend) -> APIRouter:
    """Routes for uploads, job status and dead letters of one brand's knowledge."""
    router = APIRouter(prefix="/v1/brands/{brand_id}/knowledge", tags=["knowledge"])

    @router.post("/uploads", status_code=202, response_model=JobAccepted)
    async def upload(
        brand_id: uuid.UUID, request: Request, caller: Principal = requires(Scope.KNOWLEDGE_WRITE)
    ) -> JobAccepted:
        brand = await _brand(backend, caller, brand_id)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media == "multipart/form-data":
            files = await _files(request, max_bytes=backend.settings.ingestion.max_upload_bytes)
            return await _accept_files(backend, brand, files)
        if media == "application/json":
            return await _accept_urls(backend, brand, await _urls(request))
        raise UnsupportedMediaType(
            'send multipart/form-data files or a JSON body {"urls": [...]}', details={"content_type": media}
        )

    @router.get("/jobs/{job_id}", response_model=JobOut)
    async def job(
        brand_id: uuid.UUID, job_id: uuid.UUID, caller: Principal = requires(Scope.KNOWLEDGE_READ)
    ) -> JobOut:
        await _brand(backend, caller, brand_id)
        async with backend.sessionmaker() as session:
            row = await repo.get_ingestion_job(session, job_id=job_id, brand_id=brand_id)
        if row is None:
            raise NotFound("unknown ingestion job", details={"job_id": str(job_id)})
        return _job_out(row)

    @router.get("/sources", response_model=SourcesOut)
    async def sources(brand_id: uuid.UUID, caller: Principal = requires(Scope.KNOWLEDGE_READ)) -> SourcesOut:
        brand = await _brand(backend, caller, brand_id)
        async with backend.sessionmaker() as session:
            rows = await repo.list_knowledge_sources(session, tenant_id=brand.tenant_id, brand_id=brand_id)
            latest = await repo.latest_ingestion_job(session, brand_id=brand_id)
        return SourcesOut(
            sources=[
                SourceOut(
                    id=s.id,
                    uri=s.uri,
                    title=s.title,
                    content_type=s.content_type,
                    chunks=count,
                    updated_at=s.updated_at,
                )
                for s, count in rows
            ],
            last_job=None if latest is None else _job_out(latest),
        )

    @router.delete("/sources/{source_id}", response_model=SourceDeletedOut)
    async def delete_source(
        brand_id: uuid.UUID, source_id: uuid.UUID, caller: Principal = requires(Scope.KNOWLEDGE_WRITE)
    ) -> SourceDeletedOut:
        brand = await _brand(backend, caller, brand_id)
        async with backend.sessionmaker() as session:
            source = await repo.get_knowledge_source(
                session, source_id=source_id, tenant_id=brand.tenant_id, brand_id=brand_id
            )
        if source is None:
            raise NotFound("unknown knowledge source", details={"source_id": str(source_id)})
        deleted = await backend.knowledge.delete_source(brand.tenant_id, brand_id, source_id)
        out = SourceDeletedOut(id=source_id, uri=source.uri, chunks_deleted=deleted)
        await Management(backend.sessionmaker).record(
            caller,
            action="knowledge.source_delete",
            target_type="knowledge_source",
            target_id=source_id,
            after=out,
        )
        return out

    @router.get("/dead-letters", response_model=DeadLettersOut)
    async def dead_letters(
        brand_id: uuid.UUID, caller: Principal = requires(Scope.KNOWLEDGE_READ)
    ) -> DeadLettersOut:
        await _brand(backend, caller, brand_id)
        letters = await list_dead_letters(backend.redis, backend.settings, brand_id=brand_id)
        return DeadLettersOut(dead_letters=letters)

    return router


def _job_out(row: Any) -> JobOut:
    return JobOut(
        job_id=row.id,
        brand_id=row.brand_id,
        status=row.status,
        source=row.source,
        attempts=row.attempts,
        counts=row.counts or {},
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def _brand(backend: GatewayBackend, caller: Principal, brand_id: uuid.UUID) -> BrandProfile:
    async with backend.sessionmaker() as session:
        return await repo.require_brand(session, brand_id=brand_id, tenant_id=caller.tenant_id)


async def _urls(request: Request) -> list[str]:
    try:
        body = UrlsIn.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        raise InvalidInput('body must be {"urls": ["s3://..."]}', details={"errors": errors}) from exc
    for url in body.urls:
        split_s3_url(url)  # InvalidInput for anything but s3://bucket/...
    return body.urls


async def _files(request: Request, *, max_bytes: int) -> list[tuple[str, str, bytes]]:
    """(file name, media type, bytes) of every uploaded file, each checked for size and type."""
    form = await request.form(max_files=MAX_FILES)
    uploads = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    if not uploads:
        raise InvalidInput("no files in the multipart body")
    files: list[tuple[str, str, bytes]] = []
    for upload in uploads:
        name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
        if not name:
            raise InvalidInput("every file needs a file name")
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise PayloadTooLarge(
                f"{name} is above {max_bytes} bytes", details={"file": name, "max_bytes": max_bytes}
            )
        media = parsing.detect_content_type(data, uri=name, content_type=upload.content_type)
        if media not in parsing.SUPPORTED_CONTENT_TYPES:
            raise UnsupportedMediaType(
                f"{name}: cannot ingest {media!r}",
                details={
                    "file": name,
                    "content_type": media,
                    "supported": sorted(parsing.SUPPORTED_CONTENT_TYPES),
                },
            )
        files.append((name, media, data))
    return files


async def _accept_files(
    backend: GatewayBackend, brand: BrandProfile, files: list[tuple[str, str, bytes]]
) -> JobAccepted:
    async with backend.sessionmaker() as session:
        items = [
            SourceItemIn(
                uri=f"{UPLOAD_SCHEME}{name}",
                location=blob_location(await store_upload(session, data)),
                content_type=media,
            )
            for name, media, data in files
        ]
        source = "upload: " + ", ".join(name for name, _, _ in files)
        job_id = await queue_job(session, _outbox(backend), brand, source=source, items=items, sources=[])
    return JobAccepted(job_id=job_id)


async def _accept_urls(backend: GatewayBackend, brand: BrandProfile, urls: list[str]) -> JobAccepted:
    async with backend.sessionmaker() as session:
        job_id = await queue_job(
            session, _outbox(backend), brand, source=", ".join(urls), items=[], sources=urls
        )
    return JobAccepted(job_id=job_id)


def _outbox(backend: GatewayBackend) -> OutboxPublisher:
    return OutboxPublisher(backend.sessionmaker, StreamPublisher(backend.redis, backend.settings.redis))
