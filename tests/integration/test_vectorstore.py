"""VectorStore against qdrant-client local mode on disk: scoping, ids, metadata checks, error mapping."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import models  # only to fake a collection made by another tool

from common import vectorstore
from common.config import EmbeddingSettings, QdrantSettings, Settings
from common.errors import EmbeddingMismatch, VectorStoreError
from common.schemas import ChunkRecord
from common.vectorstore import VectorStore, chunk_id, collection_name

pytestmark = pytest.mark.integration

DIM = 384
TENANT_A, TENANT_B = uuid.UUID(int=0xA), uuid.UUID(int=0xB)
BRAND_A, BRAND_B = uuid.UUID(int=0xA1), uuid.UUID(int=0xB1)


def settings_for(path: Path, *, model: str = "all-MiniLM-L6-v2", dimension: int = DIM) -> Settings:
    return Settings(
        qdrant=QdrantSettings(path=path),
        embeddings=EmbeddingSettings(model_name=model, dimension=dimension),
    )


@pytest.fixture
def qdrant_path(tmp_path: Path) -> Path:
    return tmp_path / "qdrant"


@pytest.fixture
def store(qdrant_path: Path) -> Iterator[VectorStore]:
    s = VectorStore(settings_for(qdrant_path))
    s.ensure_collection("all-MiniLM-L6-v2", DIM)
    yield s
    s.close()


def axis(i: int, *, dim: int = DIM) -> list[float]:
    """A unit vector along axis ``i``: orthogonal test vectors with known cosine similarities."""
    v = [0.0] * dim
    v[i] = 1.0
    return v


def record(
    text: str,
    *,
    tenant: uuid.UUID = TENANT_A,
    brand: uuid.UUID = BRAND_A,
    source: str = "returns.md",
    heading: str = "Returns",
    ordinal: int = 0,
) -> ChunkRecord:
    cid = chunk_id(tenant_id=tenant, brand_id=brand, source=source, heading_path=heading, text=text)
    return ChunkRecord(
        chunk_id=cid,
        tenant_id=tenant,
        brand_id=brand,
        source=source,
        heading_path=heading,
        ordinal=ordinal,
        text=text,
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
    )


def test_collection_is_named_per_model_and_records_it(store: VectorStore, qdrant_path: Path) -> None:
    assert store.collection == "knowledge__all-minilm-l6-v2__384"
    assert collection_name(prefix="kb", model_name="BAAI/bge-small-en-v1.5", dimension=384) == (
        "kb__baai-bge-small-en-v1-5__384"
    )
    store.close()
    reopened = VectorStore(settings_for(qdrant_path))
    try:
        assert reopened.ensure_collection("all-MiniLM-L6-v2", DIM) == store.collection
    finally:
        reopened.close()


def test_search_returns_the_nearest_chunk_first_with_its_citation_fields(store: VectorStore) -> None:
    chunks = [
        record("30 days to return.", heading="Returns > Return Window"),
        record("Free shipping over $75.", source="shipping.md", heading="Shipping > Free Shipping"),
        record("Lifetime warranty on poles.", source="warranty.md", heading="Warranty > TrailBlazer 2 Tent"),
    ]
    store.upsert(chunks, [axis(0), axis(1), axis(2)])
    query = [0.0] * DIM
    query[1], query[0] = 0.9, 0.3
    hits = store.search(tenant_id=TENANT_A, brand_id=BRAND_A, vector=query, top_k=2)
    assert [h.chunk_id for h in hits] == [chunks[1].chunk_id, chunks[0].chunk_id]
    best = hits[0]
    assert (best.text, best.source, best.heading_path) == (
        "Free shipping over $75.",
        "shipping.md",
        "Shipping > Free Shipping",
    )
    assert best.score == pytest.approx(0.9 / (0.9**2 + 0.3**2) ** 0.5, abs=1e-5)
    assert hits[0].score > hits[1].score


def test_tenants_and_brands_never_see_each_others_chunks(store: VectorStore) -> None:
    same_text = "Our return window is 30 days."
    mine = record(same_text, tenant=TENANT_A, brand=BRAND_A)
    other_tenant = record(same_text, tenant=TENANT_B, brand=BRAND_B)
    other_brand = record(same_text, tenant=TENANT_A, brand=BRAND_B)
    assert len({mine.chunk_id, other_tenant.chunk_id, other_brand.chunk_id}) == 3
    # the other tenant's point is the exact match; mine is farther away
    store.upsert([mine, other_tenant, other_brand], [axis(1), axis(0), axis(0)])
    hits = store.search(tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(0), top_k=10)
    assert [h.chunk_id for h in hits] == [mine.chunk_id]
    assert store.search(tenant_id=TENANT_B, brand_id=BRAND_A, vector=axis(0), top_k=10) == []
    # deleting by id from another scope does nothing
    store.delete(tenant_id=TENANT_B, brand_id=BRAND_B, chunk_ids=[mine.chunk_id])
    assert store.source_chunk_ids(tenant_id=TENANT_A, brand_id=BRAND_A, source="returns.md") == {
        mine.chunk_id
    }


def test_there_is_no_unscoped_query(store: VectorStore) -> None:
    with pytest.raises(TypeError):
        store.search(vector=axis(0), top_k=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        store.search(tenant_id=None, brand_id=BRAND_A, vector=axis(0), top_k=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.source_chunk_ids(tenant_id=TENANT_A, brand_id="*", source="x")  # type: ignore[arg-type]


def test_chunk_ids_are_deterministic_and_upserts_update_in_place(store: VectorStore) -> None:
    fields: dict[str, Any] = {
        "tenant_id": TENANT_A,
        "brand_id": BRAND_A,
        "source": "a.md",
        "heading_path": "H",
        "text": "t",
    }
    first = chunk_id(**fields)
    assert first == chunk_id(**fields)
    assert uuid.UUID(first).version == 5
    for key, other in [
        ("tenant_id", TENANT_B),
        ("brand_id", BRAND_B),
        ("source", "b.md"),
        ("heading_path", "H2"),
        ("text", "t2"),
    ]:
        assert chunk_id(**{**fields, key: other}) != first, key
    rec = record("same text")
    store.upsert([rec], [axis(0)])
    store.upsert([rec.model_copy(update={"ordinal": 7})], [axis(0)])
    assert store.source_chunk_ids(tenant_id=TENANT_A, brand_id=BRAND_A, source="returns.md") == {rec.chunk_id}


def test_source_chunk_ids_pages_through_scroll_and_delete_removes(
    store: VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vectorstore, "SCROLL_PAGE", 3)
    monkeypatch.setattr(vectorstore, "UPSERT_BATCH", 4)
    recs = [record(f"chunk {i}", ordinal=i) for i in range(10)]
    store.upsert(recs, [axis(i) for i in range(10)])
    store.upsert([record("elsewhere", source="other.md")], [axis(20)])
    ids = store.source_chunk_ids(tenant_id=TENANT_A, brand_id=BRAND_A, source="returns.md")
    assert ids == {r.chunk_id for r in recs}
    store.delete(tenant_id=TENANT_A, brand_id=BRAND_A, chunk_ids=[r.chunk_id for r in recs[:4]])
    left = store.source_chunk_ids(tenant_id=TENANT_A, brand_id=BRAND_A, source="returns.md")
    assert left == {r.chunk_id for r in recs[4:]}
    hits = store.search(tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(0), top_k=20)
    assert recs[0].chunk_id not in {h.chunk_id for h in hits}


def test_another_model_with_the_same_slug_is_refused(store: VectorStore, qdrant_path: Path) -> None:
    store.close()
    other = VectorStore(settings_for(qdrant_path))
    try:
        with pytest.raises(EmbeddingMismatch, match="all-MiniLM-L6-v2") as info:
            other.ensure_collection("all_minilm_l6_v2", DIM)  # same slug, different model name
        assert info.value.retryable is False
    finally:
        other.close()


def test_reopening_with_another_dimension_never_mixes_vectors(store: VectorStore, qdrant_path: Path) -> None:
    store.upsert([record("kept")], [axis(0)])
    store.close()
    small = VectorStore(settings_for(qdrant_path, dimension=8))
    try:
        # settings name the 8-dimensional model: its own, empty collection
        assert small.collection == "knowledge__all-minilm-l6-v2__8"
        assert small.search(tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(0, dim=8), top_k=5) == []
        # vectors of the old dimension are refused before they reach Qdrant
        with pytest.raises(EmbeddingMismatch, match="384"):
            small.upsert([record("x")], [axis(0)])
        with pytest.raises(EmbeddingMismatch):
            small.search(tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(0), top_k=5)
        # a collection under the 384 name that holds another vector size is refused too
        small._client.create_collection(
            "knowledge__tampered__384",
            vectors_config={"dense": models.VectorParams(size=8, distance=models.Distance.COSINE)},
            metadata={"embedding_model": "tampered", "embedding_dimension": 384},
        )
        with pytest.raises(EmbeddingMismatch, match="vector size 8"):
            small.ensure_collection("tampered", 384)
    finally:
        small.close()


def test_qdrant_failures_map_to_vector_store_error(store: VectorStore, qdrant_path: Path) -> None:
    with pytest.raises(VectorStoreError, match="already accessed"):
        VectorStore(settings_for(qdrant_path))  # local mode: one process (client) per path
    store.close()
    with pytest.raises(VectorStoreError) as info:
        store.search(tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(0), top_k=1)
    assert info.value.retryable is True


def test_upsert_needs_one_vector_per_chunk(store: VectorStore) -> None:
    with pytest.raises(ValueError, match="2 chunks but 1 vectors"):
        store.upsert([record("a"), record("b")], [axis(0)])
