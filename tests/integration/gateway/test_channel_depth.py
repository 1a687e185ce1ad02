"""Channel depth, end to end: media in, read / typing signals, button taps.

Media: a provider webhook names a file, the inbound worker's ``process_stored`` fetches
it from the provider SIMULATOR with the connection's token, stores it, transcribes a voice note at the
simulator's SIMULATED OpenAI-compatible transcription endpoint, and answers or hands over; agents see it
and download it through the API, scoped to their tenant.

Real Postgres, Redis and Qdrant (Edge); the simulator is a real HTTP server on a local port. Test doubles
(named as such): ``ConstantEmbedder`` and ``ScriptedChatModel`` (the brand has no knowledge, so its
fallback answers any text and the model is never asked).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select

from common.access.principal import Scope
from common.config import ChannelSecrets, MediaSettings, S3Settings, ServiceEndpoints, Settings
from common.db import repositories as repo
from common.db.models import MediaContent, MessageLog, MessageMedia
from common.domain import Channel, ConversationState, OutboundResponse
from common.errors import DependencyError
from common.media_store import s3_client
from serve_apps.gateway.app import build_gateway_api
from serve_apps.inprocess import InProcessBackend
from serve_apps.simulator import webhooks as sim_hooks
from serve_apps.simulator.clamd import EICAR, SimulatedClamd
from serve_apps.simulator.server import SimulatorServer
from tests.auth import key_headers
from tests.contract.test_channel_payloads import BOT, IG, WA
from tests.delivery import dispatch_all
from tests.fakes.chat import ScriptedChatModel
from tests.fakes.embedding import ConstantEmbedder
from tests.integration.gateway.test_webhooks import APP_SECRET, FALLBACK, TG_SECRET, VERIFY_TOKEN, seed_brand

pytestmark = pytest.mark.integration

META_TOKEN = "EAAG-simulated-token"
BOT_TOKEN = f"{BOT}:AA-simulated-bot-token"
MAX_BYTES = 50_000
MEDIA_MESSAGE = "I can only read text messages, so a member of our team will look at this."
VOICE = b"OggS\x00\x02" + bytes(range(256)) * 8  # stands in for an Opus voice note: only its bytes matter


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer(meta_access_token=META_TOKEN, telegram_bot_token=BOT_TOKEN) as sim:
        yield sim


@dataclass
class Env:
    backend: InProcessBackend
    client: httpx.AsyncClient
    sim: SimulatorServer
    firer: sim_hooks.WebhookFirer
    tenant_id: uuid.UUID
    brand_id: uuid.UUID
    clamd: SimulatedClamd | None = None


async def _env(
    sim: SimulatorServer,
    database_url: str,
    redis_url: str,
    prefix: str,
    tmp: Path,
    *,
    transcribe: bool,
    s3: S3Settings | None = None,
    bucket: str | None = None,
    clamd: str | None = None,
) -> AsyncIterator[Env]:
    endpoints = ServiceEndpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=f"{prefix}:{uuid.uuid4().hex[:6]}",
        qdrant_path=tmp / "q",
    )
    settings = Settings(
        channels=ChannelSecrets(
            meta_app_secret=APP_SECRET,
            meta_verify_token=VERIFY_TOKEN,
            telegram_secret_token=TG_SECRET,
            meta_access_token=META_TOKEN,
            telegram_bot_token=BOT_TOKEN,
            meta_graph_url=sim.url,
            telegram_api_url=sim.url,
        ),
        media=MediaSettings(
            max_bytes=MAX_BYTES,
            fetch_attempts=2,
            transcription_url=f"{sim.url}/v1" if transcribe else None,
            s3_bucket=bucket,
            clamd_address=clamd,
        ),
        s3=s3 or S3Settings(),
    )
    backend = InProcessBackend(
        settings, endpoints, embedder=ConstantEmbedder(), chat_model=ScriptedChatModel("x")
    )
    tenant_id, brand_id = await seed_brand(backend)
    app = build_gateway_api(backend)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        firer = sim_hooks.WebhookFirer(
            "http://gw", meta_app_secret=APP_SECRET, telegram_secret_token=TG_SECRET, transport=transport
        )
        try:
            yield Env(backend, client, sim, firer, tenant_id, brand_id)
        finally:
            await firer.aclose()
            await backend.aclose()


@pytest_asyncio.fixture(name="env")
async def env_fixture(simulator, database_url, redis_url, redis_prefix, tmp_path) -> AsyncIterator[Env]:
    async for env in _env(simulator, database_url, redis_url, redis_prefix, tmp_path, transcribe=True):
        yield env


@pytest_asyncio.fixture(name="plain")
async def plain_fixture(simulator, database_url, redis_url, redis_prefix, tmp_path) -> AsyncIterator[Env]:
    """No transcription endpoint configured."""
    async for env in _env(simulator, database_url, redis_url, redis_prefix, tmp_path, transcribe=False):
        yield env


def held(sim: SimulatorServer, data: bytes, mime: str, transcript: str | None = None) -> dict:
    """A file the simulated provider holds for the customer's message (its id, URL...)."""
    body = {"content_b64": base64.b64encode(data).decode(), "mime_type": mime, "transcript": transcript}
    response = httpx.post(f"{sim.url}/_sim/media", json=body)
    response.raise_for_status()
    return response.json()


async def _inbound(env: Env, provider_message_id: str) -> MessageLog:
    async with env.backend.sessionmaker() as s:
        inbound = await repo.find_inbound(
            s,
            brand_id=env.brand_id,
            channel=Channel(_channel(provider_message_id)),
            provider_message_id=provider_message_id,
        )
    assert inbound is not None
    return inbound


async def answer(env: Env, provider_message_id: str) -> tuple[OutboundResponse, MessageLog, MessageMedia]:
    """What the inbound worker does with the stored message: ``process_stored``."""
    inbound = await _inbound(env, provider_message_id)
    reply = await env.backend.orchestrator.process_stored(inbound.id)
    async with env.backend.sessionmaker() as s:
        row = await repo.get_message(s, message_id=inbound.id)
        media = await repo.media_of_message(s, message_id=inbound.id)
    assert row is not None and media is not None
    return reply, row, media


def _channel(provider_message_id: str) -> str:
    if provider_message_id.startswith("wamid."):
        return "whatsapp"
    return "telegram" if provider_message_id.startswith(f"{BOT}:") else "instagram"


async def stored_bytes(env: Env, media_id: uuid.UUID) -> bytes | None:
    async with env.backend.sessionmaker() as s:
        return await repo.media_content(s, media_id=media_id)


async def state_of(env: Env, conversation_id: uuid.UUID) -> ConversationState:
    async with env.backend.sessionmaker() as s:
        return ConversationState((await repo.get_conversation(s, conversation_id=conversation_id)).state)


async def test_whatsapp_voice_note_is_fetched_transcribed_and_answered_like_text(env: Env) -> None:
    file = held(env.sim, VOICE, "audio/ogg; codecs=opus", transcript="Do you ship to Canada?")
    item = sim_hooks.whatsapp_media(
        sender="16505551234",
        kind="audio",
        media_id=file["id"],
        mime_type="audio/ogg; codecs=opus",
        voice=True,
    )
    r = await env.firer.whatsapp(sim_hooks.whatsapp_update(phone_number_id=WA, messages=[item]))
    assert r.json()["accepted"] == 1

    reply, inbound, media = await answer(env, item["message"]["id"])
    assert media.status == "stored" and media.voice and media.size_bytes == len(VOICE)
    assert await stored_bytes(env, media.id) == VOICE
    # The transcript is what the customer said: it is the logged text and it is answered like text.
    assert media.transcript == "Do you ship to Canada?" and inbound.text == "Do you ship to Canada?"
    assert FALLBACK in reply.text and MEDIA_MESSAGE not in reply.text
    assert not any(g.rule == "escalation:media" for g in reply.guardrails)
    # Processing again (a redelivered stream entry) neither refetches nor retranscribes: the same reply.
    again, _, _ = await answer(env, item["message"]["id"])
    assert again.duplicate and again.text == reply.text


async def test_voice_note_without_a_transcription_endpoint_gets_the_media_message_and_a_person(
    plain: Env,
) -> None:
    file = held(plain.sim, VOICE + b"2", "audio/ogg")
    update = sim_hooks.telegram_media_update(
        chat_id=4242, field="voice", file_id=file["id"], file_size=len(VOICE) + 1
    )
    await plain.firer.telegram(update, bot_id=BOT)

    reply, inbound, media = await answer(plain, f"{BOT}:{update['update_id']}")
    assert media.status == "stored" and await stored_bytes(plain, media.id) == VOICE + b"2"  # via getFile
    assert reply.text == MEDIA_MESSAGE and reply.escalated
    reasons = [g.reason for g in reply.guardrails if g.rule == "escalation:media"]
    assert reasons and "MEDIA__TRANSCRIPTION_URL" in reasons[0]
    assert inbound.text == "[voice note]"
    assert await state_of(plain, reply.conversation_id) is ConversationState.HANDOFF
    # The message that hands it over reaches the customer, though a person now owns the conversation.
    before = len(plain.sim.state.sent("telegram"))
    await dispatch_all(plain.backend, consumer="handoff")
    sent = plain.sim.state.sent("telegram")[before:]
    assert [(m.recipient, m.text) for m in sent] == [("4242", MEDIA_MESSAGE)]


async def test_a_captioned_instagram_picture_is_stored_and_its_caption_answered(env: Env) -> None:
    picture = b"\x89PNG\r\n\x1a\n" + b"p" * 1000
    file = held(env.sim, picture, "image/png")
    event = sim_hooks.instagram_attachment(
        ig_id=IG, sender="6143275139104912", kind="image", url=file["url"], text="Is this in stock?"
    )
    await env.firer.instagram(sim_hooks.instagram_update(ig_id=IG, events=[event]))

    reply, inbound, media = await answer(env, event["message"]["mid"])
    assert media.status == "stored" and media.mime_type == "image/png"
    assert await stored_bytes(env, media.id) == picture
    assert inbound.text == "Is this in stock?" and FALLBACK in reply.text
    assert await state_of(env, reply.conversation_id) is ConversationState.BOT


async def test_a_file_over_the_limit_stores_nothing_tells_the_customer_and_the_agent(env: Env) -> None:
    big = b"%PDF-1.7\n" + b"x" * (MAX_BYTES + 10)
    file = held(env.sim, big, "application/pdf")
    item = sim_hooks.whatsapp_media(
        sender="16505550001",
        kind="document",
        media_id=file["id"],
        mime_type="application/pdf",
        filename="scan.pdf",
    )
    await env.firer.whatsapp(sim_hooks.whatsapp_update(phone_number_id=WA, messages=[item]))

    reply, _, media = await answer(env, item["message"]["id"])
    # Refused on the size Graph declares, before a byte is downloaded; nothing half-stored.
    assert media.status == "too_large" and "limit" in (media.error or "")
    async with env.backend.sessionmaker() as s:
        assert (
            await s.scalar(
                select(func.count()).select_from(MediaContent).where(MediaContent.media_id == media.id)
            )
            == 0
        )
    assert reply.text.startswith("Sorry, that file is too large") and reply.escalated
    assert await state_of(env, reply.conversation_id) is ConversationState.HANDOFF

    key = await key_headers(env.backend.sessionmaker, env.tenant_id, Scope.CONVERSATIONS_READ)
    view = await env.client.get(f"/v1/conversations/{reply.conversation_id}", headers=key)
    shown = [m["media"] for m in view.json()["messages"] if m["media"]]
    assert shown == [
        {
            "id": str(media.id),
            "kind": "document",
            "voice": False,
            "status": "too_large",
            "mime_type": "application/pdf",
            "filename": "scan.pdf",
            "size_bytes": None,
            "sha256": None,
            "error": media.error,
            "transcript": None,
            "details": {},
            "content_url": None,
        }
    ]


async def test_a_file_counted_over_the_limit_while_downloading_is_refused(env: Env) -> None:
    # Instagram's CDN declares no size up front here (streamed): the download is cut off at the limit.
    big = b"v" * (MAX_BYTES * 2)
    file = held(env.sim, big, "video/mp4")
    event = sim_hooks.instagram_attachment(ig_id=IG, sender="6143275139100000", kind="video", url=file["url"])
    await env.firer.instagram(sim_hooks.instagram_update(ig_id=IG, events=[event]))
    _, _, media = await answer(env, event["message"]["mid"])
    assert media.status == "too_large" and await stored_bytes(env, media.id) is None


async def test_media_the_provider_no_longer_has_fails_with_its_reason_and_a_person_looks(env: Env) -> None:
    item = sim_hooks.whatsapp_media(
        sender="16505550002", kind="image", media_id="999000", mime_type="image/jpeg"
    )
    await env.firer.whatsapp(sim_hooks.whatsapp_update(phone_number_id=WA, messages=[item]))
    reply, _, media = await answer(env, item["message"]["id"])
    assert media.status == "failed" and "HTTP 400" in (media.error or "")
    assert reply.text == MEDIA_MESSAGE and reply.escalated


async def test_a_location_is_kept_with_its_coordinates_and_handed_over(env: Env) -> None:
    item = sim_hooks.whatsapp_location(
        sender="16505550003", latitude=52.37, longitude=4.89, name="Dam Square"
    )
    await env.firer.whatsapp(sim_hooks.whatsapp_update(phone_number_id=WA, messages=[item]))
    reply, inbound, media = await answer(env, item["message"]["id"])
    assert inbound.text == "[location: 52.37, 4.89, Dam Square]"
    assert media.status == "stored" and media.details == {
        "latitude": 52.37,
        "longitude": 4.89,
        "name": "Dam Square",
    }
    assert reply.text == MEDIA_MESSAGE


async def test_stored_media_downloads_for_its_tenant_only(env: Env) -> None:
    picture = b"\xff\xd8\xff\xe0" + b"j" * 2000
    file = held(env.sim, picture, "image/jpeg")
    update = sim_hooks.telegram_media_update(
        chat_id=5151, field="photo", file_id=file["id"], file_size=len(picture)
    )
    await env.firer.telegram(update, bot_id=BOT)
    reply, _, media = await answer(env, f"{BOT}:{update['update_id']}")

    key = await key_headers(env.backend.sessionmaker, env.tenant_id, Scope.CONVERSATIONS_READ)
    view = (await env.client.get(f"/v1/conversations/{reply.conversation_id}", headers=key)).json()
    url = next(m["media"]["content_url"] for m in view["messages"] if m["media"])
    assert url == f"/v1/media/{media.id}/content"
    got = await env.client.get(url, headers=key)
    assert got.status_code == 200 and got.content == picture
    assert got.headers["content-type"] == "image/jpeg"
    assert got.headers["x-content-type-options"] == "nosniff" and got.headers[
        "content-disposition"
    ].startswith("attachment")

    other_tenant, _ = await seed_brand(env.backend)
    other = await key_headers(env.backend.sessionmaker, other_tenant, Scope.CONVERSATIONS_READ)
    refused = await env.client.get(url, headers=other)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    missing = await env.client.get(f"/v1/media/{uuid.uuid4()}/content", headers=key)
    assert missing.status_code == 404


async def test_a_telegram_button_tap_is_answered_so_its_spinner_stops(env: Env) -> None:
    tap = sim_hooks.telegram_callback(chat_id=6161, data="Yes")
    r = await env.firer.telegram(tap, bot_id=BOT)
    assert r.json()["accepted"] == 1
    callback_id = tap["callback_query"]["id"]
    for _ in range(100):  # answered in the background, after the 200
        answers = httpx.get(f"{env.sim.url}/_sim/callback-answers").json()
        if any(a["callback_query_id"] == callback_id for a in answers):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("answerCallbackQuery was not called")
    assert next(a for a in answers if a["callback_query_id"] == callback_id)["bot_id"] == BOT


def _signals(env: Env, channel: str) -> list[dict]:
    return [s for s in httpx.get(f"{env.sim.url}/_sim/signals").json() if s["channel"] == channel]


async def _wait_signals(env: Env, channel: str, where, count: int = 1) -> list[dict]:
    for _ in range(100):
        found = [s for s in _signals(env, channel) if where(s)]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    return [s for s in _signals(env, channel) if where(s)]


async def test_whatsapp_marks_the_message_read_with_a_typing_indicator_once_per_burst(env: Env) -> None:
    first = sim_hooks.whatsapp_message(sender="16505557001", text="Hello?")
    second = sim_hooks.whatsapp_message(sender="16505557001", text="Anyone there?")
    await env.firer.whatsapp(sim_hooks.whatsapp_update(phone_number_id=WA, messages=[first, second]))
    wamid = first["message"]["id"]
    await _process(env, wamid)
    signals = await _wait_signals(env, "whatsapp", lambda s: s["message_id"] == wamid)
    assert signals and signals[0]["account"] == WA
    assert signals[0]["status"] == "read" and signals[0]["typing_indicator"] == {"type": "text"}
    # The second message of the burst is answered without a second signal (CHANNELS__TYPING_MIN_INTERVAL_S).
    second_id = second["message"]["id"]
    await _process(env, second_id)
    await asyncio.sleep(0.3)
    assert not [s for s in _signals(env, "whatsapp") if s["message_id"] == second_id]


async def test_instagram_and_telegram_signals(env: Env) -> None:
    dm = sim_hooks.instagram_message(ig_id=IG, sender="6143275139107001", text="hi")
    await env.firer.instagram(sim_hooks.instagram_update(ig_id=IG, events=[dm]))
    await _process(env, dm["message"]["mid"])
    seen = await _wait_signals(env, "instagram", lambda s: s["recipient"]["id"] == "6143275139107001", 2)
    assert [s["sender_action"] for s in seen] == ["mark_seen", "typing_on"]

    update = sim_hooks.telegram_update(chat_id=7001, text="hi")
    await env.firer.telegram(update, bot_id=BOT)
    await _process(env, f"{BOT}:{update['update_id']}")
    typing = await _wait_signals(env, "telegram", lambda s: s["chat_id"] == "7001")
    assert typing and typing[0]["action"] == "typing" and typing[0]["account"] == BOT


async def test_no_signal_while_a_person_owns_the_conversation(env: Env) -> None:
    item = sim_hooks.whatsapp_message(sender="16505557002", text="first")
    await env.firer.whatsapp(sim_hooks.whatsapp_update(phone_number_id=WA, messages=[item]))
    inbound = await _inbound(env, item["message"]["id"])
    async with env.backend.sessionmaker() as s:
        await repo.set_conversation_state(
            s, conversation_id=inbound.conversation_id, state=ConversationState.HANDOFF
        )
        await s.commit()
    await env.backend.orchestrator.process_stored(inbound.id)
    await asyncio.sleep(0.3)
    assert not [s for s in _signals(env, "whatsapp") if s["message_id"] == item["message"]["id"]]


async def _process(env: Env, provider_message_id: str) -> OutboundResponse:
    return await env.backend.orchestrator.process_stored((await _inbound(env, provider_message_id)).id)


async def test_an_instagram_read_event_is_the_replys_read_receipt(env: Env) -> None:
    dm = sim_hooks.instagram_message(ig_id=IG, sender="6143275139107003", text="Opening hours?")
    await env.firer.instagram(sim_hooks.instagram_update(ig_id=IG, events=[dm]))
    reply = await _process(env, dm["message"]["mid"])
    await env.backend.orchestrator.flush_publishes()
    await dispatch_all(env.backend, consumer="depth")
    [sent] = [m for m in env.sim.state.sent("instagram") if m.recipient == "6143275139107003"]

    read = {
        "sender": {"id": "6143275139107003"},
        "recipient": {"id": IG},
        "timestamp": 1,
        "read": {"mid": sent.provider_message_id},
    }
    r = await env.firer.instagram(sim_hooks.instagram_update(ig_id=IG, events=[read]))
    assert r.json()["receipts"] == 1
    async with env.backend.sessionmaker() as s:
        delivery = (await repo.deliveries_for(s, message_ids=[reply.message_id]))[reply.message_id]
    assert delivery.status == "sent" and delivery.receipt == "read"


@pytest_asyncio.fixture(name="bucketed")
async def bucketed_fixture(
    simulator, database_url, redis_url, redis_prefix, tmp_path, s3: S3Settings
) -> AsyncIterator[Env]:
    """Media bytes in an S3-compatible bucket (``MEDIA__S3_BUCKET``), on moto's S3 server."""
    bucket = f"media-{uuid.uuid4().hex[:8]}"
    s3_client(s3).create_bucket(Bucket=bucket)
    async for env in _env(
        simulator, database_url, redis_url, redis_prefix, tmp_path, transcribe=True, s3=s3, bucket=bucket
    ):
        yield env


async def test_with_a_bucket_media_is_kept_in_it_transcribed_and_downloadable(
    bucketed: Env, s3: S3Settings
) -> None:
    env = bucketed
    file = held(env.sim, VOICE + b"s3", "audio/ogg", transcript="Do you ship to Canada?")
    item = sim_hooks.whatsapp_media(
        sender="16505559999", kind="audio", media_id=file["id"], mime_type="audio/ogg", voice=True
    )
    await env.firer.whatsapp(sim_hooks.whatsapp_update(phone_number_id=WA, messages=[item]))
    reply, _, media = await answer(env, item["message"]["id"])
    # In the bucket under a key of tenant, brand and media id; nothing in Postgres but the row.
    assert media.status == "stored" and media.size_bytes == len(VOICE) + 2
    assert media.object_key == f"media/{env.tenant_id}/{env.brand_id}/{media.id}"
    bucket = env.backend.settings.media.s3_bucket
    stored = s3_client(s3).get_object(Bucket=bucket, Key=media.object_key)
    assert stored["Body"].read() == VOICE + b"s3" and stored["ContentType"] == "audio/ogg"
    assert await stored_bytes(env, media.id) is None
    # Transcribed from the bucket's bytes and answered like text.
    assert media.transcript == "Do you ship to Canada?" and MEDIA_MESSAGE not in reply.text
    key = await key_headers(env.backend.sessionmaker, env.tenant_id, Scope.CONVERSATIONS_READ)
    download = await env.client.get(f"/v1/media/{media.id}/content", headers=key)
    assert download.status_code == 200 and download.content == VOICE + b"s3"


async def test_an_unreachable_bucket_leaves_the_media_pending_for_the_retry(bucketed: Env) -> None:
    env = bucketed
    inbound = await picture_sent(env, b"\x89PNG-not-stored", sender="16505558888")
    s3_client(env.backend.settings.s3).delete_bucket(Bucket=env.backend.settings.media.s3_bucket)
    await still_pending_after_failing(env, inbound, "media storage")


@pytest_asyncio.fixture(name="scanned")
async def scanned_fixture(simulator, database_url, redis_url, redis_prefix, tmp_path) -> AsyncIterator[Env]:
    """Every file scanned by a SIMULATED clamd (the INSTREAM wire protocol on a local port)."""
    with SimulatedClamd() as clamd:
        async for env in _env(
            simulator, database_url, redis_url, redis_prefix, tmp_path, transcribe=True, clamd=clamd.address
        ):
            env.clamd = clamd
            yield env


async def test_a_clean_file_is_scanned_and_stored_an_infected_one_refused_and_never_stored(
    scanned: Env,
) -> None:
    env = scanned
    clean = held(env.sim, b"%PDF-1.7 an invoice", "application/pdf")
    infected = held(env.sim, b"%PDF-1.7 " + EICAR, "application/pdf")
    items = [
        sim_hooks.whatsapp_media(
            sender=f"1650555700{i}", kind="document", media_id=f["id"], mime_type="application/pdf"
        )
        for i, f in enumerate((clean, infected))
    ]
    await env.firer.whatsapp(sim_hooks.whatsapp_update(phone_number_id=WA, messages=items))
    _, _, ok = await answer(env, items[0]["message"]["id"])
    assert ok.status == "stored" and await stored_bytes(env, ok.id) == b"%PDF-1.7 an invoice"
    reply, _, bad = await answer(env, items[1]["message"]["id"])
    assert bad.status == "failed" and bad.error == "refused by the virus scan: Eicar-Test-Signature"
    assert await stored_bytes(env, bad.id) is None
    assert reply.escalated and any(
        "refused by the virus scan" in g.reason for g in reply.guardrails if g.rule == "escalation:media"
    )
    assert env.clamd is not None and env.clamd.scanned == 2


async def test_an_unreachable_scanner_leaves_the_media_pending_for_the_retry(scanned: Env) -> None:
    env = scanned
    inbound = await picture_sent(env, b"GIF89a-unscanned", sender="16505557100")
    assert env.clamd is not None
    env.clamd.stop()  # clamd goes away
    await still_pending_after_failing(env, inbound, "virus scan unavailable")


async def picture_sent(env: Env, data: bytes, *, sender: str) -> MessageLog:
    """A WhatsApp picture the provider holds, its webhook accepted; the stored inbound message."""
    file = held(env.sim, data, "image/gif")
    item = sim_hooks.whatsapp_media(sender=sender, kind="image", media_id=file["id"], mime_type="image/gif")
    await env.firer.whatsapp(sim_hooks.whatsapp_update(phone_number_id=WA, messages=[item]))
    return await _inbound(env, item["message"]["id"])


async def still_pending_after_failing(env: Env, inbound: MessageLog, error: str) -> None:
    """Processing fails with a retryable error naming ``error``, and leaves nothing half-done: the media
    ``pending`` with no bytes anywhere, no reply; the redelivered message does it all once it is back."""
    with pytest.raises(DependencyError, match=error):
        await env.backend.orchestrator.process_stored(inbound.id)
    async with env.backend.sessionmaker() as session:
        media = await repo.media_of_message(session, message_id=inbound.id)
        reply = await repo.find_reply_to(session, inbound_id=inbound.id)
    assert media is not None and media.status == "pending" and media.object_key is None
    assert await stored_bytes(env, media.id) is None and reply is None
