"""Agent accounts through the API: an admin creates them, agents sign in with a password (argon2id),
act as themselves whatever a header claims, see only their brands, and lose their sessions when signed
out, disabled or given a new password.

Real Postgres and Redis; ``ScriptedChatModel`` and ``ConstantEmbedder`` are test doubles (named so).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr
from sqlalchemy import select, text

from common.config import ApiSettings, ServiceEndpoints, Settings
from common.db.models import AuditEntry
from serve_apps.gateway.app import build_gateway_api
from serve_apps.inprocess import InProcessBackend
from tests.fakes.chat import ScriptedChatModel
from tests.fakes.embedding import ConstantEmbedder

pytestmark = pytest.mark.integration

OPERATOR_KEY = "operator-" + "g" * 40
PASSWORD = "a long passphrase 1"


@dataclass
class World:
    backend: InProcessBackend
    client: httpx.AsyncClient
    slug: str
    admin: dict[str, str]
    shop: str
    outlet: str


@pytest_asyncio.fixture(name="world")
async def world_fixture(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[World]:
    settings = Settings(api=ApiSettings(operator_key=SecretStr(OPERATOR_KEY), key_cache_ttl_s=0))
    endpoints = ServiceEndpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=f"{redis_prefix}:ag{uuid.uuid4().hex[:6]}",
        qdrant_path=tmp_path / "q",
    )
    backend = InProcessBackend(
        settings, endpoints, embedder=ConstantEmbedder(), chat_model=ScriptedChatModel("ok")
    )
    app = build_gateway_api(backend)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        try:
            slug = f"ag-{uuid.uuid4().hex[:8]}"
            created = await client.post(
                "/v1/tenants",
                json={"slug": slug, "name": "A"},
                headers={"authorization": f"Bearer {OPERATOR_KEY}"},
            )
            admin = {"authorization": f"Bearer {created.json()['admin_key']['token']}"}
            shop = (
                await client.post("/v1/brands", json={"slug": "shop", "name": "Shop"}, headers=admin)
            ).json()["id"]
            outlet = (
                await client.post("/v1/brands", json={"slug": "outlet", "name": "Outlet"}, headers=admin)
            ).json()["id"]
            yield World(backend, client, slug, admin, shop, outlet)
        finally:
            await backend.aclose()


async def make_agent(world: World, email: str, **fields: object) -> dict:
    body = {"email": email, "display_name": email.split("@")[0], "password": PASSWORD, **fields}
    r = await world.client.post("/v1/agent-accounts", json=body, headers=world.admin)
    assert r.status_code == 201, r.text
    assert "password" not in r.text and "hash" not in r.text
    return r.json()


async def sign_in(world: World, email: str, password: str = PASSWORD) -> httpx.Response:
    return await world.client.post(
        "/v1/agents/sessions", json={"tenant": world.slug, "email": email, "password": password}
    )


async def handoff(world: World, brand_id: str) -> str:
    """A conversation of ``brand_id`` waiting for a person."""
    r = await world.client.post(
        "/v1/messages/inbound",
        json={
            "brand_id": brand_id,
            "customer_id": uuid.uuid4().hex,
            "text": "I want to talk to a real person",
        },
        headers=world.admin,
    )
    assert r.json()["escalated"] is True, r.text
    return str(r.json()["conversation_id"])


async def test_an_agent_signs_in_and_acts_as_itself_within_its_brands(world: World) -> None:
    await make_agent(world, "Sam@Shop.test", brand_ids=[world.shop])  # emails are case-insensitive
    session = await sign_in(world, "sam@shop.test")
    assert session.status_code == 201, session.text
    token = session.json()["token"]
    assert token.startswith("eas_") and session.json()["agent"]["brand_ids"] == [world.shop]
    me = {"authorization": f"Bearer {token}", "x-agent-id": "the-ceo"}  # a header cannot change who it is

    assert (await world.client.get("/v1/agents/me", headers=me)).json()["agent"] == "sam@shop.test"
    brands = (await world.client.get("/v1/brands", headers=me)).json()
    assert [b["id"] for b in brands] == [world.shop]

    mine, theirs = await handoff(world, world.shop), await handoff(world, world.outlet)
    queue = await world.client.get(f"/v1/agents/brands/{world.shop}/conversations", headers=me)
    assert mine in queue.text
    assert (
        await world.client.get(f"/v1/agents/brands/{world.outlet}/conversations", headers=me)
    ).status_code == 404
    assert (await world.client.get(f"/v1/agents/conversations/{theirs}", headers=me)).status_code == 404
    r = await world.client.post(
        f"/v1/agents/conversations/{theirs}/messages", json={"text": "hi"}, headers=me
    )
    assert r.status_code == 404

    r = await world.client.post(
        f"/v1/agents/conversations/{mine}/messages", json={"text": "Sam here"}, headers=me
    )
    assert r.status_code == 201, r.text
    assert (
        await world.client.post(f"/v1/agents/conversations/{mine}/release", headers=me)
    ).status_code == 200
    async with world.backend.sessionmaker() as s:
        actors = (
            await s.execute(select(AuditEntry.action, AuditEntry.actor).where(AuditEntry.target_id == mine))
        ).all()
    assert sorted(actors) == [
        ("agent.release", "agent:sam@shop.test"),
        ("agent.reply", "agent:sam@shop.test"),
    ]

    # An agent holds no other scope: managing the tenant is 403.
    assert (
        await world.client.post("/v1/keys", json={"name": "k", "scopes": ["admin"]}, headers=me)
    ).status_code == 403

    # Signing out ends this session at once.
    assert (await world.client.delete("/v1/agents/sessions/current", headers=me)).status_code == 204
    gone = await world.client.get("/v1/agents/me", headers=me)
    assert gone.status_code == 401 and gone.json()["error"]["code"] == "unauthorized"


async def test_sign_in_refusals_look_alike_and_passwords_are_stored_as_argon2id(world: World) -> None:
    account = await make_agent(world, "kim@shop.test")
    wrong = await sign_in(world, "kim@shop.test", "not the password")
    unknown = await sign_in(world, "nobody@shop.test")
    other_tenant = await world.client.post(
        "/v1/agents/sessions",
        json={"tenant": "no-such-tenant", "email": "kim@shop.test", "password": PASSWORD},
    )
    assert wrong.status_code == unknown.status_code == other_tenant.status_code == 401
    assert wrong.json() == unknown.json() == other_tenant.json()
    async with world.backend.sessionmaker() as s:
        stored = await s.scalar(
            text("SELECT password_hash FROM agent_accounts WHERE id = :id"), {"id": account["id"]}
        )
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    bad = await world.client.post(
        "/v1/agent-accounts",
        json={"email": "x@y.z", "display_name": "X", "password": "short"},
        headers=world.admin,
    )
    assert bad.status_code in (400, 422) and "error" in bad.json()
    dup = await world.client.post(
        "/v1/agent-accounts",
        json={"email": "KIM@shop.test", "display_name": "K", "password": PASSWORD},
        headers=world.admin,
    )
    assert dup.status_code == 409


async def test_disabling_or_a_new_password_signs_the_agent_out(world: World) -> None:
    account = await make_agent(world, "lee@shop.test")
    token = (await sign_in(world, "lee@shop.test")).json()["token"]
    me = {"authorization": f"Bearer {token}"}
    r = await world.client.patch(
        f"/v1/agent-accounts/{account['id']}",
        json={"password": "another long passphrase"},
        headers=world.admin,
    )
    assert r.status_code == 200 and (await world.client.get("/v1/agents/me", headers=me)).status_code == 401
    assert (await sign_in(world, "lee@shop.test")).status_code == 401  # the old password no longer works
    token = (await sign_in(world, "lee@shop.test", "another long passphrase")).json()["token"]
    me = {"authorization": f"Bearer {token}"}
    await world.client.patch(
        f"/v1/agent-accounts/{account['id']}", json={"disabled": True}, headers=world.admin
    )
    assert (await world.client.get("/v1/agents/me", headers=me)).status_code == 401
    assert (await sign_in(world, "lee@shop.test", "another long passphrase")).status_code == 401
    # An admin account cannot be limited to brands; another tenant's brand is unknown.
    r = await world.client.patch(
        f"/v1/agent-accounts/{account['id']}",
        json={"role": "admin", "brand_ids": [world.shop]},
        headers=world.admin,
    )
    assert r.status_code == 400
    r = await world.client.patch(
        f"/v1/agent-accounts/{account['id']}", json={"brand_ids": [str(uuid.uuid4())]}, headers=world.admin
    )
    assert r.status_code == 404


async def test_a_session_expires(world: World) -> None:
    await make_agent(world, "exp@shop.test")
    world.backend.settings.api.agent_session_hours = 0.5 / 3600  # half a second
    token = (await sign_in(world, "exp@shop.test")).json()["token"]
    me = {"authorization": f"Bearer {token}"}
    assert (await world.client.get("/v1/agents/me", headers=me)).status_code == 200
    await asyncio.sleep(0.8)
    assert (await world.client.get("/v1/agents/me", headers=me)).status_code == 401


async def test_the_queue_updates_live_over_sse_for_the_agents_brand_only(world: World) -> None:
    from tests.integration.gateway.test_webchat import SseReader, served

    await make_agent(world, "live@shop.test", brand_ids=[world.shop])
    token = (await sign_in(world, "live@shop.test")).json()["token"]
    me = {"authorization": f"Bearer {token}"}
    app = build_gateway_api(world.backend)
    async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        assert (await client.get(f"/v1/agents/brands/{world.outlet}/events", headers=me)).status_code == 404
        async with client.stream("GET", f"/v1/agents/brands/{world.shop}/events", headers=me) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            sse = SseReader(resp)
            assert await sse.frame(5) == ["retry: 3000", ": connected"]
            await handoff(world, world.outlet)  # another brand's: not on this stream
            waiting = await handoff(world, world.shop)
            frame = await sse.frame(10)
            while frame[0].startswith(":"):  # heartbeats
                frame = await sse.frame(10)
            fields = dict(line.split(": ", 1) for line in frame)
            assert fields["event"] == "handoff"
            event = json.loads(fields["data"])
            assert event["conversation_id"] == waiting and event["brand_id"] == world.shop
            first_id = fields["id"]
        # Reconnecting with Last-Event-ID resumes right after it: the take-over made meanwhile is there.
        r = await client.post(f"/v1/agents/conversations/{waiting}/release", headers=me)
        assert r.status_code == 200, r.text
        resume = {**me, "last-event-id": first_id}
        async with client.stream("GET", f"/v1/agents/brands/{world.shop}/events", headers=resume) as resp:
            sse = SseReader(resp)
            await sse.frame(5)
            frame = await sse.frame(10)
            while frame[0].startswith(":"):
                frame = await sse.frame(10)
            fields = dict(line.split(": ", 1) for line in frame)
            assert (
                fields["event"] == "released" and json.loads(fields["data"])["agent_id"] == "live@shop.test"
            )
