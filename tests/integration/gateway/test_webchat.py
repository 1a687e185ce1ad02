"""Web chat end to end through the gateway: real Postgres, Redis, embedded Qdrant (Edge) and embedding model.

Simulated here, by name:

* ``ScriptedChatModel`` (from test_orchestration) is the chat model: a test double returning a fixed
  grounded sentence, so guardrail outcomes are deterministic.
* ``deliver_pending`` stands in for the inbound worker and the outbound dispatcher (other parts of the
  system): it reads the ``inbound`` stream, calls ``orchestrator.process_stored`` and hands each payload
  on the ``outbound`` stream to the real :class:`WebchatSender`. Tests call it explicitly, so each step is
  observable.

SSE tests run the gateway app under a real uvicorn server on a free port: httpx's ASGI transport buffers
whole responses and cannot show a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import delete

from common.channels.base import RecipientConfig
from common.channels.registry import build_registry
from common.channels.webchat import WebchatSender, webchat_channel
from common.config import ChannelSecrets, ServiceEndpoints, Settings, WebchatSettings
from common.conversation.signals import RENEW_S
from common.db import repositories as repo
from common.db.models import ChannelConfig
from common.domain import Channel
from common.errors import Unauthorized
from common.knowledge.embeddings import Embedder, build_embedder
from common.schemas import OutboundPayload
from common.streams import decode_entry
from pipelines.demo import DemoBrand, demo_documents, seed_demo_brand
from serve_apps.gateway.app import build_gateway_api
from serve_apps.inprocess import InProcessBackend
from serve_apps.webchat.identity import resolve_visitor, sign_identity, widget_identity_key
from serve_apps.webchat.ratelimit import FixedWindowLimiter
from tests.fakes.chat import ScriptedChatModel, StreamingScriptedChatModel
from tests.integration.conversation.test_orchestration import RETURNS_ANSWER

pytestmark = pytest.mark.integration

SECRET = "platform-master-secret-for-tests"
QUESTION = "How long do I have to return an item?"
CREATED_WIDGETS: list[str] = []


@dataclass
class Webchat:
    backend: InProcessBackend
    demo: DemoBrand
    token: str
    app: FastAPI
    sender: WebchatSender


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    """The real all-MiniLM-L6-v2, loaded once for the module."""
    return build_embedder(Settings().embeddings)


async def add_widget(backend: InProcessBackend, demo: DemoBrand, **display: Any) -> str:
    """A widget for the demo brand; removed again by the fixture (the database is shared by the session)."""
    token = f"wt_{uuid.uuid4().hex}"
    CREATED_WIDGETS.append(token)
    async with backend.sessionmaker() as session:
        await repo.upsert_channel_config(
            session,
            tenant_id=demo.tenant.id,
            brand_id=demo.brand.id,
            channel=Channel.WEBCHAT,
            external_id=token,
            settings=display,
        )
        await session.commit()
    return token


async def _webchat(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, embedder: Embedder, chat_model: Any
) -> AsyncIterator[Webchat]:
    endpoints = ServiceEndpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=f"{redis_prefix}:{uuid.uuid4().hex[:6]}",
        qdrant_path=tmp_path / "q",
    )
    settings = Settings(
        answers={"mode": "generate"},  # the scripted model stands in for a capable one
        channels=ChannelSecrets(webchat_identity_secret=SecretStr(SECRET)),
        webchat=WebchatSettings(messages_per_window=3, window_s=60, heartbeat_s=0.3),
    )
    backend = InProcessBackend(settings, endpoints, embedder=embedder, chat_model=chat_model)
    demo = await seed_demo_brand(backend.sessionmaker)
    await backend.knowledge.ingest(demo.tenant.id, demo.brand.id, demo_documents())
    token = await add_widget(backend, demo, primary_color="#0a7d38", greeting="Howdy from the test widget")
    try:
        yield Webchat(
            backend=backend,
            demo=demo,
            token=token,
            app=build_gateway_api(backend),
            sender=WebchatSender(backend.redis, backend.settings.redis),
        )
    finally:
        await remove_widgets(backend)
        await backend.aclose()


@pytest_asyncio.fixture
async def webchat(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, embedder: Embedder
) -> AsyncIterator[Webchat]:
    model = ScriptedChatModel(RETURNS_ANSWER)
    async for wc in _webchat(database_url, redis_url, redis_prefix, tmp_path, embedder, model):
        yield wc


@pytest_asyncio.fixture
async def streaming(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, embedder: Embedder
) -> AsyncIterator[Webchat]:
    """The same, with a model that streams (``StreamingScriptedChatModel``)."""
    model = StreamingScriptedChatModel(RETURNS_ANSWER)
    async for wc in _webchat(database_url, redis_url, redis_prefix, tmp_path, embedder, model):
        yield wc


async def remove_widgets(backend: InProcessBackend) -> None:
    async with backend.sessionmaker() as session:
        await session.execute(delete(ChannelConfig).where(ChannelConfig.external_id.in_(CREATED_WIDGETS)))
        await session.commit()
    CREATED_WIDGETS.clear()


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


def anon() -> str:
    return uuid.uuid4().hex


async def deliver_pending(wc: Webchat) -> list[OutboundPayload]:
    """Stand-in for the inbound worker + dispatcher: answer every queued inbound, send every reply."""
    redis = wc.backend.redis
    key = wc.backend.settings.redis.key
    done_key = key("test", "delivered")
    for entry_id, fields in await redis.xrange(key("stream", "inbound")):
        if await redis.sadd(done_key, f"in:{entry_id}"):
            await wc.backend.orchestrator.process_stored(uuid.UUID(decode_entry(fields)["inbound_id"]))
    sent: list[OutboundPayload] = []
    recipient = RecipientConfig(channel=Channel.WEBCHAT, external_id=wc.token)
    for entry_id, fields in await redis.xrange(key("stream", "outbound")):
        payload = OutboundPayload.model_validate(decode_entry(fields))
        if payload.channel is Channel.WEBCHAT and await redis.sadd(done_key, f"out:{entry_id}"):
            await wc.sender.send(payload, recipient_config=recipient)
            sent.append(payload)
    return sent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app under uvicorn on a free port, in this event loop."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2)
    )
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


class SseReader:
    """Reads SSE frames (comments and events) from a streaming httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def frame(self, timeout: float) -> list[str]:
        lines: list[str] = []
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if line == "":
                    if lines:
                        return lines
                    continue
                lines.append(line)
        raise EOFError("stream ended")

    async def next_frame(self, timeout: float) -> list[str]:
        """The next frame that is not a comment (heartbeats are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.frame(max(0.01, deadline - time.monotonic()))
            if not all(line.startswith(":") for line in frame):
                return frame

    async def next_event(self, timeout: float) -> tuple[str, dict[str, Any]]:
        """The next ``message`` event (id, data), skipping comments."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.frame(max(0.01, deadline - time.monotonic()))
            fields = dict(line.split(": ", 1) for line in frame if not line.startswith(":") and ": " in line)
            if fields.get("event") == "message":
                return fields["id"], json.loads(fields["data"])


@contextlib.asynccontextmanager
async def asked_and_listening(
    w: Webchat, client_message_id: str
) -> AsyncIterator[tuple[dict[str, Any], SseReader]]:
    """A new visitor asks QUESTION and opens the reply stream; yields the POST's answer (with its
    ``visitor_id``) and the stream, past its opening frame."""
    visitor = anon()
    async with served(w.app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        posted = (
            await client.post(
                f"/v1/webchat/{w.token}/messages",
                json={"visitor_id": visitor, "text": QUESTION, "client_message_id": client_message_id},
            )
        ).json()
        params = {"visitor_id": visitor, "after": posted["message_id"]}
        async with client.stream("GET", f"/v1/webchat/{w.token}/events", params=params) as resp:
            sse = SseReader(resp)
            assert await sse.frame(5) == ["retry: 3000", ": connected"]
            yield {**posted, "visitor_id": visitor}, sse


# --- accept, process, history ---------------------------------------------------------------------


async def test_post_is_durable_idempotent_and_history_shows_citations(webchat: Webchat) -> None:
    visitor = anon()
    body = {"visitor_id": visitor, "text": QUESTION, "client_message_id": "m-1"}
    async with client_for(webchat.app) as client:
        first = await client.post(f"/v1/webchat/{webchat.token}/messages", json=body)
        again = await client.post(f"/v1/webchat/{webchat.token}/messages", json=body)
        assert first.status_code == 202 and again.status_code == 202
        assert again.json()["message_id"] == first.json()["message_id"]
        assert [first.json()["duplicate"], again.json()["duplicate"]] == [False, True]

        pending = await client.get(f"/v1/webchat/{webchat.token}/history", params={"visitor_id": visitor})
        assert [m["role"] for m in pending.json()["messages"]] == ["visitor"]

        sent = await deliver_pending(webchat)
        assert [p.customer_id for p in sent] == [f"anon:{visitor}"]
        assert sent[0].conversation_id == uuid.UUID(first.json()["conversation_id"])

        history = (
            await client.get(f"/v1/webchat/{webchat.token}/history", params={"visitor_id": visitor})
        ).json()
    assert history["conversation_id"] == first.json()["conversation_id"]
    visitor_msg, reply = history["messages"]
    assert visitor_msg == {
        **visitor_msg,
        "role": "visitor",
        "text": QUESTION,
        "id": first.json()["message_id"],
    }
    assert reply["role"] == "assistant" and reply["text"] == RETURNS_ANSWER
    assert {"source": "returns.md", "heading_path": "Returns & Refunds > Return Window"} in reply["citations"]
    # No prompts, scores or guardrail decisions; buttons only for options, an attachment only for a file.
    assert set(reply) == {"id", "role", "text", "created_at", "citations", "buttons", "attachment"}
    assert reply["buttons"] == [] and reply["attachment"] is None


async def test_two_visitors_may_reuse_client_ids(webchat: Webchat) -> None:
    async with client_for(webchat.app) as client:
        answers = [
            await client.post(
                f"/v1/webchat/{webchat.token}/messages",
                json={"visitor_id": anon(), "text": "hello", "client_message_id": "1"},
            )
            for _ in range(2)
        ]
    assert [a.json()["duplicate"] for a in answers] == [False, False]
    assert answers[0].json()["conversation_id"] != answers[1].json()["conversation_id"]


# --- SSE ------------------------------------------------------------------------------------------


async def test_sse_streams_the_reply_the_sender_delivers_and_releases_on_disconnect(webchat: Webchat) -> None:
    visitor = anon()
    channel = webchat_channel(webchat.backend.settings.redis, uuid.uuid4())
    async with served(webchat.app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        posted = (
            await client.post(
                f"/v1/webchat/{webchat.token}/messages",
                json={"visitor_id": visitor, "text": QUESTION, "client_message_id": "q1"},
            )
        ).json()
        channel = webchat_channel(webchat.backend.settings.redis, uuid.UUID(posted["conversation_id"]))
        params = {"visitor_id": visitor, "after": posted["message_id"]}
        async with client.stream("GET", f"/v1/webchat/{webchat.token}/events", params=params) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert resp.headers["access-control-allow-origin"] == "*"
            sse = SseReader(resp)
            assert await sse.frame(5) == ["retry: 3000", ": connected"]

            # Answered and stored, but not delivered: nothing but "typing" while it was drafted (when
            # drafting outlasted the signal's start) reaches the stream...
            await webchat.backend.orchestrator.process_stored(uuid.UUID(posted["message_id"]))
            frame = await sse.frame(3)
            while frame != [": heartbeat"]:
                assert frame == ["event: typing", "data: {}"]
                frame = await sse.frame(3)
            # ...until the web chat sender publishes it.
            [payload] = await deliver_pending(webchat)
            event_id, data = await sse.next_event(5)
            assert event_id == str(payload.message_id) == data["id"]
            assert data["role"] == "assistant" and data["text"] == RETURNS_ANSWER
            assert any(c["heading_path"].endswith("Return Window") for c in data["citations"])
            subscribers = await webchat.backend.redis.pubsub_numsub(channel)
            assert subscribers == [(channel, 1)]
        # Client gone: the server notices, ends the stream and unsubscribes.
        for _ in range(50):
            if await webchat.backend.redis.pubsub_numsub(channel) == [(channel, 0)]:
                break
            await asyncio.sleep(0.1)
        assert await webchat.backend.redis.pubsub_numsub(channel) == [(channel, 0)]


async def test_a_streaming_model_shows_the_reply_as_it_is_written_then_the_stored_one(
    streaming: Webchat,
) -> None:
    async with asked_and_listening(streaming, "s1") as (posted, sse):
        drafting = asyncio.create_task(
            streaming.backend.orchestrator.process_stored(uuid.UUID(posted["message_id"]))
        )
        drafts: list[dict[str, Any]] = []
        while not drafting.done() or not drafts:
            frame = await sse.frame(5)
            fields = dict(line.split(": ", 1) for line in frame if ": " in line and not line.startswith(":"))
            if fields.get("event") == "draft":
                assert "id" not in fields  # a reconnect resumes after stored replies only
                drafts.append(json.loads(fields["data"]))
        reply = await drafting
        # The drafts grow, each the beginning of the answer, for this inbound message.
        assert len(drafts) >= 2 and all(d["in_reply_to"] == posted["message_id"] for d in drafts)
        texts = [d["text"] for d in drafts]
        assert all(RETURNS_ANSWER.startswith(t) for t in texts) and texts == sorted(texts, key=len)
        # The stored, checked reply is what the customer keeps.
        [payload] = await deliver_pending(streaming)
        event_id, data = await sse.next_event(5)
        assert event_id == str(payload.message_id) and data["text"] == reply.text == RETURNS_ANSWER
    assert isinstance(streaming.backend.chat_model, StreamingScriptedChatModel)
    assert streaming.backend.chat_model.streamed == 1


async def test_the_stream_says_typing_while_a_reply_is_drafted(webchat: Webchat) -> None:
    """The orchestrator's typing signal for web chat: a ``typing`` event, renewed while drafting goes
    on, with no ``id:`` (a reconnect never resumes after it)."""
    async with asked_and_listening(webchat, "t1") as (posted, sse):
        signal = webchat.backend.orchestrator.signals.start(
            brand_id=webchat.demo.brand.id,
            tenant_id=webchat.demo.tenant.id,
            channel=Channel.WEBCHAT,
            conversation_id=uuid.UUID(posted["conversation_id"]),
            customer_id=posted["visitor_id"],
            message_id=f"{posted['visitor_id']}/t1",
        )
        assert signal is not None
        try:
            first = time.monotonic()
            assert await sse.next_frame(5) == ["event: typing", "data: {}"]
            assert await sse.next_frame(RENEW_S + 3) == ["event: typing", "data: {}"]  # renewed
            assert time.monotonic() - first >= RENEW_S - 0.5
        finally:
            signal.cancel()


async def test_sse_catches_up_after_reconnect(webchat: Webchat) -> None:
    visitor = anon()
    async with served(webchat.app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        posted = (
            await client.post(
                f"/v1/webchat/{webchat.token}/messages",
                json={"visitor_id": visitor, "text": QUESTION, "client_message_id": "q1"},
            )
        ).json()
        reply = await webchat.backend.orchestrator.process_stored(uuid.UUID(posted["message_id"]))
        # Reconnect (as a browser does) naming the last event it saw: the stored reply is sent at once.
        headers = {"Last-Event-ID": posted["message_id"]}
        url = f"/v1/webchat/{webchat.token}/events"
        async with client.stream("GET", url, params={"visitor_id": visitor}, headers=headers) as resp:
            event_id, data = await SseReader(resp).next_event(5)
        assert event_id == str(reply.message_id) and data["text"] == RETURNS_ANSWER
        # Anchored on the reply itself there is nothing newer to catch up on.
        headers = {"Last-Event-ID": str(reply.message_id)}
        async with client.stream("GET", url, params={"visitor_id": visitor}, headers=headers) as resp:
            sse = SseReader(resp)
            assert await sse.frame(5) == ["retry: 3000", ": connected"]
            assert await sse.frame(3) == [": heartbeat"]


async def test_events_need_a_conversation(webchat: Webchat) -> None:
    async with client_for(webchat.app) as client:
        resp = await client.get(f"/v1/webchat/{webchat.token}/events", params={"visitor_id": anon()})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


# --- identity -------------------------------------------------------------------------------------


def signed(token: str, visitor_id: str, *, ttl: int = 600, secret: str = SECRET) -> str:
    key = widget_identity_key(SecretStr(secret), token)
    return sign_identity(key, visitor_id=visitor_id, expires_at=int(time.time()) + ttl)


async def test_signed_identity_is_the_customer_and_is_verified(webchat: Webchat) -> None:
    url = f"/v1/webchat/{webchat.token}"
    user = f"crm-{uuid.uuid4().hex[:8]}"
    identity = signed(webchat.token, user)
    async with client_for(webchat.app) as client:
        ok = await client.post(
            f"{url}/messages", json={"identity": identity, "text": "hi", "client_message_id": "a"}
        )
        assert ok.status_code == 202
        history = await client.get(f"{url}/history", params={"identity": identity})
        assert history.json()["conversation_id"] == ok.json()["conversation_id"]

        tampered = identity[:-1] + ("0" if identity[-1] != "0" else "1")
        other_widget = signed(await add_widget(webchat.backend, webchat.demo), user)  # another widget's key
        expired = signed(webchat.token, user, ttl=-5)
        too_long = signed(webchat.token, user, ttl=30 * 86400)
        for bad in (tampered, other_widget, expired, too_long, "v1.x.y.z"):
            resp = await client.get(f"{url}/history", params={"identity": bad})
            assert resp.status_code == 401, bad
            assert resp.json()["error"]["code"] == "unauthorized"

        # The same id as an anonymous visitor is another customer: it cannot read the signed-in history.
        squatter = await client.get(f"{url}/history", params={"visitor_id": f"{user}-padding-x"})
        assert squatter.json() == {"conversation_id": None, "messages": []}
        mismatch = await client.post(
            f"{url}/messages",
            json={
                "identity": identity,
                "visitor_id": "someone-else-entirely",
                "text": "x",
                "client_message_id": "b",
            },
        )
        assert mismatch.status_code == 400


async def test_widget_can_require_identity(webchat: Webchat) -> None:
    token = await add_widget(webchat.backend, webchat.demo, require_identity=True)
    async with client_for(webchat.app) as client:
        anon_resp = await client.post(
            f"/v1/webchat/{token}/messages",
            json={"visitor_id": anon(), "text": "hi", "client_message_id": "a"},
        )
        signed_resp = await client.post(
            f"/v1/webchat/{token}/messages",
            json={"identity": signed(token, "u-1"), "text": "hi", "client_message_id": "a"},
        )
        config = await client.get(f"/v1/webchat/{token}/config")
    assert anon_resp.status_code == 401 and signed_resp.status_code == 202
    assert config.json()["require_identity"] is True


def test_identity_without_a_server_secret_is_refused() -> None:
    with pytest.raises(Unauthorized):
        resolve_visitor(
            secret=None, token="tok_12345678", visitor_id=None, identity="v1.YQ.9999999999.00",
            require_identity=False, max_ttl_s=60,
        )  # fmt: skip


# --- rate limits, errors, CORS --------------------------------------------------------------------


async def test_rate_limit_per_visitor_answers_429_with_retry_after(webchat: Webchat) -> None:
    url = f"/v1/webchat/{webchat.token}/messages"
    noisy = anon()
    async with client_for(webchat.app) as client:
        codes = [
            (
                await client.post(url, json={"visitor_id": noisy, "text": "hi", "client_message_id": f"n{i}"})
            ).status_code
            for i in range(3)
        ]
        limited = await client.post(url, json={"visitor_id": noisy, "text": "hi", "client_message_id": "n3"})
        other = await client.post(url, json={"visitor_id": anon(), "text": "hi", "client_message_id": "n0"})
    assert codes == [202, 202, 202]
    assert limited.status_code == 429
    body = limited.json()["error"]
    assert body["code"] == "rate_limited" and body["details"]["limit"] == 3
    assert 1 <= int(limited.headers["retry-after"]) <= 60 == body["details"]["window_s"]
    assert limited.headers["access-control-allow-origin"] == "*"
    assert other.status_code == 202


async def test_fixed_window_resets(webchat: Webchat) -> None:
    now = [1000.0]
    limiter = FixedWindowLimiter(
        webchat.backend.redis, key_prefix=webchat.backend.settings.redis.key("rl-test"), limit=2, window_s=10,
        clock=lambda: now[0],
    )  # fmt: skip
    assert [(await limiter.hit("v")).allowed for _ in range(3)] == [True, True, False]
    assert (await limiter.hit("v")).retry_after_s == 10
    now[0] = 1010.0
    assert (await limiter.hit("v")).allowed


async def test_unknown_disabled_or_malformed_token_is_the_same_404(webchat: Webchat) -> None:
    disabled = f"wt_{uuid.uuid4().hex}"
    CREATED_WIDGETS.append(disabled)
    async with webchat.backend.sessionmaker() as session:
        await repo.upsert_channel_config(
            session, tenant_id=webchat.demo.tenant.id, brand_id=webchat.demo.brand.id,
            channel=Channel.WEBCHAT, external_id=disabled, settings={}, enabled=False,
        )  # fmt: skip
        await session.commit()
    body = {"visitor_id": anon(), "text": "hi", "client_message_id": "a"}
    async with client_for(webchat.app) as client:
        answers = [
            await client.post(f"/v1/webchat/{token}/messages", json=body)
            for token in (f"wt_{uuid.uuid4().hex}", disabled, "x")
        ]
        answers.append(await client.get(f"/v1/webchat/wt_{uuid.uuid4().hex}/config"))
    for resp in answers:
        assert resp.status_code == 404
        assert resp.json() == {"error": {"code": "not_found", "message": "unknown widget", "details": {}}}


async def test_bad_input_is_4xx_with_the_error_body(webchat: Webchat) -> None:
    url = f"/v1/webchat/{webchat.token}/messages"
    async with client_for(webchat.app) as client:
        short_id = await client.post(
            url, json={"visitor_id": "short", "text": "hi", "client_message_id": "a"}
        )
        missing = await client.post(url, json={"visitor_id": anon(), "client_message_id": "a"})
        bad_client_id = await client.post(
            url, json={"visitor_id": anon(), "text": "x", "client_message_id": "a b"}
        )
        too_long = await client.post(
            url, json={"visitor_id": anon(), "text": "x" * 5000, "client_message_id": "a"}
        )
        bad_after = await client.get(
            f"/v1/webchat/{webchat.token}/events", params={"visitor_id": anon(), "after": "nope"}
        )
    assert short_id.status_code == 400 and short_id.json()["error"]["details"]["field"] == "visitor_id"
    assert missing.status_code == 400 and missing.json()["error"]["details"]["errors"]
    assert bad_client_id.status_code == 400
    assert too_long.status_code == 413 and too_long.json()["error"]["code"] == "payload_too_large"
    assert bad_after.status_code == 400 and bad_after.json()["error"]["code"] == "invalid_input"
    for resp in (short_id, missing, too_long):
        assert resp.headers["access-control-allow-origin"] == "*"


async def test_cors_preflight_and_allowed_origins(webchat: Webchat) -> None:
    locked = await add_widget(webchat.backend, webchat.demo, allowed_origins=["https://shop.example"])
    async with client_for(webchat.app) as client:
        pre = await client.options(
            f"/v1/webchat/{webchat.token}/messages",
            headers={"Origin": "https://any.example", "Access-Control-Request-Method": "POST"},
        )
        good = await client.get(f"/v1/webchat/{locked}/config", headers={"Origin": "https://shop.example"})
        bad = await client.get(f"/v1/webchat/{locked}/config", headers={"Origin": "https://evil.example"})
    assert pre.status_code == 204 and "POST" in pre.headers["access-control-allow-methods"]
    assert "content-type" in pre.headers["access-control-allow-headers"]
    assert good.status_code == 200 and bad.status_code == 401


# --- widget, page, config -------------------------------------------------------------------------


async def test_widget_config_page_and_script(webchat: Webchat) -> None:
    brand = webchat.demo.brand
    bad_color = await add_widget(
        webchat.backend, webchat.demo, primary_color="red;}</style>", title="Acme help"
    )
    async with client_for(webchat.app) as client:
        config = (await client.get(f"/v1/webchat/{webchat.token}/config")).json()
        fallback = (await client.get(f"/v1/webchat/{bad_color}/config")).json()
        script = await client.get("/widget.js")
        page = await client.get(f"/chat/{brand.id}")
        no_widget_brand = await client.get(f"/chat/{uuid.uuid4()}")
    assert config["brand_name"] == "Acme Outdoor" and config["primary_color"] == "#0a7d38"
    assert config["greeting"] == "Howdy from the test widget"
    # The demo brand's suggest rule: its questions, offered under the greeting.
    assert config["suggestions"][:3] == ["Delivery times", "How do I return?", "Refunds"]
    # A bad stored color falls back alone; the persona greeting is the default greeting.
    assert fallback["primary_color"] == "#1f6feb" and fallback["title"] == "Acme help"
    assert fallback["greeting"] == brand.persona.greeting
    assert script.status_code == 200 and script.headers["content-type"].startswith("application/javascript")
    assert "EventSource" in script.text and "aria-live" in script.text
    assert page.status_code == 200 and "Acme Outdoor" in page.text and str(brand.id) in page.text
    # The page embeds one of the brand's enabled widgets (the demo seed adds "acme-outdoor-web").
    assert 'src="/widget.js"' in page.text
    assert f'data-token="{webchat.token}"' in page.text or 'data-token="acme-outdoor-web"' in page.text
    assert no_widget_brand.status_code == 404


async def test_sender_resumed_after_its_single_part_publishes_nothing(webchat: Webchat) -> None:
    payload = OutboundPayload(
        message_id=uuid.uuid4(), conversation_id=uuid.uuid4(), tenant_id=webchat.demo.tenant.id,
        brand_id=webchat.demo.brand.id, channel=Channel.WEBCHAT, customer_id="anon:x", text="t",
    )  # fmt: skip
    channel = webchat_channel(webchat.backend.settings.redis, payload.conversation_id)
    pubsub = webchat.backend.redis.pubsub()
    await pubsub.subscribe(channel)
    try:
        recipient = RecipientConfig(channel=Channel.WEBCHAT, external_id=webchat.token)
        resumed = await webchat.sender.send(payload, recipient_config=recipient, start_part=1)
        assert resumed.provider_message_id == str(payload.message_id)
        first = await webchat.sender.send(payload, recipient_config=recipient)
        assert first.provider_message_id == str(payload.message_id)
        got: list[dict[str, Any]] = []
        for _ in range(20):
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if msg is not None:
                got.append(msg)
        assert [json.loads(m["data"])["message_id"] for m in got] == [str(payload.message_id)]
    finally:
        await pubsub.unsubscribe()
        await pubsub.aclose()


async def test_delivery_registry_sends_web_chat_with_this_sender(webchat: Webchat) -> None:
    registry = build_registry(webchat.backend.settings, redis=webchat.backend.redis)
    try:
        assert isinstance(registry.get(Channel.WEBCHAT), WebchatSender)
    finally:
        await registry.aclose()


async def test_sse_ends_by_itself_after_its_lifetime(webchat: Webchat) -> None:
    webchat.backend.settings.webchat.sse_max_s = 1.0  # read per connection
    visitor = anon()
    async with served(webchat.app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        posted = (
            await client.post(
                f"/v1/webchat/{webchat.token}/messages",
                json={"visitor_id": visitor, "text": "hi", "client_message_id": "q1"},
            )
        ).json()
        channel = webchat_channel(webchat.backend.settings.redis, uuid.UUID(posted["conversation_id"]))
        started = time.monotonic()
        url = f"/v1/webchat/{webchat.token}/events"
        async with client.stream("GET", url, params={"visitor_id": visitor}) as resp:
            sse = SseReader(resp)
            assert await sse.frame(5) == ["retry: 3000", ": connected"]
            with pytest.raises(EOFError):
                while True:
                    await sse.frame(5)
        assert time.monotonic() - started < 4
        assert await webchat.backend.redis.pubsub_numsub(channel) == [(channel, 0)]
