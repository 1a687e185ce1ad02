"""Ray Data stages of bulk ingestion: callable classes, heavy clients and models opened once in ``__init__``.

Every stage takes and returns a *batch*: a mapping of column name → equal-length sequence (Ray Data's
``numpy`` batch format, or plain lists when :func:`pipelines.ingest.run_ingest` runs the same stages in
one process). One row is one document, so the per-document diff (new chunks vs. stored chunks) stays
in one place. Columns, added stage by stage::

    uri, location, content_type                  input (SourceItem)
    data                                         ReadSources
    title, text, faq (JSON), content_type        ParseDocuments
    tables (JSON: table rows)                    ParseDocuments
    chunks (JSON), embed_ids (JSON)              ChunkDocuments
    vectors (JSON {chunk_id: vector})            EmbedChunks
    written, unchanged, deleted, chunk_total     UpsertPoints (heavy columns dropped)
    error, stage                                 any stage; a row with an error is passed through untouched

A document that fails for a reason of its own (unreadable, unparsable, empty) gets ``error`` set and is
*quarantined*: later stages skip it and the summary lists it. Failures of the system (database, vector
store, object storage unreachable) raise and fail the whole run, which the worker retries; Ray Data's
``max_errored_blocks`` is never relied on.

The engines run ReadSources → ParseDocuments → ChunkDocuments as one :class:`PrepareDocuments` (one
process, no object-store hops between them). :class:`UpsertPoints` works a batch at a time: one lookup
of the stored ids for all the batch's sources, one upsert, one Postgres transaction.

Vector writes (:class:`UpsertPoints`) go through a :class:`PointWriter`:

* ``direct``: a :class:`common.knowledge.vectorstore.VectorStore` opened in the stage's process. With
  ``QDRANT_URL`` set that is any process (an actor pool). The embedded engine (Qdrant Edge) locks its
  directory to one process, so the direct writer runs only in the driver, and only when no Serve app
  owns it; it builds the HNSW index when the run ends (:meth:`DirectPointWriter.close`);
* ``serve``: the running app's ``knowledge`` deployment, through its handle (the embedded engine while
  the app runs). It calls ``source_chunk_ids``, ``write_chunks`` and ``delete_chunks`` on the deployment.
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

from common.config import Settings
from common.db.models import KnowledgeChunk, KnowledgeSource
from common.db.session import make_engine, make_sessionmaker, make_sync_engine
from common.errors import EmbeddingError, InvalidInput
from common.knowledge.chunking import embedding_text
from common.knowledge.parsing import FaqEntry, ParsedDocument, TableRow
from common.knowledge.records import build_records
from common.schemas import ChunkRecord
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
PARSE_COLUMNS = (*INPUT_COLUMNS, "title", "text", "faq", "tables")
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
    """Turns bytes into text, FAQ entries and table rows (:func:`common.knowledge.parsing.parse_document`)."""

    def __init__(self) -> None:
        from common.knowledge import parsing

        self._parsing = parsing

    def __call__(self, batch: Batch) -> OutBatch:
        """Replace ``data`` by ``title``, ``text``, ``faq`` (JSON pairs), ``tables`` (JSON rows:
        ``[heading_path, [[column, value], …]]``); ``content_type`` = text's type."""
        out = rows(batch)
        for row in out:
            data = row.pop("data", b"")
            row["title"], row["text"], row["faq"], row["tables"] = "", "", "[]", "[]"
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
            row["tables"] = json.dumps([[r.heading_path, r.cells] for r in parsed.table_rows])
        return columns(out, PARSE_COLUMNS)


class ChunkDocuments:
    """Chunks each document and decides which chunks need embedding (those Postgres does not hold yet)."""

    def __init__(self, settings: Settings, *, tenant_id: str, brand_id: str, force: bool = False) -> None:
        from common.knowledge.embeddings import token_counter

        self._count = token_counter(settings.embeddings)
        self._retrieval = settings.retrieval
        self._tenant = uuid.UUID(tenant_id)
        self._brand = uuid.UUID(brand_id)
        self._force = force
        self._engine: Engine = make_sync_engine(settings.database.url or "")

    def __call__(self, batch: Batch) -> OutBatch:
        """Add ``chunks`` (JSON records) and ``embed_ids`` (JSON ids to embed)."""
        out = rows(batch)
        uris = [row["uri"] for row in out if not row["error"]]
        known = {} if self._force or not uris else self._known_ids(uris)
        for row in out:
            row["chunks"], row["embed_ids"] = "[]", "[]"
            if row["error"]:
                continue
            records = self._records(row)
            row["chunks"] = json.dumps([r.model_dump(mode="json") for r in records])
            stored = known.get(row["uri"], set())
            row["embed_ids"] = json.dumps([r.chunk_id for r in records if r.chunk_id not in stored])
        return columns(out, CHUNK_COLUMNS)

    def _records(self, row: dict[str, Any]) -> list[ChunkRecord]:
        """Chunks with deterministic ids, FAQ entries and table rows included (the same step as API
        uploads)."""
        return build_records(
            tenant_id=self._tenant,
            brand_id=self._brand,
            document=parsed_document(row),
            count_tokens=self._count,
            retrieval=self._retrieval,
        )

    def _known_ids(self, uris: list[str]) -> dict[str, set[str]]:
        """Chunk ids Postgres holds per source uri: one query per batch, not one per document."""
        stmt = (
            select(KnowledgeSource.uri, KnowledgeChunk.id)
            .join(KnowledgeSource, KnowledgeChunk.source_id == KnowledgeSource.id)
            .where(KnowledgeSource.brand_id == self._brand, KnowledgeSource.uri.in_(uris))
        )
        known: dict[str, set[str]] = {}
        with self._engine.connect() as conn:
            for uri, cid in conn.execute(stmt):
                known.setdefault(uri, set()).add(cid)
        return known


def parsed_document(row: Mapping[str, Any]) -> ParsedDocument:
    """The :class:`ParsedDocument` a :class:`ParseDocuments` row carries (its JSON columns decoded)."""
    return ParsedDocument(
        uri=row["uri"],
        content_type=row["content_type"],
        title=row["title"],
        text=row["text"],
        text_type=row["content_type"],
        sections=tuple(FaqEntry(q, a) for q, a in json.loads(row["faq"])),
        table_rows=tuple(
            TableRow(path, tuple((name, value) for name, value in cells))
            for path, cells in json.loads(row["tables"])
        ),
    )


class PrepareDocuments:
    """:class:`ReadSources` → :class:`ParseDocuments` → :class:`ChunkDocuments` in one process.

    The three are light next to embedding; as three Ray Data actor pools they cost three worker processes
    (imports, a tokenizer, two database pools) and two object-store hops per batch on the cores the
    embedding actors need. Same columns and quarantine rules as the three stages run one after another.
    """

    def __init__(self, settings: Settings, *, tenant_id: str, brand_id: str, force: bool = False) -> None:
        self._read = ReadSources(settings)
        self._parse = ParseDocuments()
        self._chunk = ChunkDocuments(settings, tenant_id=tenant_id, brand_id=brand_id, force=force)

    def __call__(self, batch: Batch) -> OutBatch:
        """Input columns in, :data:`CHUNK_COLUMNS` out."""
        return self._chunk(self._parse(self._read(batch)))


class EmbedChunks:
    """Embeds the chunks that need it; the model loads once per actor, torch pinned to one thread."""

    def __init__(self, settings: Settings) -> None:
        from common.knowledge.embeddings import build_embedder

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

    def existing_ids(
        self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, sources: Sequence[str]
    ) -> dict[str, set[str]]:
        """Ids stored per source of one brand (every requested source is a key)."""
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
    """Writes with a :class:`VectorStore` in this process (Qdrant server, or the embedded engine in the
    driver)."""

    def __init__(self, settings: Settings) -> None:
        from common.knowledge.vectorstore import VectorStore

        self._store = VectorStore(settings)
        self._store.ensure_collection(settings.embeddings.model_name, settings.embeddings.dimension)

    def existing_ids(
        self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, sources: Sequence[str]
    ) -> dict[str, set[str]]:
        """Ids stored per source (scoped by tenant and brand), one scan for all of them."""
        return self._store.chunk_ids_by_source(tenant_id=tenant_id, brand_id=brand_id, sources=sources)

    def write(self, records: Sequence[ChunkRecord], vectors: Sequence[Sequence[float]]) -> None:
        """Batched upsert with ``wait=True`` (see :meth:`VectorStore.upsert`)."""
        self._store.upsert(records, vectors)

    def delete(self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, chunk_ids: Sequence[str]) -> None:
        """Scoped delete."""
        self._store.delete(tenant_id=tenant_id, brand_id=brand_id, chunk_ids=chunk_ids)

    def close(self) -> None:
        """Build the embedded engine's HNSW index of this run's points, then release the directory.

        Here, at the end of a bulk job in the process that owns the directory, no request waits on the
        build (it holds the GIL); on a Qdrant server it is a no-op (the server optimises on its own).
        """
        try:
            self._store.optimize()
        finally:
            self._store.close()


class ServePointWriter:
    """Writes through the running app's ``knowledge`` deployment (which owns the embedded engine)."""

    def __init__(self, settings: Settings) -> None:
        from ray import serve

        self._handle = serve.get_deployment_handle("knowledge", app_name=settings.ray.app_name)
        # Ray Data calls this writer from plain worker threads, where no event loop runs. With Serve's
        # low-latency setting RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0 (deployments/replica.py) a handle
        # routes on the caller's loop and fails there, so this one keeps its router on Serve's own loop
        # thread. `_init` is the only way Ray 2.x offers to choose that per handle.
        self._handle._init(_run_router_in_separate_loop=True)  # type: ignore[no-untyped-call]

    def existing_ids(
        self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, sources: Sequence[str]
    ) -> dict[str, set[str]]:
        """Ids stored per source, asked of the deployment (its API is one source per call)."""
        calls = {s: self._handle.source_chunk_ids.remote(tenant_id, brand_id, s) for s in sources}
        return {source: set(call.result()) for source, call in calls.items()}

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

    Order per batch of documents: one lookup of the stored ids → one upsert of every new chunk → the
    deletes → one Postgres transaction. A failure in between leaves old and new chunks side by side (never
    a gap); the next run finishes the job because every id is deterministic.
    """

    def __init__(self, settings: Settings, *, tenant_id: str, brand_id: str, mode: str) -> None:
        from common.db import repositories  # only the writing process needs them

        self._repo = repositories
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
        documents = [row for row in out if not row["error"]]
        if documents:
            self._upsert_documents(documents)
        return columns(out, RESULT_COLUMNS)

    def _upsert_documents(self, documents: list[dict[str, Any]]) -> None:
        records = {
            row["uri"]: [ChunkRecord.model_validate(r) for r in json.loads(row["chunks"])]
            for row in documents
        }
        scope = {"tenant_id": self._tenant, "brand_id": self._brand}
        stored = self._writer.existing_ids(**scope, sources=list(records))
        new_records: list[ChunkRecord] = []
        new_vectors: list[list[float]] = []
        vanished: list[list[str]] = []
        for row in documents:
            vectors: dict[str, list[float]] = json.loads(row["vectors"])
            mine, known = records[row["uri"]], stored[row["uri"]]
            new = [r for r in mine if r.chunk_id in vectors and r.chunk_id not in known]
            new_records.extend(new)
            new_vectors.extend(vectors[r.chunk_id] for r in new)
            gone = sorted(known - {r.chunk_id for r in mine})
            row.update(written=len(new), unchanged=len(mine) - len(new), deleted=len(gone))
            row["chunk_total"] = len(mine)
            if gone:
                vanished.append(gone)
        if new_records:
            self._writer.write(new_records, new_vectors)
        for gone in vanished:
            self._writer.delete(**scope, chunk_ids=gone)
        self._loop.run_until_complete(self._record(documents, records))

    async def _record(self, documents: list[dict[str, Any]], records: dict[str, list[ChunkRecord]]) -> None:
        """Sources and their chunks in Postgres: one transaction (one commit) for the whole batch."""
        async with self._sessionmaker() as session:
            for row in documents:
                source = await self._repo.upsert_knowledge_source(
                    session,
                    tenant_id=self._tenant,
                    brand_id=self._brand,
                    uri=row["uri"],
                    title=row["title"] or row["uri"],
                    content_type=row["content_type"],
                    content_hash=hashlib.sha256(row["text"].encode()).hexdigest(),
                )
                await self._repo.sync_source_chunks(session, source=source, chunks=records[row["uri"]])
            await session.commit()

    def close(self) -> None:
        """Release the writer, the pool and the loop (the local engine calls this; actors just exit)."""
        self._writer.close()
        self._loop.run_until_complete(self._engine.dispose())
        self._loop.close()
