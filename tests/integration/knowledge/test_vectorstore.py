"""Contract tests of VectorStore, run against every engine it has.

* ``edge``: Qdrant Edge on disk (the default engine), always;
* ``server-api``: the server engine (qdrant-client) on qdrant-client's local mode, which implements the
  server's API in process: always, because no Qdrant server runs in CI;
* ``server``: the server engine against a real Qdrant where ``QDRANT_URL`` is set; skipped otherwise.

Engine-specific behaviour (directory locks, collections made by other tools) is tested per engine below.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient, models  # the server engine's stand-in; fakes foreign collections
from structlog.testing import capture_logs

from common.config import EmbeddingSettings, QdrantSettings, Settings
from common.errors import EmbeddingMismatch, VectorStoreError
from common.knowledge import vectorstore
from common.knowledge.records import chunk_id
from common.knowledge.vectorstore import VectorStore, collection_name
from common.schemas import ChunkRecord

pytestmark = [
    pytest.mark.integration,
    # The local-mode stand-in searches exactly and says so for every hnsw_ef; a server uses it.
    pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning"),
]

DIM = 384
TENANT_A, TENANT_B = uuid.UUID(int=0xA), uuid.UUID(int=0xB)
BRAND_A, BRAND_B = uuid.UUID(int=0xA1), uuid.UUID(int=0xB1)
ENGINES = ["edge", "server-api", "server"]
Opener = Callable[..., VectorStore]


def settings_for(
    path: Path,
    *,
    model: str = "all-MiniLM-L6-v2",
    dimension: int = DIM,
    url: str | None = None,
    prefix: str = "knowledge",
) -> Settings:
    return Settings(
        qdrant=QdrantSettings(path=path, url=url, collection_prefix=prefix),
        embeddings=EmbeddingSettings(model_name=model, dimension=dimension),
    )


@pytest.fixture
def qdrant_path(tmp_path: Path) -> Path:
    return tmp_path / "qdrant"


@pytest.fixture(params=ENGINES)
def open_store(request: pytest.FixtureRequest, qdrant_path: Path) -> Opener:
    """Opens a store on this test's data (the same data on every call), with the engine of the param."""
    engine = request.param
    if engine == "edge":
        return lambda **kw: VectorStore(settings_for(qdrant_path, **kw))
    if engine == "server-api":
        return lambda **kw: VectorStore(
            settings_for(qdrant_path, **kw), client=QdrantClient(path=str(qdrant_path / "local"))
        )
    url = os.environ.get("QDRANT_URL")
    if not url:
        pytest.skip("QDRANT_URL is not set: no Qdrant server to run the server engine against")
    prefix = f"test{uuid.uuid4().hex[:12]}"  # a server outlives the test: collections of its own

    def opener(**kw: Any) -> VectorStore:
        return VectorStore(settings_for(qdrant_path, url=url, prefix=prefix, **kw))

    return opener


@pytest.fixture
def store(open_store: Opener) -> Iterator[VectorStore]:
    s = open_store()
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


def test_collection_is_named_per_model_and_records_it(store: VectorStore, open_store: Opener) -> None:
    assert store.collection.endswith("knowledge__all-minilm-l6-v2__384__hybrid".removeprefix("knowledge"))
    assert collection_name(prefix="kb", model_name="BAAI/bge-small-en-v1.5", dimension=384) == (
        "kb__baai-bge-small-en-v1-5__384__hybrid"
    )
    store.upsert([record("kept across restarts")], [axis(0)])
    store.close()
    reopened = open_store()
    try:
        assert reopened.ensure_collection("all-MiniLM-L6-v2", DIM) == store.collection
        hits = reopened.search(tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(0), top_k=3)
        assert [h.text for h in hits] == ["kept across restarts"]
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
    # re-ingestion of the same chunk id: its payload and vector are replaced, not duplicated
    store.upsert([rec.model_copy(update={"ordinal": 7, "heading_path": "Returns > New"})], [axis(3)])
    assert store.source_chunk_ids(tenant_id=TENANT_A, brand_id=BRAND_A, source="returns.md") == {rec.chunk_id}
    (hit,) = store.search(tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(3), top_k=5)
    assert (hit.chunk_id, hit.heading_path, hit.score) == (rec.chunk_id, "Returns > New", pytest.approx(1.0))


def test_reingesting_a_source_deletes_its_vanished_chunks_only(store: VectorStore) -> None:
    kept, vanished = record("kept", ordinal=0), record("vanished", ordinal=1)
    other_source = record("vanished", source="other.md")
    store.upsert([kept, vanished, other_source], [axis(0), axis(1), axis(2)])
    stored = store.source_chunk_ids(tenant_id=TENANT_A, brand_id=BRAND_A, source="returns.md")
    new_ids = {kept.chunk_id}
    store.delete(tenant_id=TENANT_A, brand_id=BRAND_A, chunk_ids=sorted(stored - new_ids))
    assert store.source_chunk_ids(tenant_id=TENANT_A, brand_id=BRAND_A, source="returns.md") == new_ids
    hits = store.hybrid_search(
        tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(1), query_text="vanished", top_k=5
    )
    assert {h.chunk_id for h in hits} == {kept.chunk_id, other_source.chunk_id}


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


def test_another_model_with_the_same_slug_is_refused(store: VectorStore, open_store: Opener) -> None:
    store.close()
    other = open_store()
    try:
        with pytest.raises(EmbeddingMismatch, match="all-MiniLM-L6-v2") as info:
            other.ensure_collection("all_minilm_l6_v2", DIM)  # same slug, different model name
        assert info.value.retryable is False
    finally:
        other.close()


def test_reopening_with_another_dimension_never_mixes_vectors(store: VectorStore, open_store: Opener) -> None:
    store.upsert([record("kept")], [axis(0)])
    store.close()
    small = open_store(dimension=8)
    try:
        # settings name the 8-dimensional model: its own, empty collection
        assert small.collection.endswith("__all-minilm-l6-v2__8__hybrid")
        assert small.search(tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(0, dim=8), top_k=5) == []
        # vectors of the old dimension are refused before they reach Qdrant
        with pytest.raises(EmbeddingMismatch, match="384"):
            small.upsert([record("x")], [axis(0)])
        with pytest.raises(EmbeddingMismatch):
            small.search(tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(0), top_k=5)
    finally:
        small.close()


def test_server_engine_refuses_a_collection_of_another_vector_size(qdrant_path: Path) -> None:
    client = QdrantClient(path=str(qdrant_path / "local"))
    store = VectorStore(settings_for(qdrant_path), client=client)
    try:
        client.create_collection(
            "knowledge__tampered__384__hybrid",
            vectors_config={"dense": models.VectorParams(size=8, distance=models.Distance.COSINE)},
            sparse_vectors_config={"sparse": models.SparseVectorParams(modifier=models.Modifier.IDF)},
            metadata={"embedding_model": "tampered", "embedding_dimension": 384},
        )
        with pytest.raises(EmbeddingMismatch, match="vector size 8"):
            store.ensure_collection("tampered", 384)
    finally:
        store.close()


def test_edge_engine_refuses_a_collection_of_another_vector_size(qdrant_path: Path) -> None:
    small = VectorStore(settings_for(qdrant_path, model="tampered", dimension=8))
    small.upsert([record("eight")], [axis(0, dim=8)])
    small.close()
    # the 8-d shard is moved under the 384 name with metadata that claims 384
    root = qdrant_path / vectorstore.EDGE_DIR
    (root / "knowledge__tampered__8__hybrid").rename(root / "knowledge__tampered__384__hybrid")
    meta = root / "knowledge__tampered__384__hybrid" / "collection.json"
    meta.write_text(
        json.dumps({**json.loads(meta.read_text()), "embedding_dimension": 384, "vector_size": 384})
    )
    store = VectorStore(settings_for(qdrant_path))
    try:
        with pytest.raises(EmbeddingMismatch, match="expected vector size 384, but got 8"):
            store.ensure_collection("tampered", 384)
        # and a shard whose metadata says another size is refused before it is opened
        meta.write_text(
            json.dumps({**json.loads(meta.read_text()), "embedding_dimension": 8, "vector_size": 8})
        )
        with pytest.raises(EmbeddingMismatch, match="vector size 8"):
            store.ensure_collection("tampered", 384)
    finally:
        store.close()


def test_qdrant_failures_map_to_vector_store_error(store: VectorStore) -> None:
    store.close()
    with pytest.raises(VectorStoreError) as info:
        store.search(tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(0), top_k=1)
    assert info.value.retryable is True


def test_edge_directory_has_one_owner_with_a_clear_error(qdrant_path: Path) -> None:
    first = VectorStore(settings_for(qdrant_path))
    try:
        with pytest.raises(VectorStoreError, match="already open in another process") as info:
            VectorStore(settings_for(qdrant_path))
        assert info.value.details["path"] == str(qdrant_path / "edge")
    finally:
        first.close()
    VectorStore(settings_for(qdrant_path)).close()  # released on close


def test_server_api_local_mode_has_one_owner_too(qdrant_path: Path) -> None:
    store = VectorStore(settings_for(qdrant_path), client=QdrantClient(path=str(qdrant_path / "local")))
    try:
        with pytest.raises(RuntimeError, match="already accessed"):
            QdrantClient(path=str(qdrant_path / "local"))
    finally:
        store.close()


def test_edge_refusals_are_vector_store_errors_and_our_bugs_are_not(
    qdrant_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = VectorStore(settings_for(qdrant_path))
    try:
        scope = vectorstore._scope_filter(vectorstore._EDGE_FILTERS, TENANT_A, BRAND_A)
        # past the store's own dimension check, the engine itself refuses (a plain Exception in Rust)
        with pytest.raises(VectorStoreError, match="dimension") as info, store._call("search"):
            store._engine.dense(store.collection, vector=[1.0, 0.0, 0.0], scope=scope, top_k=1)
        assert info.value.details == {"operation": "search"}

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise AttributeError("'NoneType' object has no attribute 'points'")

        monkeypatch.setattr(store._engine, "dense", broken)
        with pytest.raises(AttributeError):  # not disguised as a retryable outage
            store.search(tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(0), top_k=1)
    finally:
        store.close()


def test_upsert_needs_one_vector_per_chunk(store: VectorStore) -> None:
    with pytest.raises(ValueError, match="2 chunks but 1 vectors"):
        store.upsert([record("a"), record("b")], [axis(0)])


# --- hybrid (dense + sparse) ----------------------------------------------------------------------


def test_hybrid_ranks_the_exact_term_first_where_dense_prefers_a_vague_neighbour(store: VectorStore) -> None:
    vague = record("Our tents are built for every season and trail.", heading="Tents")
    exact = record("The TrailBlazer 2 has a 3-year fabric warranty.", heading="Warranty > TrailBlazer 2")
    store.upsert([vague, exact], [axis(0), axis(1)])
    query = [0.0] * DIM
    query[0], query[1] = 0.8, 0.6  # dense prefers the vague chunk
    dense = store.search(tenant_id=TENANT_A, brand_id=BRAND_A, vector=query, top_k=2)
    assert [h.chunk_id for h in dense] == [vague.chunk_id, exact.chunk_id]
    hybrid = store.hybrid_search(
        tenant_id=TENANT_A, brand_id=BRAND_A, vector=query, query_text="TrailBlazer 2 warranty", top_k=2
    )
    assert [h.chunk_id for h in hybrid] == [exact.chunk_id, vague.chunk_id]
    # scores stay dense cosine similarities (what retrieval.min_score gates on), not RRF ranks
    assert [h.score for h in hybrid] == pytest.approx([0.6, 0.8], abs=1e-5)
    assert (hybrid[0].source, hybrid[0].heading_path) == ("returns.md", "Warranty > TrailBlazer 2")


def test_hybrid_never_returns_another_tenants_or_brands_identical_chunk(store: VectorStore) -> None:
    text = "Restocking fee: 15% on opened electronics."
    mine = record(text, heading="Fees", tenant=TENANT_A, brand=BRAND_A)
    other_tenant = record(text, heading="Fees", tenant=TENANT_B, brand=BRAND_B)
    other_brand = record(text, heading="Fees", tenant=TENANT_A, brand=BRAND_B)
    # the others are the exact dense match and the same lexical match
    store.upsert([mine, other_tenant, other_brand], [axis(1), axis(0), axis(0)])
    hits = store.hybrid_search(
        tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(0), query_text="restocking fee", top_k=10
    )
    assert [h.chunk_id for h in hits] == [mine.chunk_id]
    assert (
        store.hybrid_search(
            tenant_id=TENANT_B, brand_id=BRAND_A, vector=axis(0), query_text="restocking fee", top_k=10
        )
        == []
    )


def test_hybrid_query_filters_every_prefetch_and_the_outer_query(
    store: VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.upsert([record("Restocking fee applies.")], [axis(0)])
    seen: list[dict[str, Any]] = []
    real = vectorstore._scope_filter

    def spy(*args: Any, **kwargs: Any) -> Any:
        built = real(*args, **kwargs)
        seen.append({"args": args[1:], "kwargs": kwargs, "filter": built})
        return built

    monkeypatch.setattr(vectorstore, "_scope_filter", spy)
    hybrid = store._engine.hybrid
    calls: list[dict[str, Any]] = []

    def engine_spy(name: str, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return hybrid(name, **kwargs)

    monkeypatch.setattr(store._engine, "hybrid", engine_spy)
    store.hybrid_search(
        tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(0), query_text="restocking fee", top_k=3
    )
    (built,) = seen
    assert built["args"] == (TENANT_A, BRAND_A) and built["kwargs"] == {}
    (call,) = calls
    assert call["scope"] is built["filter"]  # the engine puts it on both prefetches and the outer query


def test_server_engine_filters_every_prefetch_and_the_outer_query(
    qdrant_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = QdrantClient(path=str(qdrant_path / "local"))
    store = VectorStore(settings_for(qdrant_path), client=client)
    try:
        store.upsert([record("Restocking fee applies.")], [axis(0)])
        seen: list[dict[str, Any]] = []
        real = client.query_points

        def spy(*args: Any, **kwargs: Any) -> Any:
            seen.append(kwargs)
            return real(*args, **kwargs)

        monkeypatch.setattr(client, "query_points", spy)
        hits = store.hybrid_search(
            tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(0), query_text="restocking fee", top_k=3
        )
        assert len(hits) == 1
        (call,) = seen
        expected = vectorstore._scope_filter(vectorstore._SERVER_FILTERS, TENANT_A, BRAND_A)
        assert call["query_filter"] == expected
        assert [p.using for p in call["prefetch"]] == ["dense", "sparse"]
        assert all(p.filter == expected for p in call["prefetch"])
        assert call["query"] == models.RrfQuery(rrf=models.Rrf(k=vectorstore.RRF_K))
    finally:
        store.close()


def test_edge_engine_filters_every_prefetch_and_the_outer_query(
    qdrant_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = VectorStore(settings_for(qdrant_path))
    try:
        store.upsert([record("Restocking fee applies.")], [axis(0)])
        shard = store._engine._shards[store.collection]  # type: ignore[attr-defined]
        seen: list[Any] = []

        class Spy:
            def query(self, request: Any) -> Any:
                seen.append(request)
                return shard.query(request)

            def close(self) -> None:
                shard.close()

        monkeypatch.setitem(store._engine._shards, store.collection, Spy())  # type: ignore[attr-defined]
        hits = store.hybrid_search(
            tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(0), query_text="restocking fee", top_k=3
        )
        assert len(hits) == 1
        (request,) = seen
        scopes = [request.filter, *(p.filter for p in request.prefetches)]
        assert len(scopes) == 3
        for scope in scopes:
            keys = [(c.key, c.match.value) for c in scope.must]
            assert keys == [("tenant_id", str(TENANT_A)), ("brand_id", str(BRAND_A))]
        assert isinstance(request.query, vectorstore.edge.Fusion.Rrf)
        assert request.query.k == vectorstore.RRF_K
    finally:
        store.close()


def test_sparse_terms_are_stable_lowercase_words_with_bm25_saturation() -> None:
    # BLAKE2b, not the per-process salted hash(): this constant holds in every process.
    assert vectorstore.term_index("trailblazer") == int.from_bytes(
        hashlib.blake2b(b"trailblazer", digest_size=4).digest(), "big"
    )
    assert vectorstore.lexical_tokens("TrailBlazer-2, ¿Envío GRATIS? 🏕️") == [
        "trailblazer",
        "2",
        "envío",
        "gratis",
    ]
    doc = vectorstore.sparse_terms("fee fee fee fee other")
    fee, other = vectorstore.term_index("fee"), vectorstore.term_index("other")
    assert doc[other] < doc[fee] < 4 * doc[other]  # more occurrences weigh more, but saturate
    assert vectorstore.sparse_terms("Fee FEE", query=True) == {fee: 1.0}
    assert vectorstore.sparse_terms("!!! ...") == {}


def test_query_without_word_tokens_falls_back_to_dense(store: VectorStore) -> None:
    chunk = record("Anything.")
    store.upsert([chunk], [axis(0)])
    hits = store.hybrid_search(tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(0), query_text="?!", top_k=3)
    assert [h.chunk_id for h in hits] == [chunk.chunk_id]


def test_an_old_dense_only_collection_is_never_queried(qdrant_path: Path) -> None:
    old_name = "knowledge__all-minilm-l6-v2__384"
    client = QdrantClient(path=str(qdrant_path / "local"))
    first = VectorStore(settings_for(qdrant_path), client=client)
    client.create_collection(
        old_name,
        vectors_config={"dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)},
        metadata={"embedding_model": "all-MiniLM-L6-v2", "embedding_dimension": DIM, "schema_version": 1},
    )
    client.upsert(
        old_name, [models.PointStruct(id=record("old").chunk_id, vector={"dense": axis(0)}, payload={})]
    )
    try:
        assert first.ensure_collection("all-MiniLM-L6-v2", DIM) == old_name + "__hybrid"
        assert (
            first.hybrid_search(
                tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(0), query_text="old", top_k=3
            )
            == []
        )
        # the old collection is left as it was, for the operator to drop after re-indexing
        assert client.count(old_name).count == 1
        # a dense-only collection under the hybrid name is refused, not queried with a sparse prefetch
        client.delete_collection(old_name + "__hybrid")
        client.create_collection(
            old_name + "__hybrid",
            vectors_config={"dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)},
            metadata={"embedding_model": "all-MiniLM-L6-v2", "embedding_dimension": DIM},
        )
        with pytest.raises(EmbeddingMismatch, match="no 'sparse' vector"):
            first.ensure_collection("all-MiniLM-L6-v2", DIM)
    finally:
        first.close()


def test_edge_builds_its_index_on_open_past_the_threshold_and_answers_the_same(
    qdrant_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = VectorStore(settings_for(qdrant_path))
    recs = [record(f"chunk {i}", ordinal=i) for i in range(40)]
    store.upsert(recs, [axis(i) for i in range(40)])
    before = store.hybrid_search(
        tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(3), query_text="chunk 3", top_k=4
    )
    store.close()
    monkeypatch.setattr(vectorstore, "INDEX_ON_OPEN_POINTS", 30)
    with capture_logs() as logs:
        reopened = VectorStore(settings_for(qdrant_path))
        reopened.ensure_collection("all-MiniLM-L6-v2", DIM)
    try:
        (line,) = [e for e in logs if e["event"] == "vectorstore.index_on_open"]
        assert line["unindexed_points"] == 40
        after = reopened.hybrid_search(
            tenant_id=TENANT_A, brand_id=BRAND_A, vector=axis(3), query_text="chunk 3", top_k=4
        )
        assert [h.chunk_id for h in after] == [h.chunk_id for h in before]
        assert after[0].chunk_id == recs[3].chunk_id
        assert reopened.optimize() is False  # nothing left to optimise
    finally:
        reopened.close()


def test_brand_sources_and_delete_source_stay_in_scope(store: VectorStore) -> None:
    a = record("A", source="a.md")
    b = record("B", source="b.md")
    foreign = record("B", source="b.md", tenant=TENANT_B, brand=BRAND_B)
    store.upsert([a, b, foreign], [axis(0), axis(1), axis(1)])
    assert store.brand_sources(tenant_id=TENANT_A, brand_id=BRAND_A) == {"a.md", "b.md"}
    store.delete_source(tenant_id=TENANT_A, brand_id=BRAND_A, source="b.md")
    assert store.brand_sources(tenant_id=TENANT_A, brand_id=BRAND_A) == {"a.md"}
    assert store.brand_sources(tenant_id=TENANT_B, brand_id=BRAND_B) == {"b.md"}


def test_chunk_ids_by_source_answers_many_sources_in_scope_across_pages(
    store: VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vectorstore, "SCROLL_PAGE", 2)
    a = [record(f"a{i}", source="a.md", ordinal=i) for i in range(3)]
    b = record("b", source="b.md")
    skipped = record("c", source="c.md")
    foreign = [
        record("a0", source="a.md", tenant=TENANT_B, brand=BRAND_B),
        record("b", source="b.md", brand=BRAND_B),
    ]
    store.upsert([*a, b, skipped, *foreign], [axis(i) for i in range(7)])
    found = store.chunk_ids_by_source(
        tenant_id=TENANT_A, brand_id=BRAND_A, sources=["a.md", "b.md", "new.md"]
    )
    assert found == {"a.md": {r.chunk_id for r in a}, "b.md": {b.chunk_id}, "new.md": set()}
    assert store.chunk_ids_by_source(tenant_id=TENANT_A, brand_id=BRAND_A, sources=[]) == {}
    with pytest.raises(TypeError):
        store.chunk_ids_by_source(tenant_id=TENANT_A, brand_id="*", sources=["a.md"])  # type: ignore[arg-type]
