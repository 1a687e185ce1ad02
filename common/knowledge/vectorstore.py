"""Knowledge chunks in Qdrant — the only module that imports ``qdrant_client``.

Layout, after Qdrant's multitenancy guide:

* one collection per embedding model, named ``<prefix>__<model-slug>__<dimension>__hybrid``, with a named
  dense vector ``"dense"`` (cosine) and a named sparse vector ``"sparse"`` (BM25-style term weights, IDF
  applied by Qdrant: ``modifier=IDF``). The ``__hybrid`` suffix is the migration: collections of the
  dense-only schema (no suffix) are never opened, so no sparse prefetch ever hits a collection without
  sparse vectors; the old collection is left for the operator to drop once the brand is re-indexed;
* the collection's metadata records the model, dimension and schema version that made it;
  :meth:`VectorStore.ensure_collection` refuses (``EmbeddingMismatch``) a collection made by anything else,
  or one that lacks the sparse vector;
* :meth:`VectorStore.hybrid_search` is one ``query_points`` call: a dense and a sparse ``prefetch``, each
  filtered by tenant + brand, fused with Reciprocal Rank Fusion, the same filter on the outer query;
* ``tenant_id`` and ``brand_id`` in every point's payload, keyword-indexed (``tenant_id`` with
  ``is_tenant=True``), and the global HNSW graph off (``m=0``) in favour of per-tenant graphs
  (``payload_m``). Local mode accepts the indexes and ignores them;
* every read and delete is scoped by tenant *and* brand through :func:`_scope_filter`; there is no
  unscoped query method.

Point ids are deterministic (:func:`common.knowledge.records.chunk_id`), so re-ingesting the same content
overwrites in place.

Sparse side (:func:`sparse_terms`): lowercase Unicode word tokens, each hashed with BLAKE2b to a stable
32-bit index (Python's ``hash()`` is salted per process), weighted by BM25's saturated term frequency
with length normalisation against a fixed average length (:data:`BM25_AVG_TOKENS`), because a running
average would change every stored weight as documents arrive. Queries weight each distinct term 1.0, so
Qdrant's IDF times the stored weight is the BM25 score. IDF statistics are collection-wide (all tenants):
another tenant's documents shift term weights slightly, never which points a brand can see.

Local mode (``qdrant.url`` unset) keeps the collection on disk and holds a file lock: one process per path.
Its SQLite connection is shared across threads here, behind a lock, because async callers reach this
blocking API through ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import QdrantException
from qdrant_client.http.exceptions import ApiException

from common.config import Settings
from common.errors import EmbeddingMismatch, VectorStoreError
from common.knowledge.chunking import embedding_text
from common.schemas import ChunkRecord, RetrievedChunk

#: Name of the dense vector in every collection.
DENSE_VECTOR = "dense"
#: Name of the sparse (BM25-style) vector in every collection.
SPARSE_VECTOR = "sparse"
#: Suffix of hybrid (dense + sparse) collections; dense-only collections lack it.
HYBRID_SUFFIX = "__hybrid"
#: BM25 parameters of the stored term weights.
BM25_K1 = 1.2
BM25_B = 0.75
#: Fixed average document length (tokens) for BM25's length normalisation; chunks are ~200 tokens.
BM25_AVG_TOKENS = 120.0
#: Points per upsert request.
UPSERT_BATCH = 256
#: Points per scroll page.
SCROLL_PAGE = 512
_SCHEMA_VERSION = 2
_TOKEN = re.compile(r"\w+", re.UNICODE)
_QDRANT_ERRORS = (ApiException, QdrantException, httpx.HTTPError, ValueError, RuntimeError, OSError)


def collection_name(*, prefix: str, model_name: str, dimension: int) -> str:
    """``<prefix>__<model-slug>__<dimension>__hybrid``, e.g. ``knowledge__all-minilm-l6-v2__384__hybrid``."""
    slug = re.sub(r"[^a-z0-9]+", "-", model_name.lower()).strip("-")
    return f"{prefix}__{slug}__{dimension}{HYBRID_SUFFIX}"


def lexical_tokens(text: str) -> list[str]:
    """Lowercase Unicode word tokens (letters, digits, underscore), as the sparse index sees them."""
    return _TOKEN.findall(text.lower())


def term_index(token: str) -> int:
    """Stable 32-bit index of a token (BLAKE2b), identical in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=4).digest(), "big")


def sparse_terms(text: str, *, query: bool = False) -> dict[int, float]:
    """Sparse vector of ``text`` as ``{index: weight}``: BM25 TF weights for documents, 1.0 per query term.

    Two tokens hashing to one index (about one pair in 10^5 for a 300-token chunk) add up their counts.
    """
    counts = Counter(term_index(t) for t in lexical_tokens(text))
    if query:
        return dict.fromkeys(counts, 1.0)
    length = sum(counts.values())
    norm = BM25_K1 * (1.0 - BM25_B + BM25_B * length / BM25_AVG_TOKENS)
    return {index: tf * (BM25_K1 + 1.0) / (tf + norm) for index, tf in counts.items()}


def _sparse_vector(terms: dict[int, float]) -> models.SparseVector:
    indices = sorted(terms)
    return models.SparseVector(indices=indices, values=[terms[i] for i in indices])


@contextmanager
def _mapped_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except _QDRANT_ERRORS as exc:
        raise VectorStoreError(f"qdrant {operation} failed: {exc}", details={"operation": operation}) from exc


def _scope_filter(tenant_id: uuid.UUID, brand_id: uuid.UUID, *extra: models.Condition) -> models.Filter:
    """The one place that builds the tenant + brand filter every read and delete goes through."""
    if not isinstance(tenant_id, uuid.UUID) or not isinstance(brand_id, uuid.UUID):
        raise TypeError("tenant_id and brand_id must both be UUIDs")
    return models.Filter(
        must=[
            models.FieldCondition(key="tenant_id", match=models.MatchValue(value=str(tenant_id))),
            models.FieldCondition(key="brand_id", match=models.MatchValue(value=str(brand_id))),
            *extra,
        ]
    )


class VectorStore:
    """Brand knowledge chunks in one collection per embedding model; every query scoped to one brand."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.RLock()
        self._local = settings.qdrant.url is None
        self._collection: str | None = None
        self._dimension: int | None = None
        with _mapped_errors("connect"):
            self._client = self._open_client(settings)

    @staticmethod
    def _open_client(settings: Settings) -> QdrantClient:
        qdrant = settings.qdrant
        if qdrant.url is not None:
            api_key = qdrant.api_key.get_secret_value() if qdrant.api_key is not None else None
            return QdrantClient(url=qdrant.url, api_key=api_key, timeout=int(qdrant.timeout_s))
        settings.qdrant_path.mkdir(parents=True, exist_ok=True)
        return QdrantClient(path=str(settings.qdrant_path), force_disable_check_same_thread=True)

    @property
    def collection(self) -> str:
        """The collection in use; chosen by :meth:`ensure_collection` (settings' model by default)."""
        if self._collection is None:
            embeddings = self._settings.embeddings
            self.ensure_collection(embeddings.model_name, embeddings.dimension)
        assert self._collection is not None
        return self._collection

    def ensure_collection(self, model_name: str, dimension: int) -> str:
        """Create this model's collection, or check that the existing one was made by the same model.

        Raises :class:`EmbeddingMismatch` when the recorded model/dimension or the vector size differ.
        """
        name = collection_name(
            prefix=self._settings.qdrant.collection_prefix, model_name=model_name, dimension=dimension
        )
        with self._lock, _mapped_errors("ensure_collection"):
            if self._client.collection_exists(name):
                info = self._client.get_collection(name)
            else:
                self._create(name, model_name=model_name, dimension=dimension)
                info = None
        if info is not None:
            _verify(name, info, model_name=model_name, dimension=dimension)
        self._collection, self._dimension = name, dimension
        return name

    def _create(self, name: str, *, model_name: str, dimension: int) -> None:
        self._client.create_collection(
            name,
            vectors_config={
                DENSE_VECTOR: models.VectorParams(size=dimension, distance=models.Distance.COSINE)
            },
            sparse_vectors_config={SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            # Per-tenant graphs instead of one global graph: every search filters by tenant.
            hnsw_config=models.HnswConfigDiff(payload_m=16, m=0),
            metadata={
                "embedding_model": model_name,
                "embedding_dimension": dimension,
                "schema_version": _SCHEMA_VERSION,
            },
        )
        tenant_index = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
        brand_index = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD)
        with warnings.catch_warnings():
            if self._local:
                # Local mode says once that payload indexes are no-ops there; we know.
                warnings.filterwarnings(
                    "ignore", message="Payload indexes have no effect", category=UserWarning
                )
            self._client.create_payload_index(name, "tenant_id", field_schema=tenant_index, wait=True)
            self._client.create_payload_index(name, "brand_id", field_schema=brand_index, wait=True)
            self._client.create_payload_index(
                name, "source", field_schema=models.PayloadSchemaType.KEYWORD, wait=True
            )

    def upsert(self, chunks: Sequence[ChunkRecord], vectors: Sequence[Sequence[float]]) -> None:
        """Write chunks with their dense vectors (same order) and their sparse term weights, computed here
        from :func:`~common.knowledge.chunking.embedding_text`; waits until they are searchable."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        for vector in vectors:
            self._check_vector(vector)
        points = [
            models.PointStruct(
                id=c.chunk_id,
                vector={
                    DENSE_VECTOR: list(v),
                    SPARSE_VECTOR: _sparse_vector(
                        sparse_terms(embedding_text(heading_path=c.heading_path, text=c.text))
                    ),
                },
                payload=_payload(c),
            )
            for c, v in zip(chunks, vectors, strict=True)
        ]
        collection = self.collection
        for start in range(0, len(points), UPSERT_BATCH):
            with self._lock, _mapped_errors("upsert"):
                self._client.upsert(collection, points=points[start : start + UPSERT_BATCH], wait=True)

    def delete(self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, chunk_ids: Sequence[str]) -> None:
        """Delete these chunks of this brand; ids belonging to another brand are left alone."""
        if not chunk_ids:
            return
        scope = _scope_filter(tenant_id, brand_id, models.HasIdCondition(has_id=list(chunk_ids)))
        with self._lock, _mapped_errors("delete"):
            self._client.delete(
                self.collection, points_selector=models.FilterSelector(filter=scope), wait=True
            )

    def source_chunk_ids(self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, source: str) -> set[str]:
        """Ids of every chunk stored for one source of one brand."""
        return self.chunk_ids_by_source(tenant_id=tenant_id, brand_id=brand_id, sources=[source])[source]

    def chunk_ids_by_source(
        self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, sources: Sequence[str]
    ) -> dict[str, set[str]]:
        """Ids of every chunk stored for each of ``sources`` of one brand (every source is a key).

        One scroll for all the sources: local mode evaluates the filter on every point of the collection
        per scroll, so asking source by source made a bulk ingestion quadratic.
        """
        found: dict[str, set[str]] = {source: set() for source in sources}
        if not found:
            return found
        scope = _scope_filter(
            tenant_id, brand_id, models.FieldCondition(key="source", match=models.MatchAny(any=list(found)))
        )
        for point_id, source in self._scroll_sources(scope):
            found[source].add(point_id)
        return found

    def brand_sources(self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID) -> set[str]:
        """Every source that has at least one chunk stored for this brand."""
        return {source for _, source in self._scroll_sources(_scope_filter(tenant_id, brand_id))}

    def _scroll_sources(self, scope: models.Filter) -> Iterator[tuple[str, str]]:
        """(point id, source) of every point matching ``scope`` (a tenant+brand filter), page by page."""
        offset: Any = None
        collection = self.collection
        while True:
            with self._lock, _mapped_errors("scroll"):
                records, offset = self._client.scroll(
                    collection,
                    scroll_filter=scope,
                    limit=SCROLL_PAGE,
                    offset=offset,
                    with_payload=["source"],
                    with_vectors=False,
                )
            for r in records:
                yield str(r.id), str((r.payload or {}).get("source", ""))
            if offset is None:
                return

    def delete_source(self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, source: str) -> None:
        """Delete every chunk of one source of this brand."""
        scope = _scope_filter(
            tenant_id, brand_id, models.FieldCondition(key="source", match=models.MatchValue(value=source))
        )
        with self._lock, _mapped_errors("delete"):
            self._client.delete(
                self.collection, points_selector=models.FilterSelector(filter=scope), wait=True
            )

    def hybrid_search(
        self,
        *,
        tenant_id: uuid.UUID,
        brand_id: uuid.UUID,
        vector: Sequence[float],
        query_text: str,
        top_k: int,
        candidates: int = 20,
    ) -> list[RetrievedChunk]:
        """The ``top_k`` chunks of this brand by Reciprocal Rank Fusion of dense and sparse rankings.

        Each ranking takes ``max(candidates, top_k)`` chunks of this brand. Order is the fused order;
        each chunk's ``score`` is its dense cosine similarity to ``vector`` (what ``retrieval.min_score``
        is calibrated on), since RRF scores only encode ranks. A query without word tokens is dense only.
        """
        self._check_vector(vector)
        terms = sparse_terms(query_text, query=True)
        if not terms:
            return self.search(tenant_id=tenant_id, brand_id=brand_id, vector=vector, top_k=top_k)
        scope = _scope_filter(tenant_id, brand_id)
        depth = max(candidates, top_k)
        collection = self.collection
        with self._lock, _mapped_errors("hybrid_search"):
            response = self._client.query_points(
                collection,
                prefetch=[
                    models.Prefetch(query=list(vector), using=DENSE_VECTOR, filter=scope, limit=depth),
                    models.Prefetch(
                        query=_sparse_vector(terms), using=SPARSE_VECTOR, filter=scope, limit=depth
                    ),
                ],
                query=models.FusionQuery(fusion=models.Fusion.RRF),
                query_filter=scope,
                limit=top_k,
                with_payload=True,
                with_vectors=[DENSE_VECTOR],
            )
        return [_retrieved(point, score=_cosine(vector, _dense_of(point))) for point in response.points]

    def search(
        self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, vector: Sequence[float], top_k: int
    ) -> list[RetrievedChunk]:
        """The ``top_k`` chunks of this brand nearest to ``vector``, best first (cosine similarity)."""
        self._check_vector(vector)
        collection = self.collection
        with self._lock, _mapped_errors("search"):
            response = self._client.query_points(
                collection,
                query=list(vector),
                using=DENSE_VECTOR,
                query_filter=_scope_filter(tenant_id, brand_id),
                limit=top_k,
                with_payload=True,
                with_vectors=False,
            )
        return [_retrieved(point) for point in response.points]

    def close(self) -> None:
        """Release the client (and, in local mode, the file lock)."""
        with self._lock, _mapped_errors("close"):
            self._client.close()

    def _check_vector(self, vector: Sequence[float]) -> None:
        if self._dimension is None:
            _ = self.collection
        if len(vector) != self._dimension:
            raise EmbeddingMismatch(
                f"vector of dimension {len(vector)} for collection {self._collection} ({self._dimension})",
                details={"collection": self._collection, "expected": self._dimension, "got": len(vector)},
            )


def _verify(name: str, info: models.CollectionInfo, *, model_name: str, dimension: int) -> None:
    metadata = info.config.metadata or {}
    vectors = info.config.params.vectors
    size = vectors[DENSE_VECTOR].size if isinstance(vectors, dict) and DENSE_VECTOR in vectors else None
    sparse = info.config.params.sparse_vectors or {}
    found = {"model": metadata.get("embedding_model"), "dimension": metadata.get("embedding_dimension")}
    if SPARSE_VECTOR not in sparse:
        raise EmbeddingMismatch(
            f"collection {name} has no {SPARSE_VECTOR!r} vector (schema {metadata.get('schema_version')}); "
            "it cannot serve hybrid search: drop it and re-index",
            details={"collection": name, "found": found, "missing": SPARSE_VECTOR},
        )
    if found != {"model": model_name, "dimension": dimension} or size != dimension:
        raise EmbeddingMismatch(
            f"collection {name} was made by {found['model']} ({found['dimension']}, vector size {size}); "
            f"refusing to use it for {model_name} ({dimension})",
            details={"collection": name, "found": found, "vector_size": size, "wanted": model_name},
        )


def _payload(chunk: ChunkRecord) -> dict[str, Any]:
    return {
        "tenant_id": str(chunk.tenant_id),
        "brand_id": str(chunk.brand_id),
        "source": chunk.source,
        "heading_path": chunk.heading_path,
        "ordinal": chunk.ordinal,
        "text": chunk.text,
        "content_hash": chunk.content_hash,
    }


def _dense_of(point: models.ScoredPoint) -> list[float]:
    vectors = point.vector
    dense = vectors.get(DENSE_VECTOR) if isinstance(vectors, dict) else None
    if not isinstance(dense, list) or not all(isinstance(x, float | int) for x in dense):
        raise VectorStoreError(f"point {point.id} came back without its dense vector")
    return cast(list[float], dense)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norms if norms else 0.0


def _retrieved(point: models.ScoredPoint, *, score: float | None = None) -> RetrievedChunk:
    payload = point.payload or {}
    return RetrievedChunk(
        chunk_id=str(point.id),
        text=str(payload.get("text", "")),
        source=str(payload.get("source", "")),
        heading_path=str(payload.get("heading_path", "")),
        score=float(point.score) if score is None else score,
    )
