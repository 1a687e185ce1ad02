"""refresh_source / retrieve_context with the real local model and Qdrant local mode, on the demo brand."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.config import QdrantSettings, RetrievalSettings, Settings
from common.embeddings import SentenceTransformerEmbedder, build_embedder
from common.errors import UnsupportedMediaType
from common.knowledge import EmbedFn, SourceSync, refresh_source, retrieve_context
from common.vectorstore import VectorStore
from pipelines.demo import BRAND_FILE, DEMO_DIR, DOCUMENTS, demo_documents, load_demo_brand, seed_demo_brand

pytestmark = pytest.mark.integration

BRAND = yaml.safe_load(BRAND_FILE.read_text())
TENANT_ID = uuid.UUID(BRAND["tenant"]["id"])
BRAND_ID = uuid.UUID(BRAND["brand"]["id"])
RETRIEVAL = RetrievalSettings()


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    model = build_embedder(Settings().embeddings)
    assert isinstance(model, SentenceTransformerEmbedder)
    return model


@pytest.fixture
def store(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> Iterator[VectorStore]:
    s = VectorStore(Settings(qdrant=QdrantSettings(path=tmp_path / "qdrant")))
    s.ensure_collection(embedder.model_name, embedder.dimension)
    yield s
    s.close()


class CountingEmbed:
    """The embedder's ``aembed``, remembering what it was asked to embed."""

    def __init__(self, embedder: SentenceTransformerEmbedder) -> None:
        self.embedder = embedder
        self.calls: list[list[str]] = []

    async def __call__(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(texts)
        return await self.embedder.aembed(texts)


async def refresh(
    store: VectorStore,
    embed: EmbedFn,
    embedder: SentenceTransformerEmbedder,
    text: str,
    *,
    uri: str = "returns.md",
    **kw: Any,
) -> SourceSync:
    return await refresh_source(
        store=store,
        embed=embed,
        count_tokens=embedder.count_tokens,
        tenant_id=kw.get("tenant_id", TENANT_ID),
        brand_id=kw.get("brand_id", BRAND_ID),
        uri=uri,
        text=text,
        content_type=kw.get("content_type", "text/markdown"),
        retrieval=RETRIEVAL,
    )


def test_demo_brand_file_names_the_fixed_ids_and_every_document() -> None:
    assert str(TENANT_ID) == "6f1c2a4e-0000-4000-8000-000000000001"
    assert str(BRAND_ID) == "6f1c2a4e-0000-4000-8000-0000000000b1"
    assert [DEMO_DIR / name for name in BRAND["knowledge"]["documents"]] == list(DOCUMENTS)
    demo = load_demo_brand()
    assert (demo.tenant.id, demo.tenant.slug, demo.brand.id, demo.brand.tenant_id) == (
        TENANT_ID,
        "acme",
        BRAND_ID,
        TENANT_ID,
    )
    assert (demo.brand.slug, demo.brand.name) == ("acme-outdoor", "Acme Outdoor")
    assert demo.brand.persona.languages == ("en", "es") and demo.brand.persona.avoid_topics
    upload = demo_documents()
    assert [d.uri for d in upload.documents] == [p.name for p in DOCUMENTS]
    assert upload.documents[1].title == "Returns & Refunds" and "30 days" in upload.documents[1].content


async def test_refresh_writes_only_what_changed(
    store: VectorStore, embedder: SentenceTransformerEmbedder
) -> None:
    embed = CountingEmbed(embedder)
    original = (DEMO_DIR / "returns.md").read_text()

    first = await refresh(store, embed, embedder, original)
    n = len(first.records)
    assert n >= 5 and len(first.new_ids) == n and first.unchanged_ids == [] and first.deleted_ids == []
    assert sum(len(c) for c in embed.calls) == n
    assert {r.heading_path for r in first.records} >= {"Returns & Refunds > Return Window"}
    assert store.source_chunk_ids(tenant_id=TENANT_ID, brand_id=BRAND_ID, source="returns.md") == set(
        first.chunk_ids
    )

    embed.calls.clear()
    again = await refresh(store, embed, embedder, original)
    assert again.new_ids == [] and again.deleted_ids == [] and len(again.unchanged_ids) == n
    assert embed.calls == []  # nothing re-embedded

    edited_text = original.replace(
        "drop the parcel at any UPS location within 14 days", "drop it at UPS within 10 days"
    )
    assert edited_text != original
    edited = await refresh(store, embed, embedder, edited_text)
    old_how = next(r for r in first.records if r.heading_path.endswith("How to Return an Item"))
    new_how = next(r for r in edited.records if r.heading_path.endswith("How to Return an Item"))
    assert edited.new_ids == [new_how.chunk_id] and edited.deleted_ids == [old_how.chunk_id]
    assert len(edited.unchanged_ids) == n - 1
    assert embed.calls == [[f"{new_how.heading_path}\n{new_how.text}"]]

    head, _, _ = edited_text.partition("## Exchanges")
    removed = await refresh(store, embed, embedder, head)
    exchanges = next(r for r in first.records if r.heading_path.endswith("Exchanges"))
    assert removed.new_ids == [] and removed.deleted_ids == [exchanges.chunk_id]
    stored = store.source_chunk_ids(tenant_id=TENANT_ID, brand_id=BRAND_ID, source="returns.md")
    assert (
        stored == set(removed.chunk_ids) and exchanges.chunk_id not in stored and new_how.chunk_id in stored
    )

    emptied = await refresh(store, embed, embedder, "")
    assert emptied.records == [] and set(emptied.deleted_ids) == stored
    assert store.source_chunk_ids(tenant_id=TENANT_ID, brand_id=BRAND_ID, source="returns.md") == set()


async def test_refreshing_one_source_leaves_other_sources_alone(
    store: VectorStore, embedder: SentenceTransformerEmbedder
) -> None:
    embed = embedder.aembed
    shipping = await refresh(
        store, embed, embedder, (DEMO_DIR / "shipping.md").read_text(), uri="shipping.md"
    )
    await refresh(store, embed, embedder, "# Returns\n30 days.", uri="returns.md")
    await refresh(store, embed, embedder, "", uri="returns.md")
    assert store.source_chunk_ids(tenant_id=TENANT_ID, brand_id=BRAND_ID, source="shipping.md") == set(
        shipping.chunk_ids
    )


async def test_unsupported_content_type_is_refused(
    store: VectorStore, embedder: SentenceTransformerEmbedder
) -> None:
    with pytest.raises(UnsupportedMediaType):
        await refresh(store, embedder.aembed, embedder, "%PDF-1.7", content_type="application/pdf")


@pytest.mark.parametrize(
    ("question", "source", "heading"),
    [
        ("how long do I have to return an item", "returns.md", "Returns & Refunds > Return Window"),
        ("is shipping free?", "shipping.md", "Shipping Policy > Free Shipping"),
        ("what warranty does the Summit 45L backpack have", "warranty.md", "Warranty > Summit 45L Backpack"),
    ],
)
async def test_retrieve_context_answers_demo_questions(
    store: VectorStore, embedder: SentenceTransformerEmbedder, question: str, source: str, heading: str
) -> None:
    for path in DOCUMENTS:
        await refresh(store, embedder.aembed, embedder, path.read_text(), uri=path.name)
    hits = await retrieve_context(
        store=store, embed=embedder.aembed, tenant_id=TENANT_ID, brand_id=BRAND_ID, query=question, top_k=4
    )
    assert len(hits) == 4
    assert (hits[0].source, hits[0].heading_path) == (source, heading)
    assert hits[0].score >= RETRIEVAL.min_score
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # another brand of the same tenant has no knowledge yet
    other = await retrieve_context(
        store=store,
        embed=embedder.aembed,
        tenant_id=TENANT_ID,
        brand_id=uuid.uuid4(),
        query=question,
        top_k=4,
    )
    assert other == []


async def test_seed_demo_brand_is_idempotent(database_url: str) -> None:
    from common.db import repositories as repo
    from common.db.session import make_engine, make_sessionmaker

    engine = make_engine(database_url, pool_size=1)
    try:
        sessionmaker = make_sessionmaker(engine)
        first = await seed_demo_brand(sessionmaker)
        second = await seed_demo_brand(sessionmaker)
        assert first == second == load_demo_brand()
        async with sessionmaker() as session:
            stored = await repo.get_brand_profile(session, brand_id=BRAND_ID)
        assert stored == load_demo_brand().brand
    finally:
        await engine.dispose()
