"""Platform API keys and reserved web chat customer ids, at the HTTP edge (no database: the
authorization matrix in tests/integration/gateway/test_authorization.py covers real keys)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from common.access.principal import Principal, Scope
from common.config import Settings
from common.errors import Unauthorized
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


class _FixedAuthenticator:
    """Test double of the gateway's Authenticator: every bearer token is one tenant's messages key."""

    async def principal(self, authorization: str) -> Principal:
        if not authorization:
            raise Unauthorized("missing API key")
        return Principal(actor="key:test", scopes=frozenset({Scope.MESSAGES_WRITE}), tenant_id=uuid.uuid4())


OPERATOR = "operator-" + "k" * 40


def _client(*, fixed: bool = False) -> tuple[httpx.AsyncClient, _Backend]:
    backend = _Backend(Settings(api={"operator_key": OPERATOR}))
    app = build_gateway_api(backend)  # type: ignore[arg-type]
    if fixed:
        app.state.authenticator = _FixedAuthenticator()
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://t"), backend


BODY = {"brand_id": str(uuid.uuid4()), "customer_id": "c1", "text": "hi"}


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {OPERATOR}", "Bearer", "Bearer ema_x_y"])
async def test_platform_api_needs_a_key(header: str | None) -> None:
    client, backend = _client()
    headers = {"authorization": header} if header else {}
    async with client:
        resp = await client.post("/v1/messages/inbound", json=BODY, headers=headers)
        conv = await client.get(f"/v1/conversations/{uuid.uuid4()}", headers=headers)
        upload = await client.post(
            f"/v1/brands/{uuid.uuid4()}/knowledge/uploads", json={"urls": []}, headers=headers
        )
        metrics = await client.get("/metrics", headers=headers)
        health = await client.get("/healthz")
    for r in (resp, conv, upload, metrics):
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert health.status_code == 200
    assert backend.orchestrator.calls == []


async def test_the_operator_key_is_no_tenant_key() -> None:
    client, backend = _client()
    async with client:
        resp = await client.post(
            "/v1/messages/inbound", json=BODY, headers={"authorization": f"Bearer {OPERATOR}"}
        )
        metrics = await client.get("/metrics", headers={"authorization": f"Bearer {OPERATOR}"})
    assert resp.status_code == 403 and resp.json()["error"]["details"] == {"required_scope": "messages:write"}
    assert metrics.status_code == 200
    assert backend.orchestrator.calls == []


async def test_web_chat_visitor_ids_are_reserved() -> None:
    client, backend = _client(fixed=True)
    async with client:
        for prefix in ("anon:", "user:"):
            resp = await client.post(
                "/v1/messages/inbound",
                json={**BODY, "customer_id": f"{prefix}victim"},
                headers={"authorization": "Bearer any"},
            )
            assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_input"
    assert backend.orchestrator.calls == []
