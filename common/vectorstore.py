"""Knowledge chunks in Qdrant — the only module that imports ``qdrant_client``.

Layout, after Qdrant's multitenancy guide:

* one collection per embedding model, named ``<prefix>__<model-slug>__<dimension>``, with one named
  dense vector ``"dense"`` (cosine) so a sparse/BM25 vector can be added to the same collection later;
* the collection's metadata records the model and dimension that made it;
  :meth:`VectorStore.ensure_collection` refuses (``EmbeddingMismatch``) a collection made by anything else;
* ``tenant_id`` and ``brand_id`` in every point's payload, keyword-indexed (``tenant_id`` with
  ``is_tenant=True``), and the global HNSW graph off (``m=0``) in favour of per-tenant graphs
  (``payload_m``). Local mode accepts the indexes and ignores them;
* every read and delete is scoped by tenant *and* brand through :func:`_scope_filter`; there is no
  unscoped query method.

Point ids are deterministic (:func:`chunk_id`), so re-ingesting the same content overwrites in place.

Local mode (``qdrant.url`` unset) keeps the collection on disk and holds a file lock: one process per path.
Its SQLite connection is shared across threads here, behind a lock, because async callers reach this
blocking API through ``asyncio.to_thread``.
"""

from __future__ import annotations

import re
import threading
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import QdrantException
from qdrant_client.http.exceptions import ApiException

from common.config import Settings
from common.errors import EmbeddingMismatch, VectorStoreError
from common.schemas import ChunkRecord, RetrievedChunk

#: Name of the dense vector in every collection.
DENSE_VECTOR = "dense"
#: Points per upsert request.
UPSERT_BATCH = 256
#: Points per scroll page.
SCROLL_PAGE = 512
_SCHEMA_VERSION = 1
_CHUNK_NAMESPACE = uuid.UUID("0b6e8a52-5c3e-4d4e-9f0a-6f1c2a4e7d10")
_QDRANT_ERRORS = (ApiException, QdrantException, httpx.HTTPError, ValueError, RuntimeError, OSError)


def chunk_id(*, tenant_id: uuid.UUID, brand_id: uuid.UUID, source: str, heading_path: str, text: str) -> str:
    """Deterministic point id: the same content of the same source for the same brand → the same id."""
    name = "\x1f".join((str(tenant_id), str(brand_id), source, heading_path, text))
    return str(uuid.uuid5(_CHUNK_NAMESPACE, name))


def collection_name(*, prefix: str, model_name: str, dimension: int) -> str:
    """``<prefix>__<model-slug>__<dimension>``, e.g. ``knowledge__all-minilm-l6-v2__384``."""
    slug = re.sub(r"[^a-z0-9]+", "-", model_name.lower()).strip("-")
    return f"{prefix}__{slug}__{dimension}"


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
        """Write chunks with their vectors (same order), waiting until they are searchable."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        for vector in vectors:
            self._check_vector(vector)
        points = [
            models.PointStruct(id=c.chunk_id, vector={DENSE_VECTOR: list(v)}, payload=_payload(c))
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
        scope = _scope_filter(
            tenant_id, brand_id, models.FieldCondition(key="source", match=models.MatchValue(value=source))
        )
        ids: set[str] = set()
        offset: Any = None
        collection = self.collection
        while True:
            with self._lock, _mapped_errors("scroll"):
                records, offset = self._client.scroll(
                    collection,
                    scroll_filter=scope,
                    limit=SCROLL_PAGE,
                    offset=offset,
                    with_payload=False,
                    with_vectors=False,
                )
            ids.update(str(r.id) for r in records)
            if offset is None:
                return ids

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
    found = {"model": metadata.get("embedding_model"), "dimension": metadata.get("embedding_dimension")}
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


def _retrieved(point: models.ScoredPoint) -> RetrievedChunk:
    payload = point.payload or {}
    return RetrievedChunk(
        chunk_id=str(point.id),
        text=str(payload.get("text", "")),
        source=str(payload.get("source", "")),
        heading_path=str(payload.get("heading_path", "")),
        score=float(point.score),
    )
