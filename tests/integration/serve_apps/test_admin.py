"""Operator commands against real Redis: stream report, dead-letter listing and replay."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from common.config import Settings
from serve_apps.admin import dead_letters, replay_dead, stream_report

pytestmark = pytest.mark.integration


async def test_replay_moves_dead_letters_back_in_order(redis_url: str, redis_prefix: str) -> None:
    settings = Settings(redis={"url": redis_url, "key_prefix": f"{redis_prefix}:{uuid.uuid4().hex[:6]}"})
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    live, dead = settings.redis.key("stream", "outbound"), settings.redis.key("stream", "outbound-dead")
    try:
        await client.xgroup_create(live, "dispatchers", id="0", mkstream=True)
        for i in range(3):
            await client.xadd(dead, {"data": json.dumps({"n": i}), "reason": "400 bad recipient"})
        await client.xadd(dead, {"reason": "no payload"})  # malformed: never replayed

        listed = await dead_letters(client, settings, "outbound", 10)
        assert [e["reason"] for e in listed[:3]] == ["400 bad recipient"] * 3

        assert await replay_dead(client, settings, "outbound", 10) == 3
        replayed = [json.loads(f["data"])["n"] for _, f in await client.xrange(live)]
        assert replayed == [0, 1, 2]
        assert await client.xlen(dead) == 1

        report = {row["stream"]: row for row in await stream_report(client, settings)}
        assert report["outbound"]["length"] == 3
        assert report["outbound"]["groups"][0]["name"] == "dispatchers"
        assert report["outbound"]["groups"][0]["lag"] == 3
        assert report["outbound-dead"]["length"] == 1
    finally:
        await client.delete(live, dead)
        await client.aclose()


async def test_rebuild_vectors_restores_a_lost_index_from_postgres(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path
) -> None:
    from common.config import ServiceEndpoints
    from common.knowledge.vectorstore import VectorStore
    from pipelines.demo import demo_documents
    from serve_apps.admin import rebuild_vectors

    first = ServiceEndpoints(database_url=database_url, redis_url=redis_url, qdrant_path=tmp_path / "q1")
    demo, result = await _ingest_demo(first)

    # The vector store is lost: rebuild into an empty one from Postgres alone.
    settings = ServiceEndpoints(
        database_url=database_url, redis_url=redis_url, qdrant_path=tmp_path / "q2"
    ).apply(Settings())
    assert await rebuild_vectors(settings, tenant_id=demo.tenant.id, brand_id=demo.brand.id) >= len(
        result.chunk_ids
    )
    store = VectorStore(settings)
    try:
        restored: set[str] = set()
        for doc in demo_documents().documents:
            restored |= store.source_chunk_ids(
                tenant_id=demo.tenant.id, brand_id=demo.brand.id, source=doc.uri
            )
    finally:
        store.close()
    assert set(result.chunk_ids) <= restored


async def test_first_start_on_edge_migrates_a_local_mode_directory_from_postgres(
    make_database, redis_url: str, tmp_path
) -> None:
    from qdrant_client import QdrantClient
    from structlog.testing import capture_logs

    from common.config import ServiceEndpoints
    from common.db import migrate
    from common.knowledge.vectorstore import VectorStore
    from serve_apps.admin import migrate_local_vectors

    # A database of its own: the migration rebuilds every brand it holds.
    database_url = make_database()
    migrate.upgrade(database_url)
    endpoints = ServiceEndpoints(database_url=database_url, redis_url=redis_url, qdrant_path=tmp_path / "new")
    demo, result = await _ingest_demo(endpoints)

    # What an earlier release left: a qdrant-client local-mode directory, no Edge directory.
    old = tmp_path / "old"
    client = QdrantClient(path=str(old))
    client.create_collection("knowledge__all-minilm-l6-v2__384__hybrid", vectors_config={})
    client.close()
    settings = ServiceEndpoints(database_url=database_url, redis_url=redis_url, qdrant_path=old).apply(
        Settings()
    )
    with capture_logs() as logs:
        rebuilt = await migrate_local_vectors(settings, database_url=database_url)
    assert rebuilt == len(result.chunk_ids)
    (line,) = [e for e in logs if e["event"] == "vectorstore.migrated"]
    assert (line["brands"], line["chunks"], line["path"]) == (1, rebuilt, str(old))
    assert (old / "meta.json").is_file()  # the old files are left for the operator

    store = VectorStore(settings)
    try:
        hits = store.search(
            tenant_id=demo.tenant.id, brand_id=demo.brand.id, vector=_unit_query(settings), top_k=50
        )
        assert {h.chunk_id for h in hits} == set(result.chunk_ids)
    finally:
        store.close()
    # later starts do nothing, and a fresh directory (no local-mode files) never migrates
    assert await migrate_local_vectors(settings, database_url=database_url) is None
    fresh = ServiceEndpoints(database_url=database_url, redis_url=redis_url, qdrant_path=tmp_path / "fresh")
    assert await migrate_local_vectors(fresh.apply(Settings()), database_url=database_url) is None


def _unit_query(settings: Settings) -> list[float]:
    dim = settings.embeddings.dimension
    return [dim**-0.5] * dim


async def _ingest_demo(endpoints: Any) -> tuple[Any, Any]:
    """Seed the demo brand and index its knowledge in process: Postgres and a vector store both hold it."""
    from pipelines.demo import demo_documents, seed_demo_brand
    from serve_apps.inprocess import InProcessBackend

    backend = InProcessBackend(Settings(), endpoints)
    try:
        demo = await seed_demo_brand(backend.sessionmaker)
        return demo, await backend.knowledge.ingest(demo.tenant.id, demo.brand.id, demo_documents())
    finally:
        await backend.aclose()
