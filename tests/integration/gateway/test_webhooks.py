"""Channel webhooks through the gateway app in-process: real Postgres and Redis, embedded Qdrant (Edge).

Test doubles (named as such): ``ConstantEmbedder`` returns the same unit vector for every text (no model
load; the brands here have no knowledge, so retrieval finds nothing) and ``ScriptedChatModel`` answers a
fixed text. What is under test is verification, parsing, routing, idempotency and the durable accept.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select

from common.channels.base import ChannelEvent
from common.config import ChannelSecrets, ServiceEndpoints, Settings
from common.conversation.inbound_worker import InboundWorker, WorkerConfig
from common.conversation.intake import Intake
from common.db import repositories as repo
from common.db.models import MessageLog, OutboxMessage
from common.domain import Channel, InboundMessage, Persona
from common.outbox import OutboxPublisher
from common.streams import INBOUND_STREAM, StreamPublisher
from serve_apps.gateway.app import build_gateway_api
from serve_apps.inprocess import InProcessBackend
from tests.contract.test_channel_payloads import BOT, EXPECTED, FIXTURES, IG, WA
from tests.fakes.chat import ScriptedChatModel
from tests.fakes.embedding import ConstantEmbedder

pytestmark = pytest.mark.integration

APP_SECRET = "meta-app-secret-for-tests"
VERIFY_TOKEN = "verify-token-for-tests"
TG_SECRET = "telegram-secret-for-tests"
FALLBACK = "I can't read that kind of message yet."


@dataclass
class Env:
    backend: InProcessBackend
    client: httpx.AsyncClient
    brand_id: uuid.UUID
    tenant_id: uuid.UUID
    chat: ScriptedChatModel


async def seed_brand(backend: InProcessBackend, *, settings_by_channel: dict[Channel, dict] | None = None):
    tenant_id, brand_id = uuid.uuid4(), uuid.uuid4()
    async with backend.sessionmaker() as s:
        await repo.upsert_tenant(s, tenant_id=tenant_id, slug=f"t-{tenant_id.hex[:8]}", name="T")
        await repo.upsert_brand(
            s,
            brand_id=brand_id,
            tenant_id=tenant_id,
            slug="b",
            name="B",
            persona=Persona(fallback_message=FALLBACK),
        )
        for channel, external in ((Channel.WHATSAPP, WA), (Channel.INSTAGRAM, IG), (Channel.TELEGRAM, BOT)):
            await repo.upsert_channel_config(
                s,
                tenant_id=tenant_id,
                brand_id=brand_id,
                channel=channel,
                external_id=external,
                settings=(settings_by_channel or {}).get(channel, {}),
            )
        await s.commit()
    return tenant_id, brand_id


@pytest_asyncio.fixture(name="env")
async def env_fixture(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[Env]:
    endpoints = ServiceEndpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=f"{redis_prefix}:{uuid.uuid4().hex[:6]}",
        qdrant_path=tmp_path / "q",
    )
    settings = Settings(
        channels=ChannelSecrets(
            meta_app_secret=APP_SECRET, meta_verify_token=VERIFY_TOKEN, telegram_secret_token=TG_SECRET
        )
    )
    chat = ScriptedChatModel("scripted answer")
    backend = InProcessBackend(settings, endpoints, embedder=ConstantEmbedder(), chat_model=chat)
    tenant_id, brand_id = await seed_brand(backend)
    app = build_gateway_api(backend)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        try:
            yield Env(backend, client, brand_id, tenant_id, chat)
        finally:
            await backend.aclose()


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def raw(channel: Channel, name: str) -> bytes:
    return (FIXTURES / channel.value / f"{name}.json").read_bytes()


async def deliver(
    client: httpx.AsyncClient, channel: Channel, body: bytes, *, headers: dict | None = None
) -> httpx.Response:
    if channel is Channel.TELEGRAM:
        path, auth = f"/webhooks/telegram/{BOT}", {"x-telegram-bot-api-secret-token": TG_SECRET}
    else:
        path, auth = f"/webhooks/{channel.value}", {"x-hub-signature-256": sign(body)}
    sent = {"content-type": "application/json", **(auth if headers is None else headers)}
    return await client.post(path, content=body, headers=sent)


async def inbound_rows(env: Env) -> list[tuple[str, str]]:
    async with env.backend.sessionmaker() as s:
        rows = await s.execute(
            select(MessageLog.channel, MessageLog.provider_message_id).where(
                MessageLog.brand_id == env.brand_id, MessageLog.direction == "inbound"
            )
        )
        return sorted((c, p) for c, p in rows.tuples())


async def stream_len(env: Env, name: str) -> int:
    return int(await env.backend.redis.xlen(env.backend.settings.redis.key("stream", name)))


async def test_each_fixture_three_times_concurrently_gives_one_row_per_message(env: Env) -> None:
    deliveries = [(channel, name) for (channel, name) in EXPECTED for _ in range(3)]
    random.Random(7).shuffle(deliveries)
    responses = await asyncio.gather(*(deliver(env.client, c, raw(c, n)) for c, n in deliveries))
    assert [r.status_code for r in responses] == [200] * len(deliveries), [r.text for r in responses]

    expected = sorted(
        (channel.value, e.message_id)
        for (channel, _), events in EXPECTED.items()
        for e in events
        if isinstance(e, ChannelEvent)
    )
    assert len(expected) == 31
    assert await inbound_rows(env) == expected
    # One queued entry per unique message: the losers of each race queued nothing.
    assert await stream_len(env, "inbound") == len(expected)
    bodies = [r.json() for r in responses]
    assert sum(b["accepted"] for b in bodies) == len(expected)
    assert sum(b["duplicates"] for b in bodies) == 2 * len(expected)


@pytest.mark.parametrize("channel", [Channel.WHATSAPP, Channel.INSTAGRAM])
async def test_forged_meta_webhooks_are_401_and_write_nothing(env: Env, channel: Channel) -> None:
    body = raw(channel, "batched")
    other = raw(channel, "text")
    reformatted = json.dumps(json.loads(body), separators=(",", ":")).encode()
    assert reformatted != body and json.loads(reformatted) == json.loads(body)
    attempts = [
        {"x-hub-signature-256": sign(body, "wrong-secret")},
        {},
        {"x-hub-signature-256": sign(other)},  # a valid signature, but over another body
        {"x-hub-signature-256": "sha256="},
        {"x-hub-signature-256": sign(body).upper()},
    ]
    for headers in attempts:
        r = await deliver(env.client, channel, body, headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "unauthorized"
    # A replay of a signed body with only its JSON whitespace changed.
    r = await deliver(env.client, channel, reformatted, headers={"x-hub-signature-256": sign(body)})
    assert r.status_code == 401
    assert await inbound_rows(env) == [] and await stream_len(env, "inbound") == 0
    # The same body, correctly signed, is accepted (so the 401s above were about the signature).
    assert (await deliver(env.client, channel, body)).json()["accepted"] == 3


async def test_forged_telegram_webhooks_are_401_and_write_nothing(env: Env) -> None:
    body = raw(Channel.TELEGRAM, "message")
    for headers in ({"x-telegram-bot-api-secret-token": "guess"}, {}, {"x-hub-signature-256": sign(body)}):
        r = await deliver(env.client, Channel.TELEGRAM, body, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert await inbound_rows(env) == []
    assert (await deliver(env.client, Channel.TELEGRAM, body)).json()["accepted"] == 1


async def test_meta_verification_handshake(env: Env) -> None:
    for channel in ("whatsapp", "instagram"):
        params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}
        ok = await env.client.get(f"/webhooks/{channel}", params=params)
        assert ok.status_code == 200 and ok.text == "1158201444"
        wrong = await env.client.get(f"/webhooks/{channel}", params={**params, "hub.verify_token": "x"})
        assert wrong.status_code == 401 and "1158201444" not in wrong.text
        mode = await env.client.get(f"/webhooks/{channel}", params={**params, "hub.mode": "unsubscribe"})
        assert mode.status_code == 400 and mode.json()["error"]["code"] == "invalid_input"
        missing = await env.client.get(f"/webhooks/{channel}")
        assert missing.status_code == 400 and missing.json()["error"]["details"]["errors"]


async def test_bad_bodies_are_machine_readable_4xx(env: Env) -> None:
    not_json = b'{"object": "whatsapp_business_account", "entry": ['
    r = await deliver(env.client, Channel.WHATSAPP, not_json)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_input"
    bad_shape = json.dumps({"object": "whatsapp_business_account", "entry": [{"changes": 5}]}).encode()
    r = await deliver(env.client, Channel.WHATSAPP, bad_shape)
    assert r.status_code == 400 and r.json()["error"]["details"]["errors"]
    r = await deliver(env.client, Channel.TELEGRAM, b'{"message": {}}')
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_input"
    big = b'{"object": "instagram", "entry": [], "pad": "' + b"x" * 300_000 + b'"}'
    r = await deliver(env.client, Channel.INSTAGRAM, big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    r = await env.client.post("/webhooks/telegram/not-a-number", content=b"{}")
    assert r.status_code == 400
    assert await inbound_rows(env) == []


async def test_unknown_or_disabled_accounts_are_ignored_alike(env: Env) -> None:
    unknown = raw(Channel.WHATSAPP, "text").replace(WA.encode(), b"999999999999999")
    r_unknown = await deliver(env.client, Channel.WHATSAPP, unknown)
    async with env.backend.sessionmaker() as s:
        await repo.upsert_channel_config(
            s,
            tenant_id=env.tenant_id,
            brand_id=env.brand_id,
            channel=Channel.WHATSAPP,
            external_id=WA,
            settings={},
            enabled=False,
        )
        await s.commit()
    r_disabled = await deliver(env.client, Channel.WHATSAPP, raw(Channel.WHATSAPP, "text"))
    assert r_unknown.status_code == r_disabled.status_code == 200
    assert (
        r_unknown.json()
        == r_disabled.json()
        == {"status": "ok", "accepted": 0, "duplicates": 0, "ignored": 1, "receipts": 0}
    )
    # A Telegram bot nobody configured answers exactly like any ignored update.
    tg = await env.client.post(
        "/webhooks/telegram/123",
        content=raw(Channel.TELEGRAM, "message"),
        headers={"x-telegram-bot-api-secret-token": TG_SECRET},
    )
    assert tg.json() == r_unknown.json()
    assert await inbound_rows(env) == []


async def test_unsupported_media_policy_ignore(env: Env) -> None:
    _, brand_id = await seed_brand(
        env.backend, settings_by_channel={Channel.WHATSAPP: {"unsupported": "ignore"}}
    )
    # The sticker is dropped; the captioned picture and the location are media we read, so they stay.
    r = await deliver(env.client, Channel.WHATSAPP, raw(Channel.WHATSAPP, "media"))
    assert r.json() == {"status": "ok", "accepted": 2, "duplicates": 0, "ignored": 1, "receipts": 0}
    async with env.backend.sessionmaker() as s:
        count = await s.scalar(select(func.count()).where(MessageLog.brand_id == brand_id))
    assert count == 2


async def test_webhook_to_reply_through_the_worker(env: Env) -> None:
    await deliver(env.client, Channel.WHATSAPP, raw(Channel.WHATSAPP, "text"))
    await deliver(env.client, Channel.TELEGRAM, raw(Channel.TELEGRAM, "photo"))
    worker = InboundWorker(
        redis=env.backend.redis,
        redis_settings=env.backend.settings.redis,
        process=env.backend.orchestrator.process_stored,
        config=WorkerConfig(consumer="w1", block_ms=100),
    )
    stats = await worker.run_once()
    assert stats.processed == 2
    entries = await env.backend.redis.xrange(env.backend.settings.redis.key("stream", "outbound"))
    sent = sorted((json.loads(f["data"]) for _, f in entries), key=lambda p: p["channel"])
    assert [(p["channel"], p["customer_id"]) for p in sent] == [
        ("telegram", "111222333"),
        ("whatsapp", "16505551234"),
    ]
    # No knowledge for this brand: the brand's fallback answers (the photo's caption too), LLM not called.
    assert all(FALLBACK in p["text"] for p in sent) and env.chat.calls == 0
    assert sent[0]["in_reply_to"] == f"{BOT}:912345004"


def _gateway_intake(env: Env, *, route_cache_s: float = 10.0) -> Intake:
    """An intake wired like the gateway deployment's (publishing after the ACK), on the env's backend."""
    b = env.backend
    settings = b.settings.model_copy(
        update={"channels": b.settings.channels.model_copy(update={"route_cache_s": route_cache_s})}
    )
    return Intake(
        settings=settings,
        sessionmaker=b.sessionmaker,
        outbox=OutboxPublisher(b.sessionmaker, StreamPublisher(b.redis, settings.redis)),
        publish_after_ack=True,
    )


async def test_publishing_after_the_ack_still_queues_the_message_and_marks_its_outbox(env: Env) -> None:
    intake = _gateway_intake(env)
    message = InboundMessage(
        brand_id=env.brand_id,
        channel=Channel.WHATSAPP,
        customer_id="15551230000",
        text="Where is my order?",
        provider_message_id=f"wamid.{uuid.uuid4().hex}",
    )
    accepted = await intake.accept(message)
    await intake.flush_publishes()
    entries = await env.backend.redis.xrange(env.backend.settings.redis.key("stream", INBOUND_STREAM))
    queued = [json.loads(fields["data"])["inbound_id"] for _, fields in entries]
    assert queued == [str(accepted.inbound_id)]
    async with env.backend.sessionmaker() as s:
        rows = (await s.scalars(select(OutboxMessage).where(OutboxMessage.stream == INBOUND_STREAM))).all()
    ours = [r for r in rows if str(accepted.inbound_id) in json.dumps(r.payload)]
    assert len(ours) == 1 and ours[0].published_at is not None


async def test_channel_routes_are_cached_for_route_cache_s(env: Env) -> None:
    cached, uncached = _gateway_intake(env), _gateway_intake(env, route_cache_s=0)
    assert (await cached.channel_route(Channel.WHATSAPP, WA)).enabled
    async with env.backend.sessionmaker() as s:
        config = await repo.find_channel_config(s, channel=Channel.WHATSAPP, external_id=WA)
        config.enabled = False
        await s.commit()
    assert (await cached.channel_route(Channel.WHATSAPP, WA)).enabled  # within the TTL: the cached route
    assert not (await uncached.channel_route(Channel.WHATSAPP, WA)).enabled
    assert await cached.channel_route(Channel.WHATSAPP, "no-such-account") is None
