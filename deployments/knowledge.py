"""Knowledge index deployment: the single owner of the vector store client.

The embedded engine (Qdrant Edge, the default) locks its directory to one process, so every read and write
of vectors goes through this deployment; with ``QDRANT_URL`` set it can scale out like the others.
Postgres keeps the sources and chunks as the system of record (vectors can be rebuilt from it).

Retrieval queries are embedded here, with this replica's own copy of the model (or its own client of
an embedding endpoint): asking the embedder deployment costs a Serve hop per answer for one short
text. Documents go to the embedder deployment, which scales apart (``EMBEDDINGS__QUERIES_IN_KNOWLEDGE``).
"""

from __future__ import annotations

import uuid
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from common.config import ServiceEndpoints
from common.db.session import make_engine, make_sessionmaker
from common.knowledge.embeddings import build_embedder, token_counter
from common.knowledge.service import KnowledgeService
from common.knowledge.vectorstore import VectorStore
from common.schemas import IngestResult, KnowledgeUploadIn, RetrievedChunk
from deployments.proxy import Delegating, HandleProxy
from deployments.replica import start_replica


@serve.deployment(name="knowledge", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
class KnowledgeIndexDeployment(Delegating):
    """Retrieves context for questions and indexes uploaded documents.

    Public methods of :class:`KnowledgeService` are callable through the handle.
    """

    def __init__(self, embedder: DeploymentHandle[Any], endpoints: ServiceEndpoints) -> None:
        settings = start_replica(endpoints, background=True)
        self._embedder = HandleProxy(embedder)
        store = VectorStore(settings)
        store.ensure_collection(settings.embeddings.model_name, settings.embeddings.dimension)
        engine = make_engine(settings.database.url or "", pool_size=settings.database.pool_size)
        # Queries embedded here: one hop fewer per answer than asking the embedder deployment.
        self._query_embedder = (
            build_embedder(settings.embeddings) if settings.embeddings.queries_in_knowledge else None
        )
        self._target = self._service = KnowledgeService(
            store=store,
            embed=self._embed,
            embed_query=self._query_embedder.aembed if self._query_embedder else None,
            count_tokens=token_counter(settings.embeddings),
            sessionmaker=make_sessionmaker(engine),
            retrieval=settings.retrieval,
        )

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = await self._embedder.embed(texts)
        return vectors

    async def retrieve(
        self, tenant_id: uuid.UUID, brand_id: uuid.UUID, query: str, top_k: int
    ) -> list[RetrievedChunk]:
        """Top-k chunks of this tenant's brand for ``query``."""
        return await self._service.retrieve(tenant_id, brand_id, query, top_k)

    async def correct_spelling(self, tenant_id: uuid.UUID, brand_id: uuid.UUID, text: str) -> str:
        """``text`` with typos corrected against this brand's words."""
        return await self._service.correct_spelling(tenant_id, brand_id, text)

    async def rank_sentences(self, query: str, sentences: list[str]) -> list[float]:
        """Similarity of each passage sentence to ``query`` (choosing the sentences that answer)."""
        return await self._service.rank_sentences(query, sentences)

    async def ingest(
        self, tenant_id: uuid.UUID, brand_id: uuid.UUID, upload: KnowledgeUploadIn
    ) -> IngestResult:
        """Index (or refresh) documents for one brand."""
        return await self._service.ingest(tenant_id, brand_id, upload)

    async def delete_source(self, tenant_id: uuid.UUID, brand_id: uuid.UUID, source_id: uuid.UUID) -> int:
        """Remove one source of a brand, vectors and rows (this replica owns the embedded store)."""
        return await self._service.delete_source(tenant_id, brand_id, source_id)
