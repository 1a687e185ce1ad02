"""Knowledge sync and hybrid retrieval with the real local model and embedded Qdrant, on the demo brand."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from common.config import QdrantSettings, RetrievalSettings, Settings
from common.errors import EmbeddingMismatch, InvalidInput, UnsupportedMediaType
from common.knowledge.embeddings import SentenceTransformerEmbedder, build_embedder
from common.knowledge.parsing import DOCX, parse_document
from common.knowledge.reranking import LexicalReranker, build_reranker
from common.knowledge.sync import (
    EmbedFn,
    SourceSync,
    initialize_brand_knowledge,
    refresh_brand_knowledge,
    refresh_source,
    retrieve_context,
)
from common.knowledge.vectorstore import VectorStore
from common.schemas import RetrievedChunk
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
@pytest.mark.parametrize("mode", ["hybrid", "dense"])
async def test_retrieve_context_answers_demo_questions(
    store: VectorStore,
    embedder: SentenceTransformerEmbedder,
    question: str,
    source: str,
    heading: str,
    mode: Literal["hybrid", "dense"],
) -> None:
    for path in DOCUMENTS:
        await refresh(store, embedder.aembed, embedder, path.read_text(), uri=path.name)
    hits = await retrieve_context(
        store=store,
        embed=embedder.aembed,
        tenant_id=TENANT_ID,
        brand_id=BRAND_ID,
        query=question,
        top_k=4,
        mode=mode,
    )
    assert len(hits) == 4
    assert (hits[0].source, hits[0].heading_path) == (source, heading)
    assert hits[0].score >= RETRIEVAL.min_score
    if mode == "dense":  # hybrid order is RRF's; its scores are still the dense cosine similarities
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # another brand of the same tenant has no knowledge yet
    other = await retrieve_context(
        store=store,
        embed=embedder.aembed,
        tenant_id=TENANT_ID,
        brand_id=uuid.uuid4(),
        query=question,
        top_k=4,
        mode=mode,
    )
    assert other == []


async def test_seed_demo_brand_is_idempotent(database_url: str) -> None:
    from sqlalchemy import func, select

    from common.db import repositories as repo
    from common.db.models import AuditEntry
    from common.db.session import make_engine, make_sessionmaker

    engine = make_engine(database_url, pool_size=1)
    try:
        sessionmaker = make_sessionmaker(engine)
        first = await seed_demo_brand(sessionmaker)
        second = await seed_demo_brand(sessionmaker)
        # Seeding the same persona again makes no new persona version.
        assert first == second and second.brand.persona_version >= 1
        unversioned = dataclasses.replace(second.brand, persona_version=0)
        assert dataclasses.replace(second, brand=unversioned) == load_demo_brand()
        async with sessionmaker() as session:
            stored = await repo.get_brand_profile(session, brand_id=BRAND_ID)
            rules = await repo.list_automation_rules(session, brand_id=BRAND_ID, include_disabled=True)
            edits = await session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.tenant_id == second.tenant.id, AuditEntry.action.like("rule.%"))
            )
        assert stored == second.brand
        # brand.yaml's rules, once each, and not rewritten when unchanged (one audit entry per rule).
        assert sorted((r.name, r.kind) for r in rules) == [
            ("tickets on request", "offer"),
            ("what we can help with", "suggest"),
        ]
        assert edits == 2
    finally:
        await engine.dispose()


# --- hybrid retrieval on the demo brand plus a parts list with part numbers ----------------------

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "docs"
OTHER_TENANT, OTHER_BRAND = uuid.UUID(int=0xB), uuid.UUID(int=0xB1)


@pytest.fixture(scope="module")
def indexed(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
) -> Iterator[VectorStore]:
    """Demo documents + parts.md for the demo brand, and the same parts.md for another tenant's brand."""
    import asyncio

    s = VectorStore(Settings(qdrant=QdrantSettings(path=tmp_path_factory.mktemp("kb") / "qdrant")))
    s.ensure_collection(embedder.model_name, embedder.dimension)
    parts = (FIXTURES / "parts.md").read_text()

    async def index() -> None:
        for path in DOCUMENTS:
            await refresh(s, embedder.aembed, embedder, path.read_text(), uri=path.name)
        await refresh(s, embedder.aembed, embedder, parts, uri="parts.md")
        await refresh(
            s, embedder.aembed, embedder, parts, uri="parts.md", tenant_id=OTHER_TENANT, brand_id=OTHER_BRAND
        )

    asyncio.run(index())
    yield s
    s.close()


async def search(
    store: VectorStore, embedder: SentenceTransformerEmbedder, query: str, mode: str
) -> list[RetrievedChunk]:
    return await retrieve_context(
        store=store,
        embed=embedder.aembed,
        tenant_id=TENANT_ID,
        brand_id=BRAND_ID,
        query=query,
        top_k=8,
        mode=mode,  # type: ignore[arg-type]
    )


async def ranked(
    store: VectorStore, embedder: SentenceTransformerEmbedder, query: str, mode: str
) -> list[str]:
    return [f"{h.source}#{h.heading_path}" for h in await search(store, embedder, query, mode)]


@pytest.mark.parametrize(
    ("query", "target"),
    [
        ("RF-7730", "parts.md#Replacement Parts > Rainfly"),
        ("SK-1180", "parts.md#Replacement Parts > Stakes"),
        ("TP-2291", "parts.md#Replacement Parts > Tent Poles"),
        ("restocking fee", "parts.md#Replacement Parts > Opened Electronics"),
        # two chunks name it (the warranty and the pole set); the top hit must be one of them
        ("TrailBlazer 2", "warranty.md#Warranty > TrailBlazer 2 Tent"),
    ],
)
async def test_hybrid_ranks_exact_names_first_and_never_below_dense(
    indexed: VectorStore, embedder: SentenceTransformerEmbedder, query: str, target: str
) -> None:
    hits = await search(indexed, embedder, query, "hybrid")
    hybrid = [f"{h.source}#{h.heading_path}" for h in hits]
    dense = await ranked(indexed, embedder, query, "dense")
    assert query.lower() in f"{hits[0].heading_path} {hits[0].text}".lower()
    assert target in hybrid[:2] and target in dense
    assert hybrid.index(target) <= dense.index(target)


async def test_dense_alone_misses_a_part_number_that_hybrid_finds(
    indexed: VectorStore, embedder: SentenceTransformerEmbedder
) -> None:
    # Measured with all-MiniLM-L6-v2: a vaguely similar paragraph outranks the exact part number.
    dense = await ranked(indexed, embedder, "RF-7730", "dense")
    hybrid = await ranked(indexed, embedder, "RF-7730", "hybrid")
    assert dense[0] != "parts.md#Replacement Parts > Rainfly"
    assert hybrid[0] == "parts.md#Replacement Parts > Rainfly"


async def test_hybrid_never_returns_another_tenants_identical_chunks(
    indexed: VectorStore, embedder: SentenceTransformerEmbedder
) -> None:
    mine = indexed.source_chunk_ids(tenant_id=TENANT_ID, brand_id=BRAND_ID, source="parts.md")
    theirs = indexed.source_chunk_ids(tenant_id=OTHER_TENANT, brand_id=OTHER_BRAND, source="parts.md")
    assert mine and theirs and not mine & theirs  # same text, different ids
    for tenant, brand, own, foreign in [
        (TENANT_ID, BRAND_ID, mine, theirs),
        (OTHER_TENANT, OTHER_BRAND, theirs, mine),
    ]:
        hits = await retrieve_context(
            store=indexed,
            embed=embedder.aembed,
            tenant_id=tenant,
            brand_id=brand,
            query="RF-7730 restocking fee",
            top_k=20,
        )
        ids = {h.chunk_id for h in hits}
        assert ids and not ids & foreign
        if tenant == OTHER_TENANT:
            assert ids == own  # the other brand holds parts.md only
    # a tenant asking for another tenant's brand gets nothing
    assert (
        await retrieve_context(
            store=indexed,
            embed=embedder.aembed,
            tenant_id=OTHER_TENANT,
            brand_id=BRAND_ID,
            query="RF-7730",
            top_k=5,
        )
        == []
    )


async def test_lexical_reranker_reorders_fused_candidates_by_query_coverage(
    indexed: VectorStore, embedder: SentenceTransformerEmbedder
) -> None:
    query = "restocking fee for opened headlamps"
    reranked = await retrieve_context(
        store=indexed,
        embed=embedder.aembed,
        tenant_id=TENANT_ID,
        brand_id=BRAND_ID,
        query=query,
        top_k=3,
        candidates=10,
        reranker=LexicalReranker(),
    )
    assert len(reranked) == 3
    assert reranked[0].heading_path == "Replacement Parts > Opened Electronics"
    assert all(h.source and h.heading_path and -1.0 <= h.score <= 1.0 for h in reranked)
    assert build_reranker(RetrievalSettings()) is None  # off by default
    assert isinstance(build_reranker(RetrievalSettings(reranker="lexical")), LexicalReranker)


def test_lexical_reranker_prefers_full_coverage_then_phrases_then_incoming_order() -> None:
    def chunk(cid: str, text: str) -> RetrievedChunk:
        return RetrievedChunk(chunk_id=cid, text=text, source="s.md", heading_path="H", score=0.5)

    candidates = [
        chunk("fee-only", "A fee applies."),
        chunk("both-apart", "Fee schedule: the restocking rules."),
        chunk("phrase", "A restocking fee of 15%."),
        chunk("none", "Unrelated."),
    ]
    out = LexicalReranker().rerank("Restocking fee?", candidates, top_k=3)
    assert [c.chunk_id for c in out] == ["phrase", "both-apart", "fee-only"]
    assert LexicalReranker().rerank("?!", candidates, top_k=2) == candidates[:2]


# --- brand-level sync and parsed formats ----------------------------------------------------------


async def test_initialize_then_refresh_brand_knowledge(
    store: VectorStore, embedder: SentenceTransformerEmbedder
) -> None:
    embed = CountingEmbed(embedder)
    kw: dict[str, Any] = {
        "store": store,
        "embed": embed,
        "count_tokens": embedder.count_tokens,
        "tenant_id": TENANT_ID,
        "brand_id": BRAND_ID,
        "retrieval": RETRIEVAL,
    }
    csv_doc = parse_document((FIXTURES / "faq.csv").read_bytes(), uri="faq.csv")
    html_doc = parse_document((FIXTURES / "page.html").read_bytes(), uri="care.html")
    parts_doc = parse_document((FIXTURES / "parts.md").read_bytes(), uri="parts.md")
    first = await initialize_brand_knowledge(documents=[csv_doc, html_doc, parts_doc], **kw)
    assert first.written == sum(len(s.records) for s in first.sources) > 0 and first.removed_sources == []
    assert store.brand_sources(tenant_id=TENANT_ID, brand_id=BRAND_ID) == {"faq.csv", "care.html", "parts.md"}

    # unchanged → nothing embedded or written
    embed.calls.clear()
    again = await initialize_brand_knowledge(documents=[csv_doc, html_doc, parts_doc], **kw)
    assert (again.written, again.deleted, embed.calls) == (0, 0, [])
    assert again.unchanged == first.written

    # one section changed, one section removed, one source gone
    edited = (FIXTURES / "parts.md").read_text().replace("packs of eight", "packs of ten")
    edited, _, _ = edited.partition("## Opened Electronics")
    new_parts = parse_document(edited.encode(), uri="parts.md")
    refreshed = await refresh_brand_knowledge(documents=[csv_doc, new_parts], **kw)
    parts_sync = refreshed.sources[1]
    assert refreshed.removed_sources == ["care.html"]
    assert [r.heading_path for r in parts_sync.records if r.chunk_id in parts_sync.new_ids] == [
        "Replacement Parts > Stakes"
    ]
    assert len(parts_sync.deleted_ids) == 2  # old Stakes + Opened Electronics
    assert embed.calls == [["Replacement Parts > Stakes\n" + parts_sync.records[-1].text]]
    assert store.brand_sources(tenant_id=TENANT_ID, brand_id=BRAND_ID) == {"faq.csv", "parts.md"}
    assert store.source_chunk_ids(tenant_id=TENANT_ID, brand_id=BRAND_ID, source="care.html") == set()

    # FAQ entries are retrievable one question per chunk, with their citation fields
    hits = await retrieve_context(
        store=store,
        embed=embedder.aembed,
        tenant_id=TENANT_ID,
        brand_id=BRAND_ID,
        query="ship to Canada?",
        top_k=2,
    )
    assert (hits[0].source, hits[0].heading_path) == ("faq.csv", "FAQ > Do you ship to Canada?")
    assert (
        hits[0].text
        == "Q: Do you ship to Canada?\nA: Yes, standard shipping to Canada takes 5-8 business days."
    )

    with pytest.raises(InvalidInput, match="distinct uris"):
        await refresh_brand_knowledge(documents=[csv_doc, csv_doc], **kw)


async def test_refresh_source_parses_html_and_csv_text(
    store: VectorStore, embedder: SentenceTransformerEmbedder
) -> None:
    html = await refresh(
        store,
        embedder.aembed,
        embedder,
        (FIXTURES / "page.html").read_text(),
        uri="care.html",
        content_type="text/html",
    )
    texts = " ".join(r.text for r in html.records)
    assert "NAV-MENU-TEXT" not in texts and "mildew" in texts
    assert "FAQ > Can I store my tent wet?" in {r.heading_path for r in html.records}
    with pytest.raises(UnsupportedMediaType):
        await refresh(store, embedder.aembed, embedder, "PK", content_type=DOCX)


async def test_embedding_model_or_dimension_mismatch_still_refused(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    path = tmp_path / "qdrant"
    first = VectorStore(Settings(qdrant=QdrantSettings(path=path)))
    first.ensure_collection(embedder.model_name, embedder.dimension)
    first.close()
    other = VectorStore(Settings(qdrant=QdrantSettings(path=path)))
    try:
        with pytest.raises(EmbeddingMismatch):
            other.ensure_collection("all_minilm_l6_v2", embedder.dimension)  # same slug, other model
        other.ensure_collection("all-MiniLM-L6-v2", 8)  # its own collection ...

        async def wrong_size(texts: list[str]) -> list[list[float]]:
            return await embedder.aembed(texts)  # ... but 384-dimensional vectors

        with pytest.raises(EmbeddingMismatch):
            await refresh(other, wrong_size, embedder, "# A\nText.")
        with pytest.raises(EmbeddingMismatch):
            await retrieve_context(
                store=other, embed=wrong_size, tenant_id=TENANT_ID, brand_id=BRAND_ID, query="text", top_k=1
            )
    finally:
        other.close()
