"""Brand knowledge as a service: index documents (vectors + Postgres record) and retrieve context.

The knowledge deployment wraps one instance; the in-process pipeline (tests, baseline benchmark)
uses the same class directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common import text as words
from common.config import RetrievalSettings
from common.db import repositories as repo
from common.errors import NotFound
from common.knowledge import sync as knowledge
from common.knowledge.reranking import build_reranker
from common.knowledge.vectorstore import VectorStore
from common.observability import stage
from common.schemas import ChunkRecord, IngestResult, KnowledgeUploadIn, RetrievedChunk
from common.ttl_cache import TTLCache

EmbedFn = Callable[[list[str]], Awaitable[list[list[float]]]]
#: How long a brand's vocabulary (for spelling correction) is cached per replica, in seconds.
VOCABULARY_TTL_S = 60.0
#: Passage sentences whose vectors are kept per replica: the same passages answer many questions.
SENTENCE_CACHE_ENTRIES = 20_000


class KnowledgeService:
    """Owns one vector store client; embeddings come from an injected function."""

    def __init__(
        self,
        *,
        store: VectorStore,
        embed: EmbedFn,
        count_tokens: Callable[[str], int],
        sessionmaker: async_sessionmaker[AsyncSession],
        retrieval: RetrievalSettings,
        embed_query: EmbedFn | None = None,
    ) -> None:
        """``embed_query`` embeds retrieval queries when given (the knowledge replica's own model);
        ``embed`` does everything else (documents, and queries without it)."""
        self._store = store
        self._embed = embed
        self._embed_query = embed_query or embed
        self._count_tokens = count_tokens
        self._sessionmaker = sessionmaker
        self._retrieval = retrieval
        self._reranker = build_reranker(retrieval)
        self._sentence_vectors: OrderedDict[str, list[float]] = OrderedDict()
        # A brand's words change only when its knowledge does; an upload reaches spelling within this.
        self._vocabularies: TTLCache[tuple[uuid.UUID, uuid.UUID], frozenset[str]] = TTLCache(
            VOCABULARY_TTL_S, max_entries=256
        )

    async def retrieve(
        self, tenant_id: uuid.UUID, brand_id: uuid.UUID, query: str, top_k: int
    ) -> list[RetrievedChunk]:
        """Top-k chunks of this tenant's brand for ``query`` (hybrid and reranked as settings say).

        Traced as two stages: ``knowledge.embed`` (the query vector) and ``knowledge.vector_search``
        (search, fusion and reranking). With ``retrieval.synonyms`` the query is first given the brand's
        words for the customer-service synonyms it uses ("bitcoin" → "cryptocurrency", common/synonyms.txt),
        as a search engine's synonym filter does.
        """
        if self._retrieval.synonyms:
            known = await self._known_words(tenant_id, brand_id)
            query = words.expand_query(query, known)
        with stage("knowledge.embed", chars=len(query)):
            vectors = await self._embed_query([query])

        async def embedded(_texts: list[str]) -> list[list[float]]:
            return vectors

        with stage("knowledge.vector_search", top_k=top_k) as span:
            chunks = await self._search(tenant_id, brand_id, query, top_k, embedded)
            span.set_attribute("chunks", len(chunks))
        return chunks

    async def correct_spelling(self, tenant_id: uuid.UUID, brand_id: uuid.UUID, text: str) -> str:
        """``text`` with misspelt words replaced by the brand's own word they are a typo of
        ("shiping to canda" → "shipping to canada"); unknown words that are not typos stay."""

        known = await self._known_words(tenant_id, brand_id)
        return await asyncio.to_thread(words.correct_spelling, text, known)

    async def _known_words(self, tenant_id: uuid.UUID, brand_id: uuid.UUID) -> frozenset[str]:
        """The brand's words (cached for ``VOCABULARY_TTL_S``: a new upload is seen within a minute)."""

        async def load() -> frozenset[str]:
            async with self._sessionmaker() as session:
                texts = await repo.chunk_texts(session, tenant_id=tenant_id, brand_id=brand_id)
            return await asyncio.to_thread(words.known_words, texts)

        return await self._vocabularies.get_or_load((tenant_id, brand_id), load)

    async def rank_sentences(self, query: str, sentences: list[str]) -> list[float]:
        """Cosine similarity of each of ``sentences`` to ``query``, by the query model.

        Used to pick the passage sentences that answer a question (:mod:`common.conversation.answering`).
        Sentence vectors are cached (LRU), so only the query and unseen sentences are embedded.
        """
        if not sentences:
            return []
        missing = list(dict.fromkeys(s for s in sentences if s not in self._sentence_vectors))
        with stage("knowledge.rank_sentences", sentences=len(sentences), embedded=len(missing)):
            vectors = await self._embed_query([query, *missing])
        for sentence, vector in zip(missing, vectors[1:], strict=True):
            self._sentence_vectors[sentence] = vector
        for sentence in sentences:
            self._sentence_vectors.move_to_end(sentence)
        while len(self._sentence_vectors) > SENTENCE_CACHE_ENTRIES:
            self._sentence_vectors.popitem(last=False)
        return [_cosine(vectors[0], self._sentence_vectors[s]) for s in sentences]

    async def _search(
        self, tenant_id: uuid.UUID, brand_id: uuid.UUID, query: str, top_k: int, embed: EmbedFn
    ) -> list[RetrievedChunk]:
        return await knowledge.retrieve_context(
            store=self._store,
            embed=embed,
            tenant_id=tenant_id,
            brand_id=brand_id,
            query=query,
            top_k=top_k,
            mode="hybrid" if self._retrieval.hybrid else "dense",
            candidates=self._retrieval.candidates,
            reranker=self._reranker,
        )

    async def ingest(
        self, tenant_id: uuid.UUID, brand_id: uuid.UUID, upload: KnowledgeUploadIn
    ) -> IngestResult:
        """Index (or refresh) each document; unchanged chunks are not re-embedded."""
        written = unchanged = deleted = 0
        chunk_ids: list[str] = []
        for doc in upload.documents:
            sync = await knowledge.refresh_source(
                store=self._store,
                embed=self._embed,
                count_tokens=self._count_tokens,
                tenant_id=tenant_id,
                brand_id=brand_id,
                uri=doc.uri,
                text=doc.content,
                content_type=doc.content_type,
                retrieval=self._retrieval,
            )
            async with self._sessionmaker() as session:
                source = await repo.upsert_knowledge_source(
                    session,
                    tenant_id=tenant_id,
                    brand_id=brand_id,
                    uri=doc.uri,
                    title=doc.title or doc.uri,
                    content_type=doc.content_type,
                    content_hash=hashlib.sha256(doc.content.encode()).hexdigest(),
                )
                await repo.sync_source_chunks(session, source=source, chunks=sync.records)
                await session.commit()
            written += len(sync.new_ids)
            unchanged += len(sync.unchanged_ids)
            deleted += len(sync.deleted_ids)
            chunk_ids.extend(r.chunk_id for r in sync.records)
        return IngestResult(
            documents=len(upload.documents),
            chunks_written=written,
            chunks_unchanged=unchanged,
            chunks_deleted=deleted,
            chunk_ids=chunk_ids,
        )

    async def delete_source(self, tenant_id: uuid.UUID, brand_id: uuid.UUID, source_id: uuid.UUID) -> int:
        """Remove one source of the brand: its vectors, then its Postgres rows (chunks cascade); how many
        chunks it had. Vectors first: if that fails nothing changed, and a retry after a later failure
        finds the rows still there and deletes again (deleting absent points is a no-op)."""
        async with self._sessionmaker() as session:
            source = await repo.get_knowledge_source(
                session, source_id=source_id, tenant_id=tenant_id, brand_id=brand_id
            )
            if source is None:
                raise NotFound("unknown knowledge source", details={"source_id": str(source_id)})
            uri = source.uri
            chunks = await repo.count_source_chunks(session, source_id=source_id)
        await asyncio.to_thread(self._store.delete_source, tenant_id=tenant_id, brand_id=brand_id, source=uri)
        async with self._sessionmaker() as session:
            await repo.delete_knowledge_source(session, source_id=source_id)
            await session.commit()
        self._vocabularies.invalidate((tenant_id, brand_id))
        return chunks

    async def source_chunk_ids(self, tenant_id: uuid.UUID, brand_id: uuid.UUID, source: str) -> list[str]:
        """Ids stored for one source (the bulk pipeline's diff), sorted."""
        ids = await asyncio.to_thread(
            self._store.source_chunk_ids, tenant_id=tenant_id, brand_id=brand_id, source=source
        )
        return sorted(ids)

    async def write_chunks(self, records: list[ChunkRecord], vectors: list[list[float]]) -> None:
        """Upsert chunks whose vectors the bulk pipeline computed, waiting for the ack."""
        await asyncio.to_thread(self._store.upsert, records, vectors)

    async def delete_chunks(self, tenant_id: uuid.UUID, brand_id: uuid.UUID, chunk_ids: list[str]) -> None:
        """Delete chunks of one brand (scoped by tenant and brand)."""
        await asyncio.to_thread(
            self._store.delete, tenant_id=tenant_id, brand_id=brand_id, chunk_ids=chunk_ids
        )


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
