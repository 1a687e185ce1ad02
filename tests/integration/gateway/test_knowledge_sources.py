"""A brand's knowledge sources through the API: listed with chunk counts and the latest job, and one
deleted with its vectors and chunks (retrieval no longer finds it), tenant- and brand-scoped.

Real Postgres, Redis and embedded Qdrant; ``ConstantEmbedder`` (one vector for every text, named as a
double) is enough: what is under test is which chunks exist, not their ranking.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from common.config import ApiSettings, ServiceEndpoints, Settings
from common.db.models import KnowledgeChunk
from serve_apps.gateway.app import build_gateway_api
from serve_apps.inprocess import InProcessBackend
from tests.fakes.chat import ScriptedChatModel
from tests.fakes.embedding import ConstantEmbedder

pytestmark = pytest.mark.integration

OPERATOR_KEY = "operator-" + "s" * 40
DOCS = {
    "returns.md": "# Returns\n\nYou have 30 days to return an item.\n\n## Refunds\n\nRefunds take 5 days.",
    "shipping.md": "# Shipping\n\nOrders ship within 2 business days.",
}


async def test_list_and_delete_a_source_with_its_vectors(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    settings = Settings(api=ApiSettings(operator_key=SecretStr(OPERATOR_KEY), key_cache_ttl_s=0))
    endpoints = ServiceEndpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=f"{redis_prefix}:ks{uuid.uuid4().hex[:6]}",
        qdrant_path=tmp_path / "q",
    )
    backend = InProcessBackend(
        settings, endpoints, embedder=ConstantEmbedder(), chat_model=ScriptedChatModel("x")
    )
    app = build_gateway_api(backend)
    operator = {"authorization": f"Bearer {OPERATOR_KEY}"}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            keys = []
            for name in ("a", "b"):
                made = await client.post(
                    "/v1/tenants",
                    json={"slug": f"ks{name}-{uuid.uuid4().hex[:8]}", "name": name},
                    headers=operator,
                )
                keys.append({"authorization": f"Bearer {made.json()['admin_key']['token']}"})
            a, b = keys
            brand = (await client.post("/v1/brands", json={"slug": "s", "name": "S"}, headers=a)).json()["id"]
            docs = [
                {"uri": uri, "content": text, "content_type": "text/markdown"} for uri, text in DOCS.items()
            ]
            ingested = await client.post(f"/v1/brands/{brand}/knowledge", json={"documents": docs}, headers=a)
            assert ingested.status_code == 201, ingested.text

            listed = (await client.get(f"/v1/brands/{brand}/knowledge/sources", headers=a)).json()
            by_uri = {s["uri"]: s for s in listed["sources"]}
            assert sorted(by_uri) == ["returns.md", "shipping.md"]
            assert by_uri["returns.md"]["chunks"] >= 2 and by_uri["shipping.md"]["chunks"] >= 1
            assert listed["last_job"] is None  # synchronous uploads make no job

            # Another tenant: the brand and its sources are unknown.
            gone_for_b = await client.get(f"/v1/brands/{brand}/knowledge/sources", headers=b)
            assert gone_for_b.status_code == 404
            source_id = by_uri["returns.md"]["id"]
            assert (
                await client.delete(f"/v1/brands/{brand}/knowledge/sources/{source_id}", headers=b)
            ).status_code == 404

            tenant_id = uuid.UUID((await client.get(f"/v1/brands/{brand}", headers=a)).json()["tenant_id"])
            before = await backend.knowledge.retrieve(tenant_id, uuid.UUID(brand), "return", 10)
            assert {c.source for c in before} == {"returns.md", "shipping.md"}

            deleted = await client.delete(f"/v1/brands/{brand}/knowledge/sources/{source_id}", headers=a)
            assert deleted.status_code == 200, deleted.text
            assert deleted.json() == {
                "id": source_id,
                "uri": "returns.md",
                "chunks_deleted": by_uri["returns.md"]["chunks"],
            }

            after = await backend.knowledge.retrieve(tenant_id, uuid.UUID(brand), "return", 10)
            assert {c.source for c in after} == {"shipping.md"}  # the vectors are gone, the rest stays
            async with backend.sessionmaker() as s:
                left = await s.scalar(
                    select(func.count())
                    .select_from(KnowledgeChunk)
                    .where(KnowledgeChunk.brand_id == uuid.UUID(brand))
                )
            assert left == by_uri["shipping.md"]["chunks"]
            listed = (await client.get(f"/v1/brands/{brand}/knowledge/sources", headers=a)).json()
            assert [s["uri"] for s in listed["sources"]] == ["shipping.md"]
            again = await client.delete(f"/v1/brands/{brand}/knowledge/sources/{source_id}", headers=a)
            assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
            audit = (await client.get("/v1/audit", headers=a)).json()
            assert any(
                e["action"] == "knowledge.source_delete" and e["after"]["uri"] == "returns.md" for e in audit
            )
    finally:
        await backend.aclose()
