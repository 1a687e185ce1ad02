"""Operator commands against real Redis: stream report, dead-letter listing and replay."""

from __future__ import annotations

import json
import uuid

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
    from pipelines.demo import demo_documents, seed_demo_brand
    from serve_apps.admin import rebuild_vectors
    from serve_apps.inprocess import InProcessBackend

    first = ServiceEndpoints(database_url=database_url, redis_url=redis_url, qdrant_path=tmp_path / "q1")
    backend = InProcessBackend(Settings(), first)
    try:
        demo = await seed_demo_brand(backend.sessionmaker)
        result = await backend.knowledge.ingest(demo.tenant.id, demo.brand.id, demo_documents())
    finally:
        await backend.aclose()

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
