"""An agent sends the customer a file: ``POST /v1/agents/conversations/{id}/attachments`` (multipart), kept
in the media store, delivered by the real dispatcher to the provider SIMULATOR (WhatsApp upload + image or
document message, Telegram ``sendPhoto`` / ``sendDocument``), linked in web chat for that visitor only.

Real Postgres, Redis and the simulator on a real port; the fixtures are ``test_channel_depth``'s.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import update

from common.access.principal import Scope
from common.db import repositories as repo
from common.db.models import ChannelConfig, MessageLog
from common.domain import Channel, ConversationState
from serve_apps.simulator import webhooks as sim_hooks
from serve_apps.simulator.clamd import EICAR
from tests.auth import key_headers
from tests.contract.test_channel_payloads import BOT, IG, WA
from tests.delivery import dispatch_all
from tests.integration.gateway.test_channel_depth import (  # noqa: F401 - fixtures
    Env,
    env_fixture,
    scanned_fixture,
    simulator,
)

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
PDF = b"%PDF-1.7\n1 0 obj << >> endobj\n%%EOF"


async def handed_over(env: Env, channel: Channel, customer: str) -> tuple[uuid.UUID, dict[str, str]]:
    """A conversation the customer started on ``channel``, taken over by an agent; the agent's headers."""
    if channel is Channel.WHATSAPP:
        item = sim_hooks.whatsapp_message(sender=customer, text="Can you send me the invoice?")
        await env.firer.whatsapp(sim_hooks.whatsapp_update(phone_number_id=WA, messages=[item]))
    elif channel is Channel.TELEGRAM:
        await env.firer.telegram(
            sim_hooks.telegram_update(chat_id=int(customer), text="Can you send me the invoice?"), bot_id=BOT
        )
    else:
        ig = sim_hooks.instagram_message(ig_id=IG, sender=customer, text="Can you send me the invoice?")
        await env.firer.instagram(sim_hooks.instagram_update(ig_id=IG, events=[ig]))
    async with env.backend.sessionmaker() as session:
        conversation = await repo.find_conversation(
            session, brand_id=env.brand_id, channel=channel, customer_id=customer
        )
    assert conversation is not None
    key = await key_headers(env.backend.sessionmaker, env.tenant_id, Scope.AGENTS)
    headers = {**key, "x-agent-id": "dana"}
    taken = await env.client.post(f"/v1/agents/conversations/{conversation.id}/takeover", headers=headers)
    assert taken.status_code == 200, taken.text
    return conversation.id, headers


async def send_file(
    env: Env,
    conversation_id: uuid.UUID,
    headers: dict[str, str],
    name: str,
    data: bytes,
    mime: str,
    caption="",
) -> httpx.Response:
    return await env.client.post(
        f"/v1/agents/conversations/{conversation_id}/attachments",
        files={"file": (name, data, mime)},
        data={"caption": caption} if caption else {},
        headers=headers,
    )


async def test_whatsapp_a_picture_is_uploaded_then_sent_by_its_media_id(env: Env) -> None:
    conversation_id, headers = await handed_over(env, Channel.WHATSAPP, "16505550101")
    sent = await send_file(env, conversation_id, headers, "label.png", PNG, "image/png", "Your return label")
    assert sent.status_code == 201, sent.text
    assert sent.json()["text"] == "Your return label"
    await dispatch_all(env.backend, consumer="files")
    [message] = [m for m in env.sim.state.sent("whatsapp") if m.recipient == "16505550101"]
    assert message.body["type"] == "image" and message.body["image"]["caption"] == "Your return label"
    uploaded = env.sim.state.media(message.body["image"]["id"])
    assert uploaded is not None and uploaded.data == PNG and uploaded.mime_type == "image/png"
    # The agents see it with the message, downloadable like what customers send.
    conv = (await env.client.get(f"/v1/agents/conversations/{conversation_id}", headers=headers)).json()
    [mine] = [m for m in conv["messages"] if m["sender"] == "agent"]
    assert mine["media"]["kind"] == "image" and mine["media"]["status"] == "stored"
    assert mine["delivery"]["status"] == "sent"
    got = await env.client.get(
        mine["media"]["content_url"].replace("/v1/media/", "/v1/agents/media/"), headers=headers
    )
    assert got.status_code == 200 and got.content == PNG


async def test_telegram_a_document_goes_with_send_document_and_its_caption(env: Env) -> None:
    conversation_id, headers = await handed_over(env, Channel.TELEGRAM, "5151")
    sent = await send_file(env, conversation_id, headers, "invoice-1001.pdf", PDF, "application/pdf")
    assert sent.status_code == 201 and sent.json()["text"] == "[document: invoice-1001.pdf]"
    await dispatch_all(env.backend, consumer="files")
    [message] = [m for m in env.sim.state.sent("telegram") if m.recipient == "5151"]
    assert message.text == "[document]" and message.body["caption"] == ""
    assert env.sim.state.media(message.body["document"]["file_id"]).data == PDF


async def test_web_chat_links_the_file_for_that_visitor_only(env: Env) -> None:
    token = f"wt_{uuid.uuid4().hex}"
    async with env.backend.sessionmaker() as session:
        await repo.upsert_channel_config(
            session,
            tenant_id=env.tenant_id,
            brand_id=env.brand_id,
            channel=Channel.WEBCHAT,
            external_id=token,
            settings={},
        )
        await session.commit()
    visitor = f"visitor-{uuid.uuid4().hex}"
    posted = await env.client.post(
        f"/v1/webchat/{token}/messages",
        json={"visitor_id": visitor, "text": "The invoice please", "client_message_id": "1"},
    )
    conversation_id = uuid.UUID(posted.json()["conversation_id"])
    key = await key_headers(env.backend.sessionmaker, env.tenant_id, Scope.AGENTS)
    headers = {**key, "x-agent-id": "dana"}
    await env.client.post(f"/v1/agents/conversations/{conversation_id}/takeover", headers=headers)
    sent = await send_file(env, conversation_id, headers, "invoice.pdf", PDF, "application/pdf", "Here it is")
    assert sent.status_code == 201
    history = (await env.client.get(f"/v1/webchat/{token}/history", params={"visitor_id": visitor})).json()
    [mine] = [m for m in history["messages"] if m.get("attachment")]
    assert mine["text"] == "Here it is" and mine["attachment"]["filename"] == "invoice.pdf"
    url = f"/v1/webchat/{token}/media/{mine['attachment']['id']}"
    got = await env.client.get(url, params={"visitor_id": visitor})
    assert got.status_code == 200 and got.content == PDF
    assert (
        got.headers["content-disposition"].startswith("attachment")
        and got.headers["x-content-type-options"] == "nosniff"
    )
    other = await env.client.get(url, params={"visitor_id": f"visitor-{uuid.uuid4().hex}"})
    assert other.status_code == 404  # another visitor: the same 404 as an unknown id


async def test_bad_files_are_clear_errors_and_nothing_is_sent(env: Env) -> None:
    conversation_id, headers = await handed_over(env, Channel.WHATSAPP, "16505550102")
    exe = await send_file(
        env, conversation_id, headers, "tool.exe", b"MZ\x90\x00", "application/x-msdownload"
    )
    assert exe.status_code == 415 and "supported" in exe.json()["error"]["details"]
    fake = await send_file(env, conversation_id, headers, "photo.png", b"<html><script>", "image/png")
    assert fake.status_code == 415  # the bytes are not what the type says
    big = await send_file(env, conversation_id, headers, "big.pdf", PDF + b"0" * 60_000, "application/pdf")
    assert big.status_code == 413
    nothing = await send_file(env, conversation_id, headers, "empty.png", b"", "image/png")
    assert nothing.status_code == 400 and "empty" in nothing.json()["error"]["message"]
    empty = await env.client.post(
        f"/v1/agents/conversations/{conversation_id}/attachments", json={"file": "x"}, headers=headers
    )
    assert empty.status_code == 415
    # Instagram takes files only from a public URL: refused, not sent to fail.
    ig_conversation, ig_headers = await handed_over(env, Channel.INSTAGRAM, "IGSID-files")
    ig = await send_file(env, ig_conversation, ig_headers, "label.png", PNG, "image/png")
    assert ig.status_code == 400 and ig.json()["error"]["details"]["channel"] == "instagram"
    # Not in the agent's hands: 409, as for a text reply.
    await env.client.post(f"/v1/agents/conversations/{conversation_id}/release", headers=headers)
    released = await send_file(env, conversation_id, headers, "label.png", PNG, "image/png")
    assert released.status_code == 409
    async with env.backend.sessionmaker() as session:
        rows = await repo.recent_messages(session, conversation_id=conversation_id, limit=20)
    assert not [r for r in rows if r.direction == "outbound" and r.text.startswith("[")]


async def test_outside_the_window_a_file_is_held_with_the_reason(env: Env) -> None:
    conversation_id, headers = await handed_over(env, Channel.WHATSAPP, "16505550103")
    async with env.backend.sessionmaker() as session:  # the customer last wrote two days ago
        await session.execute(
            update(MessageLog)
            .where(MessageLog.conversation_id == conversation_id)
            .values(created_at=datetime.now(UTC) - timedelta(days=2), sent_at=None)
        )
        await session.execute(
            update(ChannelConfig)
            .where(ChannelConfig.brand_id == env.brand_id, ChannelConfig.channel == "whatsapp")
            .values(settings={"window_template": {"name": "support_followup", "language": "en_US"}})
        )
        await session.commit()
    sent = await send_file(env, conversation_id, headers, "label.png", PNG, "image/png")
    message_id = uuid.UUID(sent.json()["message_id"])
    await dispatch_all(env.backend, consumer="files")
    async with env.backend.sessionmaker() as session:
        delivery = await repo.get_delivery(session, message_id=message_id)
    assert delivery.status == "held" and "a file is not one" in delivery.last_error
    assert not [m for m in env.sim.state.sent("whatsapp") if m.recipient == "16505550103"]


async def test_an_infected_file_is_refused_before_it_is_kept(scanned: Env) -> None:
    conversation_id, headers = await handed_over(scanned, Channel.WHATSAPP, "16505550104")
    bad = await send_file(
        scanned, conversation_id, headers, "doc.pdf", b"%PDF-1.7 " + EICAR, "application/pdf"
    )
    assert bad.status_code == 400 and bad.json()["error"]["details"]["signature"] == "Eicar-Test-Signature"
    ok = await send_file(scanned, conversation_id, headers, "doc.pdf", PDF, "application/pdf")
    assert ok.status_code == 201
    async with scanned.backend.sessionmaker() as session:
        state = ConversationState(
            (await repo.get_conversation(session, conversation_id=conversation_id)).state
        )
    assert state is ConversationState.HANDOFF
