"""Knowledge chunks in Qdrant — the only module that imports ``qdrant_client`` or ``qdrant_edge``.

Two engines behind one :class:`VectorStore`:

* **Qdrant Edge** (``qdrant_edge.EdgeShard``, the Qdrant team's in-process engine: the server's segment,
  HNSW and payload-index code) when ``qdrant.url`` is unset — the default of ``make run`` and the tests.
  Each collection is one shard directory, ``<qdrant_path>/edge/<collection>/shard``, with its metadata
  beside it in ``collection.json``. One process owns the directory (:class:`_DirectoryLock`);
* **qdrant-client** against a Qdrant server when ``qdrant.url`` is set. (qdrant-client's own local mode
  is no longer a runtime engine: it evaluated the filter in Python for every point, ~1.5 s per query at
  55,000 points. The tests still hand :class:`VectorStore` a local-mode client as a stand-in server.)

Layout, after Qdrant's multitenancy guide, the same in both engines:

* one collection per embedding model, named ``<prefix>__<model-slug>__<dimension>__hybrid``, with a named
  dense vector ``"dense"`` (cosine) and a named sparse vector ``"sparse"`` (BM25-style term weights, IDF
  applied by Qdrant). The ``__hybrid`` suffix is the migration from the dense-only schema: such server
  collections are never opened and are left for the operator to drop;
* the model, dimension and schema version that made a collection are recorded (server: collection
  metadata; Edge: ``collection.json``) and :meth:`VectorStore.ensure_collection` refuses
  (``EmbeddingMismatch``) a collection made by anything else, or one that lacks the sparse vector;
* :meth:`VectorStore.hybrid_search` is one query: a dense and a sparse prefetch, each filtered by tenant +
  brand, fused with Reciprocal Rank Fusion (k=2, the server's default), the same filter on the outer query;
* ``tenant_id`` and ``brand_id`` keyword-indexed with ``is_tenant`` (and ``source``), the global HNSW
  graph off (``m=0``) in favour of per-tenant/brand graphs (``payload_m``);
* every read and delete is scoped by tenant *and* brand through :func:`_scope_filter`, the one place the
  filter is built (for either library); there is no unscoped query method.

When the Edge engine builds its HNSW index (figures in docs/PERFORMANCE.md): points are searchable the
moment :meth:`VectorStore.upsert` returns — in an unindexed segment, searched exactly through the payload
index, so the cost is the brand's size, not the collection's (~14 ms dense, ~18 ms hybrid at 50,000
chunks). The graph is built by :meth:`VectorStore.optimize`, which blocks **and holds the GIL** for the
whole build (14-35 s for 50,000 MiniLM vectors here), so it only runs where no request waits: at the end
of a bulk job in a process that owns the directory (``admin rebuild-vectors``, the migration,
``pipelines.ingest`` in direct mode) and when a store opens with at least :data:`INDEX_ON_OPEN_POINTS`
unindexed points (a knowledge replica starting, before it takes traffic). Brands below
:data:`EXACT_BELOW_KB` of vectors (~13,000 MiniLM chunks) get no graph at all: Qdrant's planner searches
them exactly (recall 1.0, a few ms). Graph searches use ``hnsw_ef`` :data:`HNSW_EF` (recall@4 1.000
against exact on real MiniLM vectors at 50,000).

Point ids are deterministic (:func:`common.knowledge.records.chunk_id`), so re-ingesting the same content
overwrites in place.

Sparse side (:func:`sparse_terms`): lowercase Unicode word tokens, each hashed with BLAKE2b to a stable
32-bit index (Python's ``hash()`` is salted per process), weighted by BM25's saturated term frequency
with length normalisation against a fixed average length (:data:`BM25_AVG_TOKENS`), because a running
average would change every stored weight as documents arrive. Queries weight each distinct term 1.0, so
Qdrant's IDF times the stored weight is the BM25 score. IDF statistics are collection-wide (all tenants):
another tenant's documents shift term weights slightly, never which points a brand can see.

Both engines are blocking; async callers reach them through ``asyncio.to_thread``, so every call holds
one lock (the Edge shard and local-mode's SQLite are not safe to enter from two threads at once).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import threading
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, cast

import httpx
import qdrant_edge as edge
from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import QdrantException
from qdrant_client.http.exceptions import ApiException

from common.config import Settings
from common.errors import AssistantError, EmbeddingMismatch, VectorStoreError
from common.knowledge.chunking import embedding_text
from common.logging import get_logger
from common.schemas import ChunkRecord, RetrievedChunk

log = get_logger(__name__)

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
#: Reciprocal Rank Fusion constant: the server's default (what hybrid search always used); Edge needs it.
RRF_K = 2
#: Qdrant's ``full_scan_threshold`` (KB of vectors): a brand whose filtered vectors are smaller is searched
#: exactly and gets no per-brand graph. 20,000 KB ≈ 13,000 chunks of 384 floats, searched in ~3 ms here.
EXACT_BELOW_KB = 20_000
#: HNSW candidate list of a dense search. Measured on real MiniLM vectors, 50,000 chunks of one brand,
#: 200 queries (docs/PERFORMANCE.md): recall@4 against exact 0.945 at the default (100), 0.993 at 256,
#: 1.000 at 512 for a p95 of 2.2 ms — still a fraction of the query embedding (~10 ms) and of exact (14 ms).
HNSW_EF = 512
#: Opening an Edge store with at least this many dense vectors outside the HNSW index builds it first.
INDEX_ON_OPEN_POINTS = 20_000
#: Subdirectory of ``Settings.qdrant_path`` that holds the Edge shards.
EDGE_DIR = "edge"
#: Written into the Edge directory once the vectors of a qdrant-client local-mode directory were rebuilt.
MIGRATED_MARKER = "MIGRATED_FROM_LOCAL_MODE"
_SCHEMA_VERSION = 2
_TOKEN = re.compile(r"\w+", re.UNICODE)
_SERVER_ERRORS: tuple[type[Exception], ...] = (
    ApiException,
    QdrantException,
    httpx.HTTPError,
    ValueError,
    RuntimeError,
    OSError,
)
# qdrant_edge raises plain ``Exception`` ("Service runtime error: ...", "Vector dimension error: ...") for
# everything the engine refuses; its disk errors may surface as OSError.
_EDGE_ERRORS: tuple[type[Exception], ...] = (Exception,)
# Caught by a broad tuple above but never the engine's: let them surface as the bugs they are.
_NOT_ENGINE_ERRORS: tuple[type[Exception], ...] = (TypeError, AttributeError, KeyError, NameError)


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


def local_mode_directory(settings: Settings) -> bool:
    """Whether ``qdrant_path`` holds a qdrant-client local-mode store (its ``meta.json``/``collection/``)."""
    root = settings.qdrant_path
    return (root / "meta.json").is_file() or (root / "collection").is_dir()


def needs_local_migration(settings: Settings) -> bool:
    """True on the first start of the Edge engine over an old local-mode directory (nothing rebuilt yet)."""
    if settings.qdrant.url is not None:
        return False
    return local_mode_directory(settings) and not (settings.qdrant_path / EDGE_DIR / MIGRATED_MARKER).exists()


def mark_local_migration_done(settings: Settings, *, chunks: int) -> None:
    """Record that the local-mode vectors were rebuilt from Postgres, so later starts skip it."""
    marker = settings.qdrant_path / EDGE_DIR / MIGRATED_MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"rebuilt_chunks": chunks}), encoding="utf-8")


# --- the tenant + brand filter -------------------------------------------------------------------


@dataclass(frozen=True)
class _FilterDialect:
    """The filter constructors of one library; both share keyword names (``must``, ``key``, ``match``)."""

    filter: Callable[..., Any]
    field: Callable[..., Any]
    match_value: Callable[..., Any]
    match_any: Callable[..., Any]
    has_id: Callable[[list[str]], Any]


_SERVER_FILTERS = _FilterDialect(
    filter=models.Filter,
    field=models.FieldCondition,
    match_value=models.MatchValue,
    match_any=models.MatchAny,
    has_id=lambda ids: models.HasIdCondition(has_id=list(ids)),
)
_EDGE_FILTERS = _FilterDialect(
    filter=edge.Filter,
    field=edge.FieldCondition,
    match_value=edge.MatchValue,
    match_any=edge.MatchAny,
    has_id=lambda ids: edge.HasIdCondition(point_ids=set(ids)),
)


def _scope_filter(
    dialect: _FilterDialect,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    *,
    sources: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
) -> Any:
    """The one place that builds the tenant + brand filter every read and delete goes through."""
    if not isinstance(tenant_id, uuid.UUID) or not isinstance(brand_id, uuid.UUID):
        raise TypeError("tenant_id and brand_id must both be UUIDs")
    must = [
        dialect.field(key="tenant_id", match=dialect.match_value(value=str(tenant_id))),
        dialect.field(key="brand_id", match=dialect.match_value(value=str(brand_id))),
    ]
    if sources is not None:
        must.append(dialect.field(key="source", match=dialect.match_any(any=list(sources))))
    if ids is not None:
        must.append(dialect.has_id(list(ids)))
    return dialect.filter(must=must)


# --- engines -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Point:
    id: str
    dense: list[float]
    sparse: dict[int, float]
    payload: dict[str, Any]


@dataclass(frozen=True)
class _Hit:
    id: str
    score: float
    payload: dict[str, Any]
    dense: Sequence[float] | None = None


class _Engine(Protocol):
    """What :class:`VectorStore` needs from a Qdrant; blocking, called under the store's lock."""

    filters: _FilterDialect
    errors: tuple[type[Exception], ...]

    def open(self, name: str, *, model_name: str, dimension: int) -> None: ...
    def upsert(self, name: str, points: Sequence[_Point]) -> None: ...
    def delete(self, name: str, scope: Any) -> None: ...
    def scroll(self, name: str, scope: Any, offset: Any, limit: int) -> tuple[list[tuple[str, str]], Any]: ...
    def dense(self, name: str, *, vector: list[float], scope: Any, top_k: int) -> list[_Hit]: ...
    def hybrid(
        self, name: str, *, vector: list[float], terms: dict[int, float], scope: Any, depth: int, top_k: int
    ) -> list[_Hit]: ...
    def optimize(self, name: str) -> bool: ...
    def close(self) -> None: ...


def _metadata(model_name: str, dimension: int) -> dict[str, Any]:
    return {
        "embedding_model": model_name,
        "embedding_dimension": dimension,
        "schema_version": _SCHEMA_VERSION,
    }


def _check_metadata(
    name: str,
    metadata: dict[str, Any],
    *,
    size: int | None,
    has_sparse: bool,
    model_name: str,
    dimension: int,
) -> None:
    found = {"model": metadata.get("embedding_model"), "dimension": metadata.get("embedding_dimension")}
    if not has_sparse:
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


class _ServerEngine:
    """qdrant-client against a Qdrant server (or any client with the server's API)."""

    filters = _SERVER_FILTERS
    errors = _SERVER_ERRORS

    def __init__(self, client: QdrantClient) -> None:
        self._client = client

    def open(self, name: str, *, model_name: str, dimension: int) -> None:
        if not self._client.collection_exists(name):
            self._create(name, model_name=model_name, dimension=dimension)
            return
        info = self._client.get_collection(name)
        vectors = info.config.params.vectors
        size = vectors[DENSE_VECTOR].size if isinstance(vectors, dict) and DENSE_VECTOR in vectors else None
        sparse = info.config.params.sparse_vectors or {}
        _check_metadata(
            name,
            dict(info.config.metadata or {}),
            size=size,
            has_sparse=SPARSE_VECTOR in sparse,
            model_name=model_name,
            dimension=dimension,
        )

    def _create(self, name: str, *, model_name: str, dimension: int) -> None:
        self._client.create_collection(
            name,
            vectors_config={
                DENSE_VECTOR: models.VectorParams(size=dimension, distance=models.Distance.COSINE)
            },
            sparse_vectors_config={SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            # Per-tenant graphs instead of one global graph: every search filters by tenant and brand.
            hnsw_config=models.HnswConfigDiff(payload_m=16, m=0, full_scan_threshold=EXACT_BELOW_KB),
            metadata=_metadata(model_name, dimension),
        )
        tenant = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
        with warnings.catch_warnings():
            # The local-mode stand-in says payload indexes are no-ops there; a server builds them.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect", category=UserWarning)
            for field in ("tenant_id", "brand_id"):
                self._client.create_payload_index(name, field, field_schema=tenant, wait=True)
            self._client.create_payload_index(
                name, "source", field_schema=models.PayloadSchemaType.KEYWORD, wait=True
            )

    def upsert(self, name: str, points: Sequence[_Point]) -> None:
        structs = [
            models.PointStruct(
                id=p.id,
                vector={DENSE_VECTOR: p.dense, SPARSE_VECTOR: _server_sparse(p.sparse)},
                payload=p.payload,
            )
            for p in points
        ]
        self._client.upsert(name, points=structs, wait=True)

    def delete(self, name: str, scope: Any) -> None:
        self._client.delete(name, points_selector=models.FilterSelector(filter=scope), wait=True)

    def scroll(self, name: str, scope: Any, offset: Any, limit: int) -> tuple[list[tuple[str, str]], Any]:
        records, next_offset = self._client.scroll(
            name, scroll_filter=scope, limit=limit, offset=offset, with_payload=["source"], with_vectors=False
        )
        return [(str(r.id), str((r.payload or {}).get("source", ""))) for r in records], next_offset

    def dense(self, name: str, *, vector: list[float], scope: Any, top_k: int) -> list[_Hit]:
        response = self._client.query_points(
            name,
            query=vector,
            using=DENSE_VECTOR,
            query_filter=scope,
            search_params=models.SearchParams(hnsw_ef=HNSW_EF),
            limit=top_k,
            with_payload=True,
            with_vectors=False,
        )
        return [_Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in response.points]

    def hybrid(
        self, name: str, *, vector: list[float], terms: dict[int, float], scope: Any, depth: int, top_k: int
    ) -> list[_Hit]:
        response = self._client.query_points(
            name,
            prefetch=[
                models.Prefetch(
                    query=vector,
                    using=DENSE_VECTOR,
                    filter=scope,
                    limit=depth,
                    params=models.SearchParams(hnsw_ef=HNSW_EF),
                ),
                models.Prefetch(query=_server_sparse(terms), using=SPARSE_VECTOR, filter=scope, limit=depth),
            ],
            query=models.RrfQuery(rrf=models.Rrf(k=RRF_K)),
            query_filter=scope,
            limit=top_k,
            with_payload=True,
            with_vectors=[DENSE_VECTOR],
        )
        return [
            _Hit(str(p.id), float(p.score), dict(p.payload or {}), _dense_of(p.id, p.vector))
            for p in response.points
        ]

    def optimize(self, name: str) -> bool:
        # A server runs its optimizers in the background, off every request's path.
        return False

    def close(self) -> None:
        self._client.close()


class _DirectoryLock:
    """An exclusive ``flock`` on ``<dir>/.lock``: one process (one store) owns an Edge directory.

    The Edge WAL refuses a second opener too, but only once a collection opens and with a bare
    ``WouldBlock``; this says which directory, at once, and why.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / ".lock"
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._file.close()
            self._file = None
            raise VectorStoreError(
                f"vector store directory {directory} is already open in another process or store: "
                "the embedded engine allows one owner per directory (stop it, or set QDRANT_URL)",
                details={"operation": "connect", "path": str(directory)},
            ) from exc

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class _EdgeEngine:
    """Qdrant Edge: one ``EdgeShard`` per collection, on disk under ``<root>/<collection>/shard``."""

    filters = _EDGE_FILTERS
    errors = _EDGE_ERRORS

    def __init__(self, root: Path) -> None:
        self._root = root
        self._lock = _DirectoryLock(root)
        self._shards: dict[str, edge.EdgeShard] = {}

    def open(self, name: str, *, model_name: str, dimension: int) -> None:
        if name in self._shards:
            return
        home = self._root / name
        meta_file, shard_dir = home / "collection.json", home / "shard"
        config = _edge_config(dimension)
        if meta_file.is_file():
            metadata = json.loads(meta_file.read_text(encoding="utf-8"))
            _check_metadata(
                name,
                metadata,
                size=metadata.get("vector_size"),
                has_sparse=metadata.get("sparse_vector") == SPARSE_VECTOR,
                model_name=model_name,
                dimension=dimension,
            )
            shard = _load_checked(name, shard_dir, config, dimension)
        else:
            shard = edge.EdgeShard.create(str(shard_dir), config)
            for field in ("tenant_id", "brand_id"):
                shard.update(
                    edge.UpdateOperation.create_field_index(field, edge.KeywordIndexParams(is_tenant=True))
                )
            shard.update(edge.UpdateOperation.create_field_index("source", edge.KeywordIndexParams()))
            record = {
                **_metadata(model_name, dimension),
                "vector_size": dimension,
                "sparse_vector": SPARSE_VECTOR,
            }
            # Written after the shard exists: a crash in between leaves a shard without metadata, which
            # create() then refuses loudly instead of a collection that silently skips the checks.
            _atomic_write(meta_file, json.dumps(record))
        self._shards[name] = shard
        pending = _unindexed(shard)
        if pending >= INDEX_ON_OPEN_POINTS:
            log.info("vectorstore.index_on_open", collection=name, unindexed_points=pending)
            shard.optimize()

    def _shard(self, name: str) -> edge.EdgeShard:
        try:
            return self._shards[name]
        except KeyError:
            raise VectorStoreError(
                f"collection {name} is not open (the store was closed)", details={"operation": "open"}
            ) from None

    def upsert(self, name: str, points: Sequence[_Point]) -> None:
        self._shard(name).update(
            edge.UpdateOperation.upsert_points(
                [
                    edge.Point(
                        id=p.id,
                        vector={DENSE_VECTOR: p.dense, SPARSE_VECTOR: _edge_sparse(p.sparse)},
                        payload=p.payload,
                    )
                    for p in points
                ]
            )
        )

    def delete(self, name: str, scope: Any) -> None:
        self._shard(name).update(edge.UpdateOperation.delete_points_by_filter(scope))

    def scroll(self, name: str, scope: Any, offset: Any, limit: int) -> tuple[list[tuple[str, str]], Any]:
        records, next_offset = self._shard(name).scroll(
            edge.ScrollRequest(
                offset=offset, limit=limit, filter=scope, with_payload=["source"], with_vector=False
            )
        )
        return [(str(r.id), str((r.payload or {}).get("source", ""))) for r in records], next_offset

    def dense(self, name: str, *, vector: list[float], scope: Any, top_k: int) -> list[_Hit]:
        points = self._shard(name).query(
            edge.QueryRequest(
                limit=top_k,
                query=edge.Query.Nearest(vector, using=DENSE_VECTOR),
                filter=scope,
                params=edge.SearchParams(hnsw_ef=HNSW_EF),
                with_payload=True,
                with_vector=False,
            )
        )
        return [_Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]

    def hybrid(
        self, name: str, *, vector: list[float], terms: dict[int, float], scope: Any, depth: int, top_k: int
    ) -> list[_Hit]:
        points = self._shard(name).query(
            edge.QueryRequest(
                limit=top_k,
                prefetches=[
                    edge.Prefetch(
                        limit=depth,
                        query=edge.Query.Nearest(vector, using=DENSE_VECTOR),
                        filter=scope,
                        params=edge.SearchParams(hnsw_ef=HNSW_EF),
                    ),
                    edge.Prefetch(
                        limit=depth,
                        query=edge.Query.Nearest(_edge_sparse(terms), using=SPARSE_VECTOR),
                        filter=scope,
                    ),
                ],
                # The stubs type ``Fusion.Rrf`` as unrelated to ``Fusion``; the engine takes it.
                query=cast(edge.Fusion, edge.Fusion.Rrf(k=RRF_K)),
                filter=scope,
                with_payload=True,
                with_vector=[DENSE_VECTOR],
            )
        )
        return [
            _Hit(str(p.id), float(p.score), dict(p.payload or {}), _dense_of(p.id, p.vector)) for p in points
        ]

    def optimize(self, name: str) -> bool:
        return bool(self._shard(name).optimize())

    def close(self) -> None:
        try:
            for shard in self._shards.values():
                shard.close()
        finally:
            self._shards.clear()
            self._lock.release()


def _edge_config(dimension: int) -> edge.EdgeConfig:
    return edge.EdgeConfig(
        vectors={DENSE_VECTOR: edge.EdgeVectorParams(size=dimension, distance=edge.Distance.Cosine)},
        sparse_vectors={SPARSE_VECTOR: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)},
        hnsw_config=edge.HnswIndexConfig(
            m=0, ef_construct=100, full_scan_threshold=EXACT_BELOW_KB, payload_m=16
        ),
        # Queries hold the GIL, so a second search thread buys nothing; replicas pin one thread.
        max_search_threads=1,
    )


def _load_checked(name: str, shard_dir: Path, config: edge.EdgeConfig, dimension: int) -> edge.EdgeShard:
    try:
        return edge.EdgeShard.load(str(shard_dir), config)
    except Exception as exc:
        if "ncompatible" not in str(exc):
            raise
        # collection.json agreed, the segments on disk do not: never mix vectors of two sizes.
        raise EmbeddingMismatch(
            f"collection {name} holds vectors that do not fit dimension {dimension}: {exc}",
            details={"collection": name, "wanted": dimension},
        ) from exc


def _unindexed(shard: edge.EdgeShard) -> int:
    """Dense vectors outside an HNSW graph: sparse vectors always count as indexed (inverted index)."""
    info = shard.info()
    return max(0, 2 * info.points_count - info.indexed_vectors_count)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _server_sparse(terms: dict[int, float]) -> models.SparseVector:
    indices = sorted(terms)
    return models.SparseVector(indices=indices, values=[terms[i] for i in indices])


def _edge_sparse(terms: dict[int, float]) -> edge.SparseVector:
    indices = sorted(terms)
    return edge.SparseVector(indices=indices, values=[terms[i] for i in indices])


def _dense_of(point_id: Any, vectors: Any) -> list[float]:
    dense = vectors.get(DENSE_VECTOR) if isinstance(vectors, dict) else None
    if not isinstance(dense, list) or not all(isinstance(x, float | int) for x in dense):
        raise VectorStoreError(f"point {point_id} came back without its dense vector")
    return cast(list[float], dense)


# --- the store -----------------------------------------------------------------------------------


class VectorStore:
    """Brand knowledge chunks in one collection per embedding model; every query scoped to one brand."""

    def __init__(self, settings: Settings, *, client: QdrantClient | None = None) -> None:
        """Open the engine ``settings`` name: Edge under ``qdrant_path`` unless ``qdrant.url`` is set.

        ``client`` uses the server engine with that client (tests pass qdrant-client's local mode).
        """
        self._settings = settings
        self._lock = threading.RLock()
        self._collection: str | None = None
        self._dimension: int | None = None
        self._engine: _Engine
        if client is not None:
            self._engine = _ServerEngine(client)
            return
        qdrant = settings.qdrant
        if qdrant.url is not None:
            api_key = qdrant.api_key.get_secret_value() if qdrant.api_key is not None else None
            with _mapped_errors("connect", _SERVER_ERRORS):
                self._engine = _ServerEngine(
                    QdrantClient(url=qdrant.url, api_key=api_key, timeout=int(qdrant.timeout_s))
                )
        else:
            self._engine = _EdgeEngine(settings.qdrant_path / EDGE_DIR)

    @property
    def engine(self) -> str:
        """``"edge"`` (embedded) or ``"server"`` (qdrant-client)."""
        return "edge" if isinstance(self._engine, _EdgeEngine) else "server"

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
        with self._call("ensure_collection"):
            self._engine.open(name, model_name=model_name, dimension=dimension)
        self._collection, self._dimension = name, dimension
        return name

    @contextmanager
    def _call(self, operation: str) -> Iterator[None]:
        with self._lock, _mapped_errors(operation, self._engine.errors):
            yield

    def upsert(self, chunks: Sequence[ChunkRecord], vectors: Sequence[Sequence[float]]) -> None:
        """Write chunks with their dense vectors (same order) and their sparse term weights, computed here
        from :func:`~common.knowledge.chunking.embedding_text`; searchable when this returns."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        for vector in vectors:
            self._check_vector(vector)
        points = [
            _Point(
                id=c.chunk_id,
                dense=[float(x) for x in v],
                sparse=sparse_terms(embedding_text(heading_path=c.heading_path, text=c.text)),
                payload=_payload(c),
            )
            for c, v in zip(chunks, vectors, strict=True)
        ]
        collection = self.collection
        for start in range(0, len(points), UPSERT_BATCH):
            with self._call("upsert"):
                self._engine.upsert(collection, points[start : start + UPSERT_BATCH])

    def optimize(self) -> bool:
        """Build the HNSW index of what was written since the last build (Edge; a no-op on a server).

        Blocks and holds the GIL for the whole build (14-35 s for 50,000 points here): call it only
        where no request waits (end of a bulk job, before a replica serves). Returns whether it built.
        """
        collection = self.collection
        with self._call("optimize"):
            return self._engine.optimize(collection)

    def delete(self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, chunk_ids: Sequence[str]) -> None:
        """Delete these chunks of this brand; ids belonging to another brand are left alone."""
        if not chunk_ids:
            return
        scope = _scope_filter(self._engine.filters, tenant_id, brand_id, ids=chunk_ids)
        collection = self.collection
        with self._call("delete"):
            self._engine.delete(collection, scope)

    def source_chunk_ids(self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, source: str) -> set[str]:
        """Ids of every chunk stored for one source of one brand."""
        return self.chunk_ids_by_source(tenant_id=tenant_id, brand_id=brand_id, sources=[source])[source]

    def chunk_ids_by_source(
        self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, sources: Sequence[str]
    ) -> dict[str, set[str]]:
        """Ids of every chunk stored for each of ``sources`` of one brand (every source is a key).

        One scroll for all the sources: asking source by source made a bulk ingestion quadratic.
        """
        found: dict[str, set[str]] = {source: set() for source in sources}
        if not found:
            _scope_filter(self._engine.filters, tenant_id, brand_id)  # still refuses a bad scope
            return found
        scope = _scope_filter(self._engine.filters, tenant_id, brand_id, sources=list(found))
        for point_id, source in self._scroll_sources(scope):
            found[source].add(point_id)
        return found

    def brand_sources(self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID) -> set[str]:
        """Every source that has at least one chunk stored for this brand."""
        scope = _scope_filter(self._engine.filters, tenant_id, brand_id)
        return {source for _, source in self._scroll_sources(scope)}

    def _scroll_sources(self, scope: Any) -> Iterator[tuple[str, str]]:
        """(point id, source) of every point matching ``scope`` (a tenant+brand filter), page by page."""
        offset: Any = None
        collection = self.collection
        while True:
            with self._call("scroll"):
                page, offset = self._engine.scroll(collection, scope, offset, SCROLL_PAGE)
            yield from page
            if offset is None:
                return

    def delete_source(self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, source: str) -> None:
        """Delete every chunk of one source of this brand."""
        scope = _scope_filter(self._engine.filters, tenant_id, brand_id, sources=[source])
        collection = self.collection
        with self._call("delete"):
            self._engine.delete(collection, scope)

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
        scope = _scope_filter(self._engine.filters, tenant_id, brand_id)
        query = [float(x) for x in vector]
        collection = self.collection
        with self._call("hybrid_search"):
            hits = self._engine.hybrid(
                collection, vector=query, terms=terms, scope=scope, depth=max(candidates, top_k), top_k=top_k
            )
        return [_retrieved(hit, score=_cosine(query, hit.dense or ())) for hit in hits]

    def search(
        self, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, vector: Sequence[float], top_k: int
    ) -> list[RetrievedChunk]:
        """The ``top_k`` chunks of this brand nearest to ``vector``, best first (cosine similarity)."""
        self._check_vector(vector)
        scope = _scope_filter(self._engine.filters, tenant_id, brand_id)
        collection = self.collection
        with self._call("search"):
            hits = self._engine.dense(collection, vector=[float(x) for x in vector], scope=scope, top_k=top_k)
        return [_retrieved(hit) for hit in hits]

    def close(self) -> None:
        """Release the engine (and, for Edge, the directory)."""
        with self._call("close"):
            self._engine.close()

    def _check_vector(self, vector: Sequence[float]) -> None:
        if self._dimension is None:
            _ = self.collection
        if len(vector) != self._dimension:
            raise EmbeddingMismatch(
                f"vector of dimension {len(vector)} for collection {self._collection} ({self._dimension})",
                details={"collection": self._collection, "expected": self._dimension, "got": len(vector)},
            )


@contextmanager
def _mapped_errors(operation: str, errors: tuple[type[Exception], ...]) -> Iterator[None]:
    try:
        yield
    except AssistantError:
        raise  # already typed (EmbeddingMismatch, a closed store)
    except errors as exc:
        if isinstance(exc, _NOT_ENGINE_ERRORS) and type(exc) not in errors:
            raise  # a bug on our side (a wrong argument, a missing attribute), not a retryable outage
        raise VectorStoreError(f"qdrant {operation} failed: {exc}", details={"operation": operation}) from exc


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


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b):
        return 0.0
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norms if norms else 0.0


def _retrieved(hit: _Hit, *, score: float | None = None) -> RetrievedChunk:
    payload = hit.payload
    return RetrievedChunk(
        chunk_id=hit.id,
        text=str(payload.get("text", "")),
        source=str(payload.get("source", "")),
        heading_path=str(payload.get("heading_path", "")),
        score=hit.score if score is None else score,
    )
