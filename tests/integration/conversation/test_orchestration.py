"""The message pipeline in-process: real Postgres, Redis, embedded Qdrant (Edge) and embedding model.

The chat model is ``ScriptedChatModel``, a test double that returns a fixed answer so the guardrail and
storage behaviour under test is deterministic (the real llama.cpp model is covered by test_llm_local and
the Serve test).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from common.access.principal import Scope
from common.config import AnswerSettings, ServiceEndpoints, Settings
from common.conversation.replies import reply_buttons
from common.domain import Channel, InboundMessage
from common.errors import NotFound, PayloadTooLarge
from pipelines.demo import DemoBrand, demo_documents, seed_demo_brand
from serve_apps.gateway.app import build_gateway_api
from serve_apps.inprocess import InProcessBackend
from tests.auth import key_headers
from tests.fakes.chat import ScriptedChatModel

pytestmark = pytest.mark.integration

RETURNS_ANSWER = "You have 30 days from the delivery date to return an item for a full refund."


@contextlib.asynccontextmanager
async def _pipeline(
    settings: Settings, chat: ScriptedChatModel, *, database_url: str, redis_url: str, prefix: str, tmp: Path
) -> AsyncIterator[tuple[InProcessBackend, DemoBrand, ScriptedChatModel]]:
    """The in-process pipeline with the demo brand indexed and ``chat`` as its model."""
    endpoints = ServiceEndpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=f"{prefix}:{uuid.uuid4().hex[:6]}",
        qdrant_path=tmp / "q",
    )
    backend = InProcessBackend(settings, endpoints, chat_model=chat)
    demo = await seed_demo_brand(backend.sessionmaker)
    await backend.knowledge.ingest(demo.tenant.id, demo.brand.id, demo_documents())
    try:
        yield backend, demo, chat
    finally:
        await backend.aclose()


@pytest_asyncio.fixture
async def pipeline(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[InProcessBackend, DemoBrand, ScriptedChatModel]]:
    chat = ScriptedChatModel(RETURNS_ANSWER, delay_s=0.05)  # long enough for racing callers to overlap
    # The scripted model stands in for a capable one: it answers (the default with the embedded model
    # would answer covered questions with the passages' own sentences).
    settings = Settings(answers=AnswerSettings(mode="generate"))
    async with _pipeline(
        settings, chat, database_url=database_url, redis_url=redis_url, prefix=redis_prefix, tmp=tmp_path
    ) as world:
        yield world


def _message(demo: DemoBrand, text: str, *, mid: str | None = None, customer: str = "c1") -> InboundMessage:
    return InboundMessage(
        brand_id=demo.brand.id,
        channel=Channel.WHATSAPP,
        customer_id=customer,
        text=text,
        provider_message_id=mid or f"wamid.{uuid.uuid4().hex}",
    )


async def _stream(backend: InProcessBackend, name: str) -> list[dict[str, str]]:
    client: aioredis.Redis = backend.redis
    entries = await client.xrange(backend.settings.redis.key("stream", name))
    return [json.loads(fields["data"]) for _, fields in entries]


async def test_handle_answers_grounded_and_publishes(pipeline) -> None:
    backend, demo, chat = pipeline
    reply = await backend.orchestrator.handle(_message(demo, "How long do I have to return an item?"))
    assert reply.text == RETURNS_ANSWER and reply.guardrails[0].action == "pass"
    assert any("Return Window" in c.heading_path for c in reply.citations)
    published = await _stream(backend, "outbound")
    assert [p["message_id"] for p in published] == [str(reply.message_id)]
    assert chat.calls == 1


async def test_concurrent_duplicates_get_one_answer(pipeline) -> None:
    backend, demo, _chat = pipeline
    msg = _message(demo, "How long do I have to return an item?")
    replies = await asyncio.gather(
        *(backend.orchestrator.handle(msg) for _ in range(3)), return_exceptions=True
    )
    answered = [r for r in replies if not isinstance(r, BaseException)]
    assert answered, replies
    assert len({r.message_id for r in answered}) == 1
    assert sum(not r.duplicate for r in answered) == 1
    outbound = await _stream(backend, "outbound")
    assert len(outbound) == 1


async def test_accept_then_process_is_idempotent(pipeline) -> None:
    backend, demo, _chat = pipeline
    orch = backend.orchestrator
    msg = _message(demo, "How long do I have to return an item?")
    first = await orch.accept(msg)
    again = await orch.accept(msg)
    assert not first.duplicate and again.duplicate and again.inbound_id == first.inbound_id
    queued = [{k: v for k, v in entry.items() if k != "trace"} for entry in await _stream(backend, "inbound")]
    assert queued == [{"inbound_id": str(first.inbound_id), "brand_id": str(demo.brand.id)}]

    # Two workers race on the same stored message: one reply, one send.
    r1, r2 = await asyncio.gather(
        orch.process_stored(first.inbound_id), orch.process_stored(first.inbound_id)
    )
    assert r1.message_id == r2.message_id and sorted([r1.duplicate, r2.duplicate]) == [False, True]
    r3 = await orch.process_stored(first.inbound_id)
    assert r3.duplicate and r3.text == RETURNS_ANSWER
    assert len(await _stream(backend, "outbound")) == 1


async def test_no_relevant_knowledge_escalates_without_calling_the_llm(pipeline) -> None:
    backend, demo, chat = pipeline
    reply = await backend.orchestrator.handle(_message(demo, "What is the capital of France?"))
    assert reply.escalated and chat.calls == 0
    assert demo.brand.persona.fallback_message in reply.text
    assert ("groundedness", "escalate") in [(d.rule, d.action) for d in reply.guardrails]


async def test_unsupported_answer_is_replaced_by_a_quote(pipeline) -> None:
    backend, demo, chat = pipeline
    chat.script = "Returns are accepted for 365 days, and we refund double."
    reply = await backend.orchestrator.handle(_message(demo, "How long do I have to return an item?"))
    assert [d.action for d in reply.guardrails if d.rule == "groundedness"] == ["replace"]
    assert "365" not in reply.text and "returns.md" not in reply.text
    assert reply.citations and reply.citations[0].source.endswith("returns.md")


async def test_errors(pipeline) -> None:
    backend, demo, _ = pipeline
    with pytest.raises(PayloadTooLarge):
        await backend.orchestrator.handle(_message(demo, "x" * 10_000))
    unknown = InboundMessage(brand_id=uuid.uuid4(), channel=Channel.WEBCHAT, customer_id="c", text="hi")
    with pytest.raises(NotFound):
        await backend.orchestrator.handle(unknown)
    with pytest.raises(NotFound):
        await backend.orchestrator.process_stored(uuid.uuid4())


async def test_http_api_in_process(pipeline) -> None:
    backend, demo, _ = pipeline
    app = build_gateway_api(backend, max_body_bytes=4096)
    transport = httpx.ASGITransport(app=app)
    headers = await key_headers(backend.sessionmaker, demo.tenant.id)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as client:
        ok = await client.post(
            "/v1/messages/inbound",
            json={"brand_id": str(demo.brand.id), "customer_id": "web-1", "text": "Return window?"},
        )
        assert ok.status_code == 200 and ok.json()["citations"]
        big = await client.post("/v1/messages/inbound", content=b"x" * 5000)
        assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
        extra = await client.post(
            "/v1/messages/inbound",
            json={"brand_id": str(demo.brand.id), "customer_id": "w", "text": "hi", "admin": True},
        )
        assert extra.status_code == 400 and extra.json()["error"]["details"]["errors"]
        page = await client.get(f"/chat/{demo.brand.id}")
        assert page.status_code == 200 and "Acme Outdoor" in page.text and str(demo.brand.id) in page.text
        conv = await client.get(f"/v1/conversations/{ok.json()['conversation_id']}")
        assert conv.json()["state"] == "bot" and len(conv.json()["messages"]) == 2
        ready = await client.get("/readyz")
        assert ready.json() == {"ready": True, "checks": {"database": True, "redis": True}}


@pytest_asyncio.fixture
async def default_pipeline(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[InProcessBackend, DemoBrand, ScriptedChatModel]]:
    """Default answer settings with the embedded provider: covered questions get the passages' sentences."""
    chat = ScriptedChatModel("Yes, we accept cryptocurrency.")  # a weak model's contradiction
    async with _pipeline(
        Settings(), chat, database_url=database_url, redis_url=redis_url, prefix=redis_prefix, tmp=tmp_path
    ) as world:
        yield world


async def test_by_default_the_sentence_that_answers_is_the_reply(default_pipeline) -> None:
    backend, demo, _ = default_pipeline
    reply = await backend.orchestrator.handle(
        _message(demo, "Do you accept cryptocurrency?", customer=f"q-{uuid.uuid4().hex[:6]}")
    )
    assert "do not accept" in reply.text and "cryptocurrency" in reply.text
    assert "we accept cryptocurrency" not in reply.text.lower()  # the model's words are not used
    assert "://" not in reply.text and "Here's what I found" not in reply.text
    assert len(reply.text) <= 300
    assert [c.source for c in reply.citations] == ["orders-and-payments.md"]
    assert ("answerability", "pass") in [(d.rule, d.action) for d in reply.guardrails]


async def test_a_near_miss_question_is_declined_with_the_fallback_and_why(default_pipeline) -> None:
    backend, demo, _ = default_pipeline
    reply = await backend.orchestrator.handle(
        _message(demo, "Do you sell kayaks?", customer=f"q-{uuid.uuid4().hex[:6]}")
    )
    assert demo.brand.persona.fallback_message in reply.text
    assert reply.escalated and reply.citations == ()
    declined = [d for d in reply.guardrails if d.rule == "answerability"]
    assert declined[0].action == "decline" and "kayak" in declined[0].reason


async def test_a_followup_is_answered_with_the_previous_question_in_mind(default_pipeline) -> None:
    backend, demo, _ = default_pipeline
    customer = f"q-{uuid.uuid4().hex[:6]}"
    await backend.orchestrator.handle(
        _message(demo, "How long does delivery take to the US?", customer=customer)
    )
    reply = await backend.orchestrator.handle(_message(demo, "and to Canada?", customer=customer))
    assert "Canada" in reply.text and "business days" in reply.text, reply.text


async def test_a_store_address_from_the_brand_knowledge_is_not_masked_as_personal_data(
    default_pipeline,
) -> None:
    backend, demo, _ = default_pipeline
    reply = await backend.orchestrator.handle(
        _message(demo, "Where is your Seattle store?", customer=f"q-{uuid.uuid4().hex[:6]}")
    )
    assert "455 Pine Street" in reply.text and "[address]" not in reply.text, reply.text


async def test_json_upload_takes_csv_and_html_and_refuses_other_types_readably(pipeline) -> None:
    backend, demo, _ = pipeline
    base = f"/v1/brands/{demo.brand.id}/knowledge"
    transport = httpx.ASGITransport(app=build_gateway_api(backend))
    headers = await key_headers(backend.sessionmaker, demo.tenant.id, Scope.KNOWLEDGE_WRITE)
    client = httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers)
    table = "Plan,Monthly price\nFlex,$39\nCore,$55\n"
    page = "<html><body><main><h1>Clubs</h1><p>Seaport is open 24 hours.</p></main></body></html>"
    body = {
        "documents": [
            {"uri": "plans.csv", "content": table, "content_type": "text/csv"},
            {"uri": "clubs.html", "content": page, "content_type": "text/html"},
        ]
    }
    indexed = await client.post(base, json=body)
    assert indexed.status_code == 201, indexed.text
    assert indexed.json()["documents"] == 2 and len(indexed.json()["chunk_ids"]) == 3  # 2 rows + 1 paragraph
    pdf = {"documents": [{"uri": "a.pdf", "content": "x", "content_type": "application/pdf"}]}
    refused = await client.post(base, json=pdf)
    assert refused.status_code in (400, 422) and refused.json()["error"]["code"] in (
        "invalid_input",
        "validation_error",
    )
    await client.aclose()


async def test_a_question_not_covered_offers_the_brands_suggestions_and_each_is_answered(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """The demo brand's ``suggest`` rule: the fallback carries its questions as options, and a tap on any
    of them (its text) is answered from the knowledge, with the embedded model's default answering."""
    chat = ScriptedChatModel("unused")
    async with _pipeline(
        Settings(), chat, database_url=database_url, redis_url=redis_url, prefix=redis_prefix, tmp=tmp_path
    ) as (backend, demo, _):
        declined = await backend.orchestrator.handle(
            _message(demo, "Can you recommend a good pizza place near your store?", customer="s1")
        )
        options = reply_buttons(declined.guardrails)
        assert len(options) == 6 and "Store hours" in options
        [outbound] = [
            p for p in await _stream(backend, "outbound") if p["message_id"] == str(declined.message_id)
        ]
        assert outbound["quick_replies"] == options  # what the channels send (a list on WhatsApp)
        for number, option in enumerate(options):
            # Tapped in the conversation that declined (a short text there is no follow-up of the
            # question before), and by a new customer.
            customer = "s1" if number == 0 else f"s-tap-{number}"
            tapped = await backend.orchestrator.handle(_message(demo, option, customer=customer))
            decided = {(d.rule, d.action) for d in tapped.guardrails}
            assert ("answerability", "pass") in decided, (option, tapped.text, tapped.guardrails)
            assert reply_buttons(tapped.guardrails) == []  # answered: no options under it
        for option in options[1:]:  # and every one of them in that same conversation
            tapped = await backend.orchestrator.handle(_message(demo, option, customer="s1"))
            assert ("answerability", "pass") in {(d.rule, d.action) for d in tapped.guardrails}, option
