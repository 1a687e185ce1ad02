"""Ray Data stages of bulk ingestion: callable classes, heavy clients and models opened once in ``__init__``.

Every stage takes and returns a *batch*: a mapping of column name → equal-length sequence (Ray Data's
``numpy`` batch format, or plain lists when :func:`pipelines.ingest.run_ingest` runs the same stages in
one process). One row is one document, so the per-document diff (new chunks vs. stored chunks) stays
in one place. Columns, added stage by stage::

    uri, location, content_type                  input (SourceItem)
    data                                         ReadSources
    title, text, faq (JSON), content_type        ParseDocuments
    chunks (JSON), embed_ids (JSON)              ChunkDocuments
    vectors (JSON {chunk_id: vector})            EmbedChunks
    written, unchanged, deleted, chunk_total     UpsertPoints (heavy columns dropped)
    error, stage                                 any stage; a row with an error is passed through untouched

A document that fails for a reason of its own (unreadable, unparsable, empty) gets ``error`` set and is
*quarantined*: later stages skip it and the summary lists it. Failures of the system (database, vector
store, object storage unreachable) raise and fail the whole run, which the worker retries; Ray Data's
``max_errored_blocks`` is never relied on.

Vector writes (:class:`UpsertPoints`) go through a :class:`PointWriter`:

* ``direct``: a :class:`common.vectorstore.VectorStore` opened in the stage's process. With
  ``QDRANT_URL`` set that is any process (an actor pool). In Qdrant *local* mode the directory is locked
  to one process, so the direct writer runs only in the driver, and only when no Serve app owns it;
* ``serve``: the running app's ``knowledge`` deployment, through its handle (local mode while the app
  runs). It calls ``source_chunk_ids``, ``write_chunks`` and ``delete_chunks`` on the deployment.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Engine, select

from common.chunking import chunk_parsed, embedding_text
from common.config import Settings
from common.db import repositories as repo
from common.db.models import KnowledgeChunk, KnowledgeSource
from common.db.session import make_engine, make_sessionmaker, make_sync_engine
from common.errors import EmbeddingError, InvalidInput
from common.parsing import FaqEntry, ParsedDocument
from common.schemas import ChunkRecord
from common.vectorstore import chunk_id
from pipelines.sources import SourceItem, SourceReader

Batch = Mapping[str, Sequence[Any]]
OutBatch = dict[str, list[Any]]


class WriterMode(StrEnum):
    """How :class:`UpsertPoints` reaches the vector store (see the module docstring)."""

    DIRECT = "direct"
    SERVE = "serve"


def rows(batch: Batch) -> list[dict[str, Any]]:
    """Column batch → list of row dicts."""
    names = list(batch)
    size = len(batch[names[0]]) if names else 0
    return [{name: _plain(batch[name][i]) for name in names} for i in range(size)]


def columns(items: list[dict[str, Any]], names: Sequence[str]) -> OutBatch:
    """List of row dicts → column batch with exactly ``names`` (missing values become ``""``)."""
    return {name: [item.get(name, "") for item in items] for name in names}


def _plain(value: Any) -> Any:
    # numpy scalars and bytes arrays from Ray Data's numpy batches → plain Python values
    if hasattr(value, "item") and not isinstance(value, bytes | str):
        return value.item()
    return value


def _quarantine(row: dict[str, Any], *, stage: str, exc: InvalidInput) -> None:
    row["error"] = exc.message
    row["stage"] = stage


INPUT_COLUMNS = ("uri", "location", "content_type", "error", "stage")
READ_COLUMNS = (*INPUT_COLUMNS, "data")
PARSE_COLUMNS = (*INPUT_COLUMNS, "title", "text", "faq")
CHUNK_COLUMNS = (*PARSE_COLUMNS, "chunks", "embed_ids")
EMBED_COLUMNS = (*CHUNK_COLUMNS, "vectors")
RESULT_COLUMNS = (*INPUT_COLUMNS, "written", "unchanged", "deleted", "chunk_total")


def input_batch(items: Sequence[SourceItem]) -> OutBatch:
    """The first batch of a run: one row per item."""
    return columns(
        [{"uri": i.uri, "location": i.location, "content_type": i.content_type or ""} for i in items],
        INPUT_COLUMNS,
    )


class ReadSources:
    """Fetches each document's bytes (local file, S3 object, uploaded blob)."""

    def __init__(self, settings: Settings) -> None:
        engine = make_sync_engine(settings.database.url) if settings.database.url else None
        self._reader = SourceReader(s3=settings.s3, engine=engine)

    def __call__(self, batch: Batch) -> OutBatch:
        """Add ``data``; unreadable documents are quarantined."""
        out = rows(batch)
        for row in out:
            row["data"] = b""
            if row["error"]:
                continue
            item = SourceItem(
                uri=row["uri"], location=row["location"], content_type=row["content_type"] or None
            )
            try:
                row["data"] = self._reader.read(item)
            except InvalidInput as exc:
                _quarantine(row, stage="read", exc=exc)
        return columns(out, READ_COLUMNS)


class ParseDocuments:
    """Turns bytes into text and FAQ entries with :func:`common.parsing.parse_document`."""

    def __init__(self) -> None:
        from common import parsing

        self._parsing = parsing

    def __call__(self, batch: Batch) -> OutBatch:
        """Replace ``data`` by ``title``, ``text``, ``faq`` (JSON pairs); ``content_type`` = text's type."""
        out = rows(batch)
        for row in out:
            data = row.pop("data", b"")
            row["title"], row["text"], row["faq"] = "", "", "[]"
            if row["error"]:
                continue
            try:
                parsed = self._parsing.parse_document(
                    bytes(data), uri=row["uri"], content_type=row["content_type"] or None
                )
            except InvalidInput as exc:  # ParseError, UnsupportedMediaType, PayloadTooLarge
                _quarantine(row, stage="parse", exc=exc)
                continue
            row["title"], row["text"], row["content_type"] = parsed.title, parsed.text, parsed.text_type
            row["faq"] = json.dumps([[q, a] for q, a in parsed.sections])
        return columns(out, PARSE_COLUMNS)


class ChunkDocuments:
    """Chunks each document and decides which chunks need embedding (those Postgres does not hold yet)."""

    def __init__(self, settings: Settings, *, tenant_id: str, brand_id: str, force: bool = False) -> None:
        from common.embeddings import token_counter

        self._count = token_counter(settings.embeddings)
        self._retrieval = settings.retrieval
        self._tenant = uuid.UUID(tenant_id)
        self._brand = uuid.UUID(brand_id)
        self._force = force
        self._engine: Engine = make_sync_engine(settings.database.url or "")

    def __call__(self, batch: Batch) -> OutBatch:
        """Add ``chunks`` (JSON records) and ``embed_ids`` (JSON ids to embed)."""
        out = rows(batch)
        for row in out:
            row["chunks"], row["embed_ids"] = "[]", "[]"
            if row["error"]:
                continue
            records = self._records(row)
            known = set() if self._force else self._known_ids(row["uri"])
            row["chunks"] = json.dumps([r.model_dump(mode="json") for r in records])
            row["embed_ids"] = json.dumps([r.chunk_id for r in records if r.chunk_id not in known])
        return columns(out, CHUNK_COLUMNS)

    def _records(self, row: dict[str, Any]) -> list[ChunkRecord]:
        """Chunks with deterministic ids (as :func:`common.knowledge.build_records`), FAQ entries included."""
        document = ParsedDocument(
            uri=row["uri"],
            content_type=row["content_type"],
            title=row["title"],
            text=row["text"],
            text_type=row["content_type"],
            sections=tuple(FaqEntry(q, a) for q, a in json.loads(row["faq"])),
        )
        chunks = chunk_parsed(
            document,
            count_tokens=self._count,
            chunk_tokens=self._retrieval.chunk_tokens,
            overlap_tokens=self._retrieval.chunk_overlap_tokens,
        )
        records: dict[str, ChunkRecord] = {}
        for chunk in chunks:
            cid = chunk_id(
                tenant_id=self._tenant,
                brand_id=self._brand,
                source=row["uri"],
                heading_path=chunk.heading_path,
                text=chunk.text,
            )
            records.setdefault(
                cid,
                ChunkRecord(
                    chunk_id=cid,
                    tenant_id=self._tenant,
                    brand_id=self._brand,
                    source=row["uri"],
                    heading_path=chunk.heading_path,
                    ordinal=chunk.ordinal,
                    text=chunk.text,
                    content_hash=hashlib.sha256(chunk.text.encode()).hexdigest(),
                ),
            )
        return list(records.values())

    def _known_ids(self, uri: str) -> set[str]:
        stmt = (
            select(KnowledgeChunk.id)
            .join(KnowledgeSource, KnowledgeChunk.source_id == KnowledgeSource.id)
            .where(KnowledgeSource.brand_id == self._brand, KnowledgeSource.uri == uri)
        )
        with self._engine.connect() as conn:
            return set(conn.scalars(stmt))


class EmbedChunks:
    """Embeds the chunks that need it; the model loads once per actor, torch pinned to one thread."""

    def __init__(self, settings: Settings) -> None:
        from common.embeddings import build_embedder

        embeddings = settings.embeddings.model_copy(update={"num_threads": 1})
        self._embedder = build_embedder(embeddings)

    def __call__(self, batch: Batch) -> OutBatch:
        """Add ``vectors``: one model call for the whole batch's new chunks."""
        out = rows(batch)
        wanted: list[tuple[int, ChunkRecord]] = []
        for index, row in enumerate(out):
            row["vectors"] = "{}"
            if row["error"]:
                continue
            ids = set(json.loads(row["embed_ids"]))
            records = [ChunkRecord.model_validate(r) for r in json.loads(row["chunks"])]
            wanted.extend((index, r) for r in records if r.chunk_id in ids)
        texts = [embedding_text(heading_path=r.heading_path, text=r.text) for _, r in wanted]
        vectors = self._embedder.embed(texts)
        if len(vectors) != len(texts):
            raise EmbeddingError(f"embedder returned {len(vectors)} vectors for {len(texts)} chunks")
        per_row: dict[int, dict[str, list[float]]] = {}
        for (index, record), vector in zip(wanted, vectors, strict=True):
            per_row.setdefault(index, {})[record.chunk_id] = vector
        for index, found in per_row.items():
            out[index]["vectors"] = json.dumps(found)
        return columns(out, EMBED_COLUMNS)


class PointWriter(Protocol):
    """What :class:`UpsertPoints` needs from the vector store, wherever it lives."""

    def existing_ids(self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, source: str) -> set[str]:
        """Ids stored for one source of one brand."""
        ...

    def write(self, records: Sequence[ChunkRecord], vectors: Sequence[Sequence[float]]) -> None:
        """Upsert, waiting for the store's acknowledgement."""
        ...

    def delete(self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, chunk_ids: Sequence[str]) -> None:
        """Delete these chunks of this brand."""
        ...

    def close(self) -> None:
        """Release the client."""
        ...


class DirectPointWriter:
    """Writes with a :class:`VectorStore` in this process (Qdrant server, or local mode in the driver)."""

    def __init__(self, settings: Settings) -> None:
        from common.vectorstore import VectorStore

        self._store = VectorStore(settings)
        self._store.ensure_collection(settings.embeddings.model_name, settings.embeddings.dimension)

    def existing_ids(self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, source: str) -> set[str]:
        """Ids stored for the source (scoped by tenant and brand)."""
        return self._store.source_chunk_ids(tenant_id=tenant_id, brand_id=brand_id, source=source)

    def write(self, records: Sequence[ChunkRecord], vectors: Sequence[Sequence[float]]) -> None:
        """Batched upsert with ``wait=True`` (see :meth:`VectorStore.upsert`)."""
        self._store.upsert(records, vectors)

    def delete(self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, chunk_ids: Sequence[str]) -> None:
        """Scoped delete."""
        self._store.delete(tenant_id=tenant_id, brand_id=brand_id, chunk_ids=chunk_ids)

    def close(self) -> None:
        """Release the client and, in local mode, the directory lock."""
        self._store.close()


class ServePointWriter:
    """Writes through the running app's ``knowledge`` deployment (the owner of local-mode Qdrant)."""

    def __init__(self, settings: Settings) -> None:
        from ray import serve

        self._handle = serve.get_deployment_handle("knowledge", app_name=settings.ray.app_name)

    def existing_ids(self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, source: str) -> set[str]:
        """Ids stored for the source, asked of the deployment."""
        ids = self._handle.source_chunk_ids.remote(tenant_id, brand_id, source).result()
        return set(ids)

    def write(self, records: Sequence[ChunkRecord], vectors: Sequence[Sequence[float]]) -> None:
        """Upsert through the deployment (it waits for Qdrant's ack before answering)."""
        self._handle.write_chunks.remote(list(records), [list(v) for v in vectors]).result()

    def delete(self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, chunk_ids: Sequence[str]) -> None:
        """Scoped delete through the deployment."""
        self._handle.delete_chunks.remote(tenant_id, brand_id, list(chunk_ids)).result()

    def close(self) -> None:
        """Handles hold nothing to release."""


def open_writer(settings: Settings, mode: WriterMode) -> PointWriter:
    """The writer for ``mode``."""
    if mode == WriterMode.SERVE:
        return ServePointWriter(settings)
    return DirectPointWriter(settings)


class UpsertPoints:
    """Writes new chunks (batched, acknowledged), deletes vanished ones, records sources in Postgres.

    Order per document: upsert → delete → Postgres commit. A failure in between leaves old and new chunks
    side by side (never a gap); the next run finishes the job because every id is deterministic.
    """

    def __init__(self, settings: Settings, *, tenant_id: str, brand_id: str, mode: str) -> None:
        self._tenant = uuid.UUID(tenant_id)
        self._brand = uuid.UUID(brand_id)
        self._writer = open_writer(settings, WriterMode(mode))
        # The repositories are async; this stage owns one loop and one pool for its whole life.
        self._loop = asyncio.new_event_loop()
        self._engine = make_engine(settings.database.url or "", pool_size=1)
        self._sessionmaker = make_sessionmaker(self._engine)

    def __call__(self, batch: Batch) -> OutBatch:
        """Write the batch's documents; returns the per-document counts (heavy columns dropped)."""
        out = rows(batch)
        for row in out:
            row.update(written=0, unchanged=0, deleted=0, chunk_total=0)
            if not row["error"]:
                self._upsert_document(row)
        return columns(out, RESULT_COLUMNS)

    def _upsert_document(self, row: dict[str, Any]) -> None:
        records = [ChunkRecord.model_validate(r) for r in json.loads(row["chunks"])]
        vectors: dict[str, list[float]] = json.loads(row["vectors"])
        stored = self._writer.existing_ids(tenant_id=self._tenant, brand_id=self._brand, source=row["uri"])
        new = [r for r in records if r.chunk_id in vectors and r.chunk_id not in stored]
        if new:
            self._writer.write(new, [vectors[r.chunk_id] for r in new])
        current = {r.chunk_id for r in records}
        gone = sorted(stored - current)
        self._writer.delete(tenant_id=self._tenant, brand_id=self._brand, chunk_ids=gone)
        self._loop.run_until_complete(self._record(row, records))
        row.update(written=len(new), unchanged=len(records) - len(new), deleted=len(gone))
        row["chunk_total"] = len(records)

    async def _record(self, row: dict[str, Any], records: list[ChunkRecord]) -> None:
        async with self._sessionmaker() as session:
            source = await repo.upsert_knowledge_source(
                session,
                tenant_id=self._tenant,
                brand_id=self._brand,
                uri=row["uri"],
                title=row["title"] or row["uri"],
                content_type=row["content_type"],
                content_hash=hashlib.sha256(row["text"].encode()).hexdigest(),
            )
            await repo.sync_source_chunks(session, source=source, chunks=records)
            await session.commit()

    def close(self) -> None:
        """Release the writer, the pool and the loop (the local engine calls this; actors just exit)."""
        self._writer.close()
        self._loop.run_until_complete(self._engine.dispose())
        self._loop.close()
