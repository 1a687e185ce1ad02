"""Retrieval queries can be embedded apart from documents (the knowledge replica's own model, one
Serve hop fewer per answer); documents always go to the shared embedder."""

from __future__ import annotations

import uuid
from pathlib import Path

from common.config import ServiceEndpoints, Settings
from common.knowledge.embeddings import token_counter
from common.knowledge.service import KnowledgeService
from serve_apps.inprocess import InProcessBackend
from tests.fakes.embedding import ConstantEmbedder
from tests.fakes.pipeline import DOCUMENTS, seed_brand


class Recording(ConstantEmbedder):
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def aembed(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return self.embed(texts)


async def test_queries_use_their_own_embedder_and_documents_the_shared_one(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    endpoints = ServiceEndpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=redis_prefix,
        qdrant_path=tmp_path / "q",
    )
    backend = InProcessBackend(Settings(), endpoints, embedder=ConstantEmbedder())
    documents, queries = Recording(), Recording()
    service = KnowledgeService(
        store=backend.store,
        embed=documents.aembed,
        embed_query=queries.aembed,
        count_tokens=token_counter(backend.settings.embeddings),
        sessionmaker=backend.sessionmaker,
        retrieval=backend.settings.retrieval,
    )
    try:
        seeded = await seed_brand(backend.sessionmaker)
        await service.ingest(seeded.brand.tenant_id, seeded.brand.id, DOCUMENTS)
        assert documents.calls and not queries.calls
        indexed = len(documents.calls)

        chunks = await service.retrieve(seeded.brand.tenant_id, seeded.brand.id, "Can I return shoes?", 3)

        assert chunks
        assert queries.calls == [["Can I return shoes?"]]
        assert len(documents.calls) == indexed
    finally:
        await backend.aclose()


async def test_spelling_is_corrected_against_the_brand_words_and_sentences_are_ranked_by_the_query_model(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    endpoints = ServiceEndpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=redis_prefix,
        qdrant_path=tmp_path / "q",
    )
    backend = InProcessBackend(Settings(), endpoints, embedder=ConstantEmbedder())
    queries = Recording()
    service = KnowledgeService(
        store=backend.store,
        embed=backend.embedder.aembed,
        embed_query=queries.aembed,
        count_tokens=token_counter(backend.settings.embeddings),
        sessionmaker=backend.sessionmaker,
        retrieval=backend.settings.retrieval,
    )
    try:
        seeded = await seed_brand(backend.sessionmaker)
        tenant, brand = seeded.brand.tenant_id, seeded.brand.id
        await service.ingest(tenant, brand, DOCUMENTS)
        known = " ".join(d.content for d in DOCUMENTS.documents).lower()
        word = next(w for w in ("returns", "refund", "shipping", "delivery") if w in known)
        typo = word[:2] + word[3] + word[2] + word[4:]  # two letters swapped
        assert await service.correct_spelling(tenant, brand, f"Do you do {typo}?") == f"Do you do {word}?"
        assert await service.correct_spelling(tenant, brand, "Do you sell kayaks?") == "Do you sell kayaks?"
        other = await service.correct_spelling(uuid.uuid4(), brand, f"Do you do {typo}?")
        assert other == f"Do you do {typo}?"  # another tenant's words are not this brand's

        # The search-time synonym filter: the brand's word for a synonym the customer used is searched
        # too ("money back" is a refund), a word the brand uses itself adds nothing.
        assert "refund" in known and "reimburse" not in known
        await service.retrieve(tenant, brand, "Can I get reimbursed?", 2)
        assert queries.calls[-1][0].startswith("Can I get reimbursed? ") and "refund" in queries.calls[-1][0]
        await service.retrieve(tenant, brand, "refund", 2)
        assert queries.calls[-1] == ["refund"]

        scores = await service.rank_sentences("a question", ["first sentence", "second sentence"])
        assert scores == [1.0, 1.0]  # the constant test embedder: every text the same vector
        assert queries.calls[-1] == ["a question", "first sentence", "second sentence"]
        await service.rank_sentences("another question", ["first sentence", "a third one"])
        assert queries.calls[-1] == ["another question", "a third one"]  # seen sentences are cached
    finally:
        await backend.aclose()
