"""The real Serve application (all deployments, real model, LLM, Postgres, Redis, Qdrant local mode)."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from common.config import ServiceEndpoints
from common.db.session import make_engine, make_sessionmaker
from pipelines.demo import DemoBrand, demo_documents, seed_demo_brand

pytestmark = [pytest.mark.integration, pytest.mark.ray]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _seed(database_url: str) -> DemoBrand:
    engine = make_engine(database_url, pool_size=1)
    try:
        return await seed_demo_brand(make_sessionmaker(engine))
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def app(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, DemoBrand]]:
    import ray
    from ray import serve

    from serve_apps.app_builder import AppArgs, build_app

    demo = asyncio.run(_seed(database_url))
    qdrant_dir: Path = tmp_path_factory.mktemp("qdrant")
    endpoints = ServiceEndpoints(
        database_url=database_url, redis_url=redis_url, redis_key_prefix=redis_prefix, qdrant_path=qdrant_dir
    )
    port = _free_port()
    ray.init(num_cpus=2, include_dashboard=False, namespace=f"test-{uuid.uuid4().hex[:8]}")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(AppArgs(endpoints=endpoints)), name="assistant-test", route_prefix="/")
        yield f"http://127.0.0.1:{port}", demo
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def ingested(app: tuple[str, DemoBrand]) -> dict[str, object]:
    base, demo = app
    resp = httpx.post(
        f"{base}/v1/brands/{demo.brand.id}/knowledge",
        json=demo_documents().model_dump(mode="json"),
        timeout=300,
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, object] = resp.json()
    return body


def test_health_and_readiness(app: tuple[str, DemoBrand]) -> None:
    base, _ = app
    assert httpx.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}
    ready = httpx.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": True, "redis": True}


def test_ingestion_counts_and_reingest_writes_nothing(
    app: tuple[str, DemoBrand], ingested: dict[str, object]
) -> None:
    base, demo = app
    chunk_ids = ingested["chunk_ids"]
    assert isinstance(chunk_ids, list) and len(chunk_ids) >= 5
    assert ingested["chunks_written"] == len(chunk_ids) and ingested["documents"] >= 4
    again = httpx.post(
        f"{base}/v1/brands/{demo.brand.id}/knowledge",
        json=demo_documents().model_dump(mode="json"),
        timeout=300,
    ).json()
    assert again["chunks_written"] == 0 and again["chunks_deleted"] == 0
    assert again["chunks_unchanged"] == len(chunk_ids) and again["chunk_ids"] == chunk_ids


def test_grounded_answer_end_to_end(
    app: tuple[str, DemoBrand], ingested: dict[str, object], redis_url: str, redis_prefix: str
) -> None:
    base, demo = app
    msg_id = uuid.uuid4().hex
    body = {
        "brand_id": str(demo.brand.id),
        "customer_id": "cust-1",
        "text": "How many days do I have to return an item?",
        "message_id": msg_id,
    }
    resp = httpx.post(f"{base}/v1/messages/inbound", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    reply = resp.json()
    assert reply["text"].strip() and not reply["duplicate"]
    cited = [c["chunk_id"] for c in reply["citations"]]
    assert cited and set(cited) <= set(ingested["chunk_ids"])  # type: ignore[arg-type]
    assert any(
        "return" in c["source"].lower() or "return" in c["heading_path"].lower() for c in reply["citations"]
    )
    assert "30" in reply["text"]  # the demo returns policy: a 30-day window

    # Same client message id again: the stored reply, not a second answer.
    again = httpx.post(f"{base}/v1/messages/inbound", json=body, timeout=120).json()
    assert again["duplicate"] is True and again["message_id"] == reply["message_id"]
    assert again["text"] == reply["text"]

    conv = httpx.get(f"{base}/v1/conversations/{reply['conversation_id']}", timeout=10).json()
    assert [m["direction"] for m in conv["messages"]] == ["inbound", "outbound"]
    assert conv["messages"][0]["provider_message_id"] == msg_id
    assert [c["chunk_id"] for c in conv["messages"][1]["citations"]] == cited

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    entries = client.xrange(f"{redis_prefix}:stream:outbound")
    payloads = [json.loads(fields["data"]) for _, fields in entries]
    mine = [p for p in payloads if p["message_id"] == reply["message_id"]]
    assert len(mine) == 1 and mine[0]["text"] == reply["text"] and mine[0]["in_reply_to"] == msg_id


def test_bad_input_gets_machine_readable_4xx(app: tuple[str, DemoBrand]) -> None:
    base, demo = app
    missing = httpx.post(f"{base}/v1/messages/inbound", json={"brand_id": str(demo.brand.id)}, timeout=10)
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "invalid_input"
    not_json = httpx.post(
        f"{base}/v1/messages/inbound",
        content=b"{nope",
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_input"
    unknown = httpx.post(
        f"{base}/v1/messages/inbound",
        json={"brand_id": str(uuid.uuid4()), "customer_id": "c", "text": "hi"},
        timeout=30,
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    too_long = httpx.post(
        f"{base}/v1/messages/inbound",
        json={"brand_id": str(demo.brand.id), "customer_id": "c", "text": "x" * 5000},
        timeout=30,
    )
    assert too_long.status_code == 413 and too_long.json()["error"]["code"] == "payload_too_large"
    conv = httpx.get(f"{base}/v1/conversations/{uuid.uuid4()}", timeout=10)
    assert conv.status_code == 404
