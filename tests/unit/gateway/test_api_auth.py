"""Platform API token (API__TOKEN) and reserved web chat customer ids, at the HTTP edge."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from common.config import Settings
from serve_apps.gateway.app import build_gateway_api


class _RecordingOrchestrator:
    """Test double: records calls; the tests only check what the edge lets through."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def handle(self, message: Any) -> Any:
        self.calls.append(message)
        raise AssertionError("the edge must stop these requests before the orchestrator")


class _Backend:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessionmaker: Any = None
        self.redis = aioredis.Redis.from_url("redis://127.0.0.1:1/0")  # never connected by these tests
        self.orchestrator = _RecordingOrchestrator()
        self.intake = self.orchestrator
        self.knowledge: Any = None

    async def ready(self) -> dict[str, bool]:
        return {"database": True, "redis": True}


def _client(token: str | None) -> tuple[httpx.AsyncClient, _Backend]:
    backend = _Backend(Settings(api={"token": token} if token else {}))
    app = build_gateway_api(backend)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://t"), backend


BODY = {"brand_id": str(uuid.uuid4()), "customer_id": "c1", "text": "hi"}


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic s3cret-token", "Bearer"])
async def test_platform_api_needs_the_token_when_configured(header: str | None) -> None:
    client, backend = _client("s3cret-token")
    headers = {"authorization": header} if header else {}
    async with client:
        resp = await client.post("/v1/messages/inbound", json=BODY, headers=headers)
        conv = await client.get(f"/v1/conversations/{uuid.uuid4()}", headers=headers)
        upload = await client.post(
            f"/v1/brands/{uuid.uuid4()}/knowledge/uploads", json={"urls": []}, headers=headers
        )
        health = await client.get("/healthz")
    for r in (resp, conv, upload):
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert health.status_code == 200
    assert backend.orchestrator.calls == []


async def test_web_chat_visitor_ids_are_reserved() -> None:
    client, backend = _client(None)
    async with client:
        for prefix in ("anon:", "user:"):
            resp = await client.post("/v1/messages/inbound", json={**BODY, "customer_id": f"{prefix}victim"})
            assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_input"
    assert backend.orchestrator.calls == []
