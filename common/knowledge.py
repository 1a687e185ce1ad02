"""Keeping a brand's knowledge in the vector store in step with its documents, and reading it back.

:func:`refresh_source` makes the stored chunks of one source equal to the chunks of its current text:
unchanged chunks (same deterministic id) are neither re-embedded nor re-written, new ones are embedded and
upserted, and chunks that disappeared are deleted — after the upsert, so a failure in between leaves
old and new chunks side by side rather than a gap. :func:`retrieve_context` embeds a query and searches
one brand's chunks.

The vector store API is blocking; it runs in worker threads here so the event loop keeps serving.
Known limit: an unchanged chunk keeps the ``ordinal`` it was first written with when sections move.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from common.chunking import MARKDOWN, PLAIN_TEXT, chunk_document, embedding_text
from common.config import RetrievalSettings
from common.errors import EmbeddingError, UnsupportedMediaType
from common.schemas import ChunkRecord, RetrievedChunk
from common.vectorstore import VectorStore, chunk_id

EmbedFn = Callable[[list[str]], Awaitable[list[list[float]]]]


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


def build_records(
    *,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    uri: str,
    text: str,
    content_type: str,
    count_tokens: Callable[[str], int],
    retrieval: RetrievalSettings,
) -> list[ChunkRecord]:
    """Chunk a document into records with deterministic ids; repeated identical chunks are kept once."""
    if content_type not in (MARKDOWN, PLAIN_TEXT):
        raise UnsupportedMediaType(f"cannot ingest {content_type!r}", details={"content_type": content_type})
    chunks = chunk_document(
        text,
        content_type=content_type,
        count_tokens=count_tokens,
        chunk_tokens=retrieval.chunk_tokens,
        overlap_tokens=retrieval.chunk_overlap_tokens,
    )
    records: dict[str, ChunkRecord] = {}
    for chunk in chunks:
        cid = chunk_id(
            tenant_id=tenant_id,
            brand_id=brand_id,
            source=uri,
            heading_path=chunk.heading_path,
            text=chunk.text,
        )
        records.setdefault(
            cid,
            ChunkRecord(
                chunk_id=cid,
                tenant_id=tenant_id,
                brand_id=brand_id,
                source=uri,
                heading_path=chunk.heading_path,
                ordinal=chunk.ordinal,
                text=chunk.text,
                content_hash=hashlib.sha256(chunk.text.encode()).hexdigest(),
            ),
        )
    return list(records.values())


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
    """Make the stored chunks of ``uri`` match ``text``: embed and write only what is new, delete the rest."""
    records = build_records(
        tenant_id=tenant_id,
        brand_id=brand_id,
        uri=uri,
        text=text,
        content_type=content_type,
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


async def retrieve_context(
    *,
    store: VectorStore,
    embed: EmbedFn,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    query: str,
    top_k: int,
) -> list[RetrievedChunk]:
    """The ``top_k`` chunks of one brand closest to ``query``, best first (no score threshold here)."""
    vectors = await embed([query])
    if len(vectors) != 1:
        raise EmbeddingError(f"embedder returned {len(vectors)} vectors for one query")
    return await asyncio.to_thread(
        store.search, tenant_id=tenant_id, brand_id=brand_id, vector=vectors[0], top_k=top_k
    )
