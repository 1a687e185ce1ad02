"""Two tenants, each with its own Telegram bot and its own WhatsApp number in its own Meta app, side by side.

Everything goes through the public API (operator creates the tenants, each tenant's admin key connects
its channels) and the provider SIMULATOR over HTTP: the simulator only accepts each number's own access
token and each bot's own token, so a reply that reaches it went out with its connection's credentials.
Real Postgres and Redis; the chat model is ``ScriptedChatModel`` (a fixed answer, named as a double) and
the embedder ``ConstantEmbedder``: what is under test is credentials, routing and delivery.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr
from sqlalchemy import select, text

from common.access.connections import Connections
from common.access.principal import Scope, operator_principal
from common.config import (
    ApiSettings,
    ChannelSecrets,
    DeliverySettings,
    SecretsSettings,
    ServiceEndpoints,
    Settings,
)
from common.crypto import CredentialCipher, generate_key, parse_keys
from common.db import migrate
from common.db.models import ChannelConfig, MessageLog
from serve_apps.gateway.app import build_gateway_api
from serve_apps.inprocess import InProcessBackend
from serve_apps.simulator import SimulatorServer, sign_meta
from serve_apps.simulator.webhooks import telegram_update, whatsapp_message, whatsapp_status, whatsapp_update
from tests.auth import key_headers
from tests.delivery import dispatch_all
from tests.fakes.chat import ScriptedChatModel
from tests.fakes.embedding import ConstantEmbedder

pytestmark = pytest.mark.integration

OPERATOR_KEY = "operator-" + "c" * 40
PUBLIC_URL = "https://gw.example.test"
#: The deployment-wide defaults exist and differ from every connection's: they must never be used.
DEFAULT_APP_SECRET = "default-app-secret"
DEFAULT_TG_SECRET = "default-telegram-secret"


@dataclass(frozen=True)
class TenantSpec:
    slug: str
    bot_token: str
    phone_number_id: str
    app_id: str
    access_token: str
    app_secret: str
    verify_token: str

    @property
    def bot_id(self) -> str:
        return self.bot_token.split(":")[0]

    def secrets(self) -> list[str]:
        return [self.bot_token, self.access_token, self.app_secret, self.verify_token]


A = TenantSpec(
    "acme", "7100000001:AAA-bot-token-a", "PN-A", "APP-A", "wa-token-a-123", "app-secret-a", "verify-a-1234"
)
B = TenantSpec(
    "bolt", "7200000002:BBB-bot-token-b", "PN-B", "APP-B", "wa-token-b-456", "app-secret-b", "verify-b-5678"
)


@dataclass
class Tenant:
    spec: TenantSpec
    id: uuid.UUID
    brand_id: uuid.UUID
    headers: dict[str, str]
    telegram_id: uuid.UUID
    telegram_secret: str
    whatsapp_id: uuid.UUID


@dataclass
class World:
    backend: InProcessBackend
    client: httpx.AsyncClient
    sim: SimulatorServer
    endpoints: ServiceEndpoints
    a: Tenant
    b: Tenant
    answers: list[httpx.Response]


def make_settings(sim: SimulatorServer, keys: str) -> Settings:
    return Settings(
        api=ApiSettings(operator_key=SecretStr(OPERATOR_KEY), key_cache_ttl_s=0),
        secrets=SecretsSettings(encryption_keys=SecretStr(keys)),
        channels=ChannelSecrets(
            meta_app_secret=SecretStr(DEFAULT_APP_SECRET),
            telegram_secret_token=SecretStr(DEFAULT_TG_SECRET),
            meta_graph_url=sim.url,
            telegram_api_url=sim.url,
            public_url=PUBLIC_URL,
            route_cache_s=0,
        ),
        delivery=DeliverySettings(claim_min_idle_ms=0, send_attempts=1, max_attempts=2),
    )


@pytest.fixture(scope="module")
def sim() -> AsyncIterator[SimulatorServer]:
    tokens = {A.phone_number_id: A.access_token, B.phone_number_id: B.access_token}
    with SimulatorServer(meta_access_tokens=tokens, telegram_bot_tokens=(A.bot_token, B.bot_token)) as server:
        yield server


async def onboard(client: httpx.AsyncClient, spec: TenantSpec, answers: list[httpx.Response]) -> Tenant:
    operator = {"authorization": f"Bearer {OPERATOR_KEY}"}
    slug = f"{spec.slug}-{uuid.uuid4().hex[:6]}"
    created = await client.post("/v1/tenants", json={"slug": slug, "name": spec.slug}, headers=operator)
    assert created.status_code == 201, created.text
    headers = {"authorization": f"Bearer {created.json()['admin_key']['token']}"}
    brand = await client.post("/v1/brands", json={"slug": "main", "name": spec.slug}, headers=headers)
    assert brand.status_code == 201, brand.text
    brand_id = brand.json()["id"]
    tg = await client.post(
        f"/v1/brands/{brand_id}/channels",
        json={"channel": "telegram", "bot_token": spec.bot_token},
        headers=headers,
    )
    wa = await client.post(
        f"/v1/brands/{brand_id}/channels",
        json={
            "channel": "whatsapp",
            "phone_number_id": spec.phone_number_id,
            "business_account_id": f"WABA-{spec.slug}",
            "app_id": spec.app_id,
            "access_token": spec.access_token,
            "app_secret": spec.app_secret,
            "verify_token": spec.verify_token,
        },
        headers=headers,
    )
    answers += [created, brand, tg, wa]
    assert tg.status_code == 201 and wa.status_code == 201, (tg.text, wa.text)
    assert wa.json()["webhook_url"] == f"{PUBLIC_URL}/webhooks/meta/{spec.app_id}"
    assert wa.json()["credentials"] == ["access_token", "app_secret", "verify_token"]
    connection = tg.json()
    assert connection["credentials"] == ["bot_token", "secret_token"]
    assert connection["webhook_registered"] is True
    return Tenant(
        spec=spec,
        id=uuid.UUID(created.json()["tenant"]["id"]),
        brand_id=uuid.UUID(brand_id),
        headers=headers,
        telegram_id=uuid.UUID(connection["id"]),
        telegram_secret="",  # filled from what Telegram (the simulator) was given
        whatsapp_id=uuid.UUID(wa.json()["id"]),
    )


@pytest.fixture(scope="module")
def database(make_database) -> str:
    """This module's own database: rotation re-encrypts every row, so no other test's rows may be there."""
    url = make_database()
    migrate.upgrade(url)
    return url


@pytest_asyncio.fixture(name="world")
async def world_fixture(
    database: str, redis_url: str, redis_prefix: str, tmp_path: Path, sim: SimulatorServer
) -> AsyncIterator[World]:
    sim.state.clear()
    endpoints = ServiceEndpoints(
        database_url=database,
        redis_url=redis_url,
        redis_key_prefix=f"{redis_prefix}:cc{uuid.uuid4().hex[:6]}",
        qdrant_path=tmp_path / "q",
    )
    backend = InProcessBackend(
        make_settings(sim, generate_key()),
        endpoints,
        embedder=ConstantEmbedder(),
        chat_model=ScriptedChatModel("scripted answer"),
    )
    app = build_gateway_api(backend)
    answers: list[httpx.Response] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        try:
            a, b = await onboard(client, A, answers), await onboard(client, B, answers)
            for tenant in (a, b):
                registration = sim.state.telegram_webhooks[tenant.spec.bot_id]
                assert registration["url"] == f"{PUBLIC_URL}/webhooks/telegram/{tenant.telegram_id}"
                tenant.telegram_secret = str(registration["secret_token"])
            assert a.telegram_secret != b.telegram_secret
            yield World(backend, client, sim, endpoints, a, b, answers)
            # Disconnecting through the API frees the accounts for the next test (and is tested so).
            for tenant in (a, b):
                for connection in (tenant.telegram_id, tenant.whatsapp_id):
                    gone = await client.delete(f"/v1/channels/{connection}", headers=tenant.headers)
                    assert gone.status_code in (200, 404), gone.text  # 404: a test removed it already
                    assert (
                        await client.get(f"/v1/channels/{connection}", headers=tenant.headers)
                    ).status_code == 404
        finally:
            await backend.aclose()


async def post_whatsapp(world: World, *, app_id: str, number: str, secret: str, text_: str) -> httpx.Response:
    body = json.dumps(
        whatsapp_update(phone_number_id=number, messages=[whatsapp_message(sender="15551230000", text=text_)])
    ).encode()
    headers = {"content-type": "application/json", "x-hub-signature-256": sign_meta(body, secret)}
    return await world.client.post(f"/webhooks/meta/{app_id}", content=body, headers=headers)


async def post_telegram(world: World, *, path: str, secret: str, text_: str) -> httpx.Response:
    body = json.dumps(telegram_update(chat_id=4242, text=text_)).encode()
    headers = {"content-type": "application/json", "x-telegram-bot-api-secret-token": secret}
    return await world.client.post(path, content=body, headers=headers)


async def inbound(world: World, tenant: Tenant) -> list[tuple[str, str]]:
    async with world.backend.sessionmaker() as s:
        rows = await s.execute(
            select(MessageLog.channel, MessageLog.text).where(
                MessageLog.brand_id == tenant.brand_id, MessageLog.direction == "inbound"
            )
        )
        return sorted(rows.tuples())


async def answer_and_deliver(world: World) -> None:
    """Draft a reply to every stored inbound message, then run a dispatcher against the simulator."""
    async with world.backend.sessionmaker() as s:
        ids = (await s.scalars(select(MessageLog.id).where(MessageLog.direction == "inbound"))).all()
    for inbound_id in ids:
        await world.backend.orchestrator.process_stored(inbound_id)
    await world.backend.orchestrator.flush_publishes()
    await dispatch_all(world.backend)


async def test_each_connection_verifies_with_its_own_secret_and_replies_with_its_own_token(
    world: World, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    a, b = world.a, world.b
    # The other tenant's secret, on either URL, is 401 and writes nothing.
    forged = [
        await post_whatsapp(world, app_id=A.app_id, number=A.phone_number_id, secret=B.app_secret, text_="x"),
        await post_whatsapp(
            world, app_id=A.app_id, number=A.phone_number_id, secret=DEFAULT_APP_SECRET, text_="x"
        ),
        await post_telegram(
            world, path=f"/webhooks/telegram/{a.telegram_id}", secret=b.telegram_secret, text_="x"
        ),
        await post_telegram(
            world, path=f"/webhooks/telegram/{a.telegram_id}", secret=DEFAULT_TG_SECRET, text_="x"
        ),
    ]
    assert [r.status_code for r in forged] == [401] * 4
    assert all(r.json()["error"]["code"] == "unauthorized" for r in forged)
    # B's app, correctly signed with B's secret, cannot speak for A's number; nor can the default URLs.
    smuggled = await post_whatsapp(
        world, app_id=B.app_id, number=A.phone_number_id, secret=B.app_secret, text_="x"
    )
    assert smuggled.status_code == 200 and smuggled.json()["ignored"] == 1
    default_wa = json.dumps(
        whatsapp_update(phone_number_id=A.phone_number_id, messages=[whatsapp_message(sender="1", text="x")])
    ).encode()
    r = await world.client.post(
        "/webhooks/whatsapp",
        content=default_wa,
        headers={"x-hub-signature-256": sign_meta(default_wa, DEFAULT_APP_SECRET)},
    )
    assert r.status_code == 200 and r.json()["ignored"] == 1
    r = await post_telegram(world, path=f"/webhooks/telegram/{A.bot_id}", secret=DEFAULT_TG_SECRET, text_="x")
    assert r.status_code == 200 and r.json()["ignored"] == 1
    assert await inbound(world, a) == [] and await inbound(world, b) == []

    # Each with its own secret is accepted, for its own brand only.
    for tenant in (a, b):
        spec = tenant.spec
        ok_wa = await post_whatsapp(
            world,
            app_id=spec.app_id,
            number=spec.phone_number_id,
            secret=spec.app_secret,
            text_=f"wa {spec.slug}",
        )
        ok_tg = await post_telegram(
            world,
            path=f"/webhooks/telegram/{tenant.telegram_id}",
            secret=tenant.telegram_secret,
            text_=f"tg {spec.slug}",
        )
        assert ok_wa.json()["accepted"] == 1 and ok_tg.json()["accepted"] == 1, (ok_wa.text, ok_tg.text)
    assert await inbound(world, a) == [("telegram", "tg acme"), ("whatsapp", "wa acme")]
    assert await inbound(world, b) == [("telegram", "tg bolt"), ("whatsapp", "wa bolt")]

    # Replies: the simulator accepts each account's send only with that account's own token.
    await answer_and_deliver(world)
    sent = {(m.channel, m.account) for m in world.sim.state.sent()}
    assert sent == {
        ("whatsapp", A.phone_number_id),
        ("whatsapp", B.phone_number_id),
        ("telegram", A.bot_id),
        ("telegram", B.bot_id),
    }

    # No credential in any answer, any log line, or in plaintext in Postgres.
    secrets_ = [*A.secrets(), *B.secrets(), a.telegram_secret, b.telegram_secret]
    listed = [await world.client.get(f"/v1/brands/{t.brand_id}/channels", headers=t.headers) for t in (a, b)]
    audit = [await world.client.get("/v1/audit", headers=t.headers) for t in (a, b)]
    bodies = " ".join(r.text for r in [*world.answers, *forged, *listed, *audit])
    logs = caplog.text + " ".join(str(r.__dict__) for r in caplog.records) + capsys.readouterr().out
    async with world.backend.sessionmaker() as s:
        stored = " ".join(str(v) for v in (await s.execute(text("SELECT * FROM channel_configs"))).all())
        audited = " ".join(str(v) for v in (await s.execute(text("SELECT * FROM audit_log"))).all())
    assert "webhook_received" in logs and "channel.connect" in audited  # the haystacks are not empty
    for secret in secrets_:
        for where, haystack in (
            ("answers", bodies),
            ("logs", logs),
            ("postgres", stored),
            ("audit", audited),
        ):
            assert secret not in haystack, f"a credential leaked into {where}"


@contextlib.asynccontextmanager
async def replica(world: World, tmp_path: Path, keys: str) -> AsyncIterator[World]:
    """Another gateway over the same database and Redis with ``keys`` (a replica, or one after a restart)."""
    backend = InProcessBackend(
        make_settings(world.sim, keys),
        world.endpoints.model_copy(update={"qdrant_path": tmp_path / "q2"}),  # one owner per embedded store
        embedder=ConstantEmbedder(),
        chat_model=ScriptedChatModel("scripted answer"),
    )
    app = build_gateway_api(backend)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            yield World(backend, client, world.sim, world.endpoints, world.a, world.b, [])
    finally:
        await backend.aclose()


async def test_key_rotation_keeps_every_connection_working(world: World, tmp_path: Path) -> None:
    old = world.backend.settings.secrets.encryption_keys
    assert old is not None
    new = generate_key()
    # 1: every replica gets "new,old" (both decrypt); 2: admin rotate-keys; 3: the old key is removed.
    both = make_settings(world.sim, f"{new},{old.get_secret_value()}")
    rotated = await Connections(world.backend.sessionmaker, both).rotate_keys(
        operator_principal("operator:test")
    )
    assert rotated >= 4
    async with world.backend.sessionmaker() as s:
        tokens = (
            await s.scalars(select(ChannelConfig.credentials).where(ChannelConfig.credentials.is_not(None)))
        ).all()
    assert all(
        CredentialCipher(parse_keys(new)).decrypt(t) for t in tokens
    )  # the new key alone reads every row
    async with replica(world, tmp_path, new) as after:
        r = await post_telegram(
            after,
            path=f"/webhooks/telegram/{world.a.telegram_id}",
            secret=world.a.telegram_secret,
            text_="after",
        )
        assert r.json()["accepted"] == 1, r.text
        r = await post_whatsapp(
            after, app_id=B.app_id, number=B.phone_number_id, secret=B.app_secret, text_="after"
        )
        assert r.json()["accepted"] == 1, r.text
        await answer_and_deliver(after)
    sent = {(m.channel, m.account) for m in world.sim.state.sent()}
    assert {("telegram", A.bot_id), ("whatsapp", B.phone_number_id)} <= sent


async def test_stored_credentials_without_their_key_are_a_503_not_a_crash(
    world: World, tmp_path: Path
) -> None:
    async with replica(world, tmp_path, generate_key()) as lost:  # a key that never encrypted anything here
        r = await post_telegram(
            lost, path=f"/webhooks/telegram/{world.a.telegram_id}", secret=world.a.telegram_secret, text_="x"
        )
    assert r.status_code == 503 and r.json()["error"]["code"] == "credentials_unavailable"
    assert world.a.telegram_secret not in r.text


async def post_statuses(
    world: World, spec: TenantSpec, *, secret: str, number: str, statuses: list[dict]
) -> httpx.Response:
    body = json.dumps(whatsapp_update(phone_number_id=number, statuses=statuses)).encode()
    headers = {"content-type": "application/json", "x-hub-signature-256": sign_meta(body, secret)}
    return await world.client.post(f"/webhooks/meta/{spec.app_id}", content=body, headers=headers)


async def test_provider_receipts_update_the_brands_own_deliveries_only(world: World) -> None:
    a, b = world.a, world.b
    for tenant in (a, b):
        spec = tenant.spec
        r = await post_whatsapp(
            world, app_id=spec.app_id, number=spec.phone_number_id, secret=spec.app_secret, text_="hi"
        )
        assert r.json()["accepted"] == 1, r.text
    await answer_and_deliver(world)
    wamid = {m.account: m.provider_message_id for m in world.sim.state.sent("whatsapp")}
    a_id, b_id = wamid[A.phone_number_id], wamid[B.phone_number_id]

    def status(mid: str, kind: str, **extra: object) -> dict:
        return {**whatsapp_status(recipient="15551230000", message_id=mid, status=kind), **extra}

    # Out of order and repeated: read wins over a late "delivered"; B's app cannot touch A's message.
    r = await post_statuses(
        world,
        A,
        secret=A.app_secret,
        number=A.phone_number_id,
        statuses=[status(a_id, "read"), status(a_id, "delivered")],
    )
    assert r.json()["receipts"] == 2, r.text
    r = await post_statuses(
        world, B, secret=B.app_secret, number=A.phone_number_id, statuses=[status(a_id, "failed")]
    )
    assert r.json()["receipts"] == 0 and r.json()["ignored"] == 1
    r = await post_statuses(
        world, B, secret=B.app_secret, number=B.phone_number_id, statuses=[status(a_id, "failed")]
    )
    assert r.json()["receipts"] == 0  # B's number, A's message id: not one of B's deliveries
    failure = status(b_id, "failed", errors=[{"code": 131047, "title": "Re-engagement message"}])
    r = await post_statuses(world, B, secret=B.app_secret, number=B.phone_number_id, statuses=[failure])
    assert r.json()["receipts"] == 1

    async def reply_delivery(tenant: Tenant) -> dict:
        async with world.backend.sessionmaker() as s:
            conversation = await s.scalar(
                select(MessageLog.conversation_id).where(
                    MessageLog.brand_id == tenant.brand_id, MessageLog.channel == "whatsapp"
                )
            )
        key = await key_headers(world.backend.sessionmaker, tenant.id, Scope.CONVERSATIONS_READ)
        found = (await world.client.get(f"/v1/conversations/{conversation}", headers=key)).json()
        [reply] = [m for m in found["messages"] if m["direction"] == "outbound"]
        return reply["delivery"]

    assert (await reply_delivery(a))["receipt"] == "read"
    failed = await reply_delivery(b)
    assert (
        failed["status"] == "sent"
        and failed["receipt"] == "failed"
        and failed["error"] == "131047: Re-engagement message"
    )


async def test_removing_a_bot_deletes_its_webhook_at_telegram(world: World) -> None:
    assert A.bot_id in world.sim.state.telegram_webhooks
    gone = await world.client.delete(f"/v1/channels/{world.a.telegram_id}", headers=world.a.headers)
    assert gone.status_code == 200 and gone.json()["external_id"] == A.bot_id
    assert A.bot_id not in world.sim.state.telegram_webhooks and B.bot_id in world.sim.state.telegram_webhooks
    # Its URL now knows no connection: the same 401 as a wrong secret.
    r = await post_telegram(
        world, path=f"/webhooks/telegram/{world.a.telegram_id}", secret=world.a.telegram_secret, text_="x"
    )
    assert r.status_code == 401


async def test_a_whatsapp_connection_takes_its_out_of_window_template(world: World) -> None:
    url, key = f"/v1/channels/{world.a.whatsapp_id}", world.a.headers
    ok = await world.client.patch(
        url, json={"window_template": {"name": "support_followup", "language": "en_US"}}, headers=key
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["settings"]["window_template"] == {
        "name": "support_followup",
        "language": "en_US",
        "parameters": ["{reply}"],  # the default: the reply is the one body parameter
    }
    bad = await world.client.patch(
        url, json={"window_template": {"name": "Has Spaces", "language": "en"}}, headers=key
    )
    assert bad.status_code in (400, 422) and "error" in bad.json()
    telegram = await world.client.patch(
        f"/v1/channels/{world.a.telegram_id}",
        json={"window_template": {"name": "x", "language": "en"}},
        headers=key,
    )
    assert telegram.status_code == 400
    cleared = await world.client.patch(url, json={"clear_window_template": True}, headers=key)
    assert "window_template" not in cleared.json()["settings"] and cleared.json()["enabled"] is True


async def test_templates_sync_from_whatsapp_and_check_the_window_template(world: World) -> None:
    url, key = f"/v1/channels/{world.a.whatsapp_id}", world.a.headers
    synced = await world.client.post(f"{url}/templates/sync", headers=key)
    assert synced.status_code == 200, synced.text
    templates = {
        (t["name"], t["status"], t["body_parameters"]) for t in synced.json()["settings"]["templates"]
    }
    assert templates == {("support_followup", "APPROVED", 1), ("order_update", "PENDING", 2)}
    assert synced.json()["settings"]["templates_synced_at"]
    # Checked against them: a pending template, or one WhatsApp lacks, is refused with the usable ones.
    pending = await world.client.patch(
        url, json={"window_template": {"name": "order_update", "language": "en_US"}}, headers=key
    )
    assert pending.status_code == 400 and "PENDING" in pending.json()["error"]["message"]
    assert pending.json()["error"]["details"]["usable"] == ["support_followup:en_US"]
    unknown = await world.client.patch(
        url, json={"window_template": {"name": "nope", "language": "en_US"}}, headers=key
    )
    assert unknown.status_code == 400
    no_reply = await world.client.patch(
        url,
        json={"window_template": {"name": "support_followup", "language": "en_US", "parameters": ["Hi"]}},
        headers=key,
    )
    assert no_reply.status_code == 400  # a template that would not carry the reply
    ok = await world.client.patch(
        url, json={"window_template": {"name": "support_followup", "language": "en_US"}}, headers=key
    )
    assert ok.status_code == 200
    # Only WhatsApp connections have templates; another tenant's connection is unknown.
    telegram = await world.client.post(f"/v1/channels/{world.a.telegram_id}/templates/sync", headers=key)
    assert telegram.status_code == 400
    other = await world.client.post(f"{url}/templates/sync", headers=world.b.headers)
    assert other.status_code == 404
