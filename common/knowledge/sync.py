"""Keeping a brand's knowledge in the vector store in step with its documents, and reading it back.

:func:`refresh_document` (a :class:`~common.knowledge.parsing.ParsedDocument`) and
:func:`refresh_source` (text of a
text format, parsed here) make the stored chunks of one source equal to the chunks of its current text:
unchanged chunks (same deterministic id) are neither re-embedded nor re-written, new ones are embedded and
upserted, and chunks that disappeared are deleted — after the upsert, so a failure in between leaves
old and new chunks side by side rather than a gap. Every write and delete waits for Qdrant's ack.
:func:`initialize_brand_knowledge` indexes a set of documents; :func:`refresh_brand_knowledge` does the
same and then deletes the chunks of every source of the brand that is no longer in the set.
:func:`retrieve_context` embeds a query and searches one brand's chunks: hybrid (dense + sparse fused
with RRF) by default, optionally reranked.

The vector store API is blocking; it runs in worker threads here so the event loop keeps serving.
Known limit: an unchanged chunk keeps the ``ordinal`` it was first written with when sections move.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from common.config import RetrievalSettings
from common.errors import EmbeddingError, InvalidInput, UnsupportedMediaType
from common.knowledge.chunking import embedding_text
from common.knowledge.parsing import CSV, HTML, MARKDOWN, PLAIN_TEXT, ParsedDocument, parse_document
from common.knowledge.records import build_records
from common.knowledge.reranking import Reranker
from common.knowledge.vectorstore import VectorStore
from common.schemas import ChunkRecord, RetrievedChunk

EmbedFn = Callable[[list[str]], Awaitable[list[list[float]]]]
#: Text formats :func:`refresh_source` accepts as ``str``; binary ones (PDF, DOCX) go through
#: :func:`~common.knowledge.parsing.parse_document` and :func:`refresh_document`.
TEXT_CONTENT_TYPES = frozenset({MARKDOWN, PLAIN_TEXT, HTML, CSV})


@dataclass(frozen=True, slots=True)
class SourceSync:
    """What one :func:`refresh_source` did, counted exactly."""

    source: str
    records: list[ChunkRecord]
    new_ids: list[str]
    unchanged_ids: list[str]
    deleted_ids: list[str]

    @property
    def chunk_ids(self) -> list[str]:
        """Ids of every chunk the source has now, in document order."""
        return [r.chunk_id for r in self.records]


@dataclass(frozen=True, slots=True)
class BrandSync:
    """What one :func:`initialize_brand_knowledge` / :func:`refresh_brand_knowledge` did."""

    sources: list[SourceSync]
    removed_sources: list[str]

    @property
    def written(self) -> int:
        """Chunks embedded and written."""
        return sum(len(s.new_ids) for s in self.sources)

    @property
    def unchanged(self) -> int:
        """Chunks left as they were (not re-embedded)."""
        return sum(len(s.unchanged_ids) for s in self.sources)

    @property
    def deleted(self) -> int:
        """Chunks deleted from sources still present (sources removed entirely are not counted here)."""
        return sum(len(s.deleted_ids) for s in self.sources)


def parse_text_source(*, uri: str, text: str, content_type: str) -> ParsedDocument:
    """Parse already-decoded text of a text format; an empty text is an empty document (no error)."""
    if content_type not in TEXT_CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"cannot ingest {content_type!r} as text",
            details={"content_type": content_type, "supported": sorted(TEXT_CONTENT_TYPES)},
        )
    return parse_document(text.encode("utf-8"), uri=uri, content_type=content_type, allow_empty=True)


async def refresh_source(
    *,
    store: VectorStore,
    embed: EmbedFn,
    count_tokens: Callable[[str], int],
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    uri: str,
    text: str,
    content_type: str,
    retrieval: RetrievalSettings,
) -> SourceSync:
    """Make the stored chunks of ``uri`` match ``text`` (a :data:`TEXT_CONTENT_TYPES` format)."""
    return await refresh_document(
        store=store,
        embed=embed,
        count_tokens=count_tokens,
        tenant_id=tenant_id,
        brand_id=brand_id,
        document=parse_text_source(uri=uri, text=text, content_type=content_type),
        retrieval=retrieval,
    )


async def refresh_document(
    *,
    store: VectorStore,
    embed: EmbedFn,
    count_tokens: Callable[[str], int],
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    document: ParsedDocument,
    retrieval: RetrievalSettings,
) -> SourceSync:
    """Make the stored chunks of ``document.uri`` match it: embed and write only what is new, delete
    the rest."""
    uri = document.uri
    records = build_records(
        tenant_id=tenant_id,
        brand_id=brand_id,
        document=document,
        count_tokens=count_tokens,
        retrieval=retrieval,
    )
    stored = await asyncio.to_thread(
        store.source_chunk_ids, tenant_id=tenant_id, brand_id=brand_id, source=uri
    )
    new = [r for r in records if r.chunk_id not in stored]
    if new:
        vectors = await embed([embedding_text(heading_path=r.heading_path, text=r.text) for r in new])
        if len(vectors) != len(new):
            raise EmbeddingError(f"embedder returned {len(vectors)} vectors for {len(new)} chunks")
        await asyncio.to_thread(store.upsert, new, vectors)
    current = {r.chunk_id for r in records}
    gone = sorted(stored - current)
    await asyncio.to_thread(store.delete, tenant_id=tenant_id, brand_id=brand_id, chunk_ids=gone)
    return SourceSync(
        source=uri,
        records=records,
        new_ids=[r.chunk_id for r in new],
        unchanged_ids=[r.chunk_id for r in records if r.chunk_id in stored],
        deleted_ids=gone,
    )


async def initialize_brand_knowledge(
    *,
    store: VectorStore,
    embed: EmbedFn,
    count_tokens: Callable[[str], int],
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    documents: Sequence[ParsedDocument],
    retrieval: RetrievalSettings,
) -> BrandSync:
    """Index every document of a brand (idempotent: unchanged chunks are not re-embedded); deletes nothing
    outside these sources."""
    _check_unique_uris(documents)
    synced = [
        await refresh_document(
            store=store,
            embed=embed,
            count_tokens=count_tokens,
            tenant_id=tenant_id,
            brand_id=brand_id,
            document=document,
            retrieval=retrieval,
        )
        for document in documents
    ]
    return BrandSync(sources=synced, removed_sources=[])


async def refresh_brand_knowledge(
    *,
    store: VectorStore,
    embed: EmbedFn,
    count_tokens: Callable[[str], int],
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    documents: Sequence[ParsedDocument],
    retrieval: RetrievalSettings,
) -> BrandSync:
    """Make the brand's knowledge equal to ``documents``: index them, then delete every stored source of
    the brand that is not among them (after indexing, so a failure never leaves the brand empty)."""
    indexed = await initialize_brand_knowledge(
        store=store,
        embed=embed,
        count_tokens=count_tokens,
        tenant_id=tenant_id,
        brand_id=brand_id,
        documents=documents,
        retrieval=retrieval,
    )
    present = {d.uri for d in documents}
    stored = await asyncio.to_thread(store.brand_sources, tenant_id=tenant_id, brand_id=brand_id)
    removed = sorted(stored - present)
    for source in removed:
        await asyncio.to_thread(store.delete_source, tenant_id=tenant_id, brand_id=brand_id, source=source)
    return BrandSync(sources=indexed.sources, removed_sources=removed)


def _check_unique_uris(documents: Sequence[ParsedDocument]) -> None:
    counts = Counter(d.uri for d in documents)
    duplicates = sorted(uri for uri, n in counts.items() if n > 1)
    if duplicates:
        # Two documents under one uri would each delete the other's chunks.
        raise InvalidInput("documents must have distinct uris", details={"duplicates": duplicates})


async def retrieve_context(
    *,
    store: VectorStore,
    embed: EmbedFn,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    query: str,
    top_k: int,
    mode: Literal["hybrid", "dense"] = "hybrid",
    candidates: int = 20,
    reranker: Reranker | None = None,
) -> list[RetrievedChunk]:
    """The ``top_k`` chunks of one brand for ``query``, best first (no score threshold here).

    ``hybrid`` fuses dense and sparse rankings (RRF); ``dense`` is cosine similarity alone. With a
    ``reranker``, ``max(candidates, top_k)`` chunks are retrieved and it picks the ``top_k``. Each chunk's
    ``score`` is its dense cosine similarity in either mode.
    """
    vectors = await embed([query])
    if len(vectors) != 1:
        raise EmbeddingError(f"embedder returned {len(vectors)} vectors for one query")
    limit = max(candidates, top_k) if reranker is not None else top_k
    if mode == "hybrid":
        chunks = await asyncio.to_thread(
            store.hybrid_search,
            tenant_id=tenant_id,
            brand_id=brand_id,
            vector=vectors[0],
            query_text=query,
            top_k=limit,
            candidates=candidates,
        )
    else:
        chunks = await asyncio.to_thread(
            store.search, tenant_id=tenant_id, brand_id=brand_id, vector=vectors[0], top_k=limit
        )
    return reranker.rerank(query, chunks, top_k=top_k) if reranker is not None else chunks
