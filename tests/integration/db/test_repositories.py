"""Repositories against a real Postgres: round trips, idempotency and concurrency."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select

from common import domain
from common.db import repositories as repo
from common.db.models import Conversation, MessageLog
from common.db.session import make_sessionmaker, session_scope
from common.schemas import ChunkRecord

pytestmark = pytest.mark.integration


async def _brand(session, *, persona: domain.Persona | None = None) -> domain.BrandProfile:
    tenant_id, brand_id = uuid.uuid4(), uuid.uuid4()
    await repo.upsert_tenant(session, tenant_id=tenant_id, slug=f"t-{tenant_id.hex[:8]}", name="Acme")
    return await repo.upsert_brand(
        session,
        brand_id=brand_id,
        tenant_id=tenant_id,
        slug="shoes",
        name="Acme Shoes",
        persona=persona or domain.Persona(),
    )


def _inbound(brand: domain.BrandProfile, provider_message_id: str = "wamid.1") -> domain.InboundMessage:
    return domain.InboundMessage(
        brand_id=brand.id,
        channel=domain.Channel.WHATSAPP,
        customer_id="+15550001",
        text="Do you ship to Canada?",
        provider_message_id=provider_message_id,
    )


async def test_tenant_brand_persona_round_trip(db_session):
    persona = domain.Persona(
        tone="warm", languages=("en", "fr"), greeting="Hello!", avoid_topics=("politics",), sign_off="-- A"
    )
    brand = await _brand(db_session, persona=persona)

    loaded = await repo.get_brand_profile(db_session, brand_id=brand.id)
    assert loaded == brand
    assert loaded.persona == persona

    changed = domain.Persona(tone="formal", languages=("de",))
    await repo.upsert_brand(
        db_session,
        brand_id=brand.id,
        tenant_id=brand.tenant_id,
        slug="shoes",
        name="Renamed",
        persona=changed,
    )
    reloaded = await repo.get_brand_profile(db_session, brand_id=brand.id)
    assert reloaded is not None
    assert reloaded.name == "Renamed"
    assert reloaded.persona == changed
    assert await repo.get_brand_profile(db_session, brand_id=uuid.uuid4()) is None


async def test_upsert_tenant_updates_in_place(db_session):
    tenant_id = uuid.uuid4()
    await repo.upsert_tenant(db_session, tenant_id=tenant_id, slug=f"s-{tenant_id.hex[:6]}", name="One")
    tenant = await repo.upsert_tenant(
        db_session, tenant_id=tenant_id, slug=f"s-{tenant_id.hex[:6]}", name="Two"
    )
    assert tenant == domain.Tenant(id=tenant_id, slug=f"s-{tenant_id.hex[:6]}", name="Two")


async def test_channel_config_upsert_and_find(db_session):
    brand = await _brand(db_session)
    external_id = f"phone-{uuid.uuid4().hex[:8]}"
    await repo.upsert_channel_config(
        db_session,
        tenant_id=brand.tenant_id,
        brand_id=brand.id,
        channel=domain.Channel.WHATSAPP,
        external_id=external_id,
        settings={"a": 1},
    )
    await repo.upsert_channel_config(
        db_session,
        tenant_id=brand.tenant_id,
        brand_id=brand.id,
        channel=domain.Channel.WHATSAPP,
        external_id=external_id,
        settings={"a": 2},
    )
    found = await repo.find_channel_config(
        db_session, channel=domain.Channel.WHATSAPP, external_id=external_id
    )
    assert found is not None
    assert (found.brand_id, found.settings, found.enabled) == (brand.id, {"a": 2}, True)
    assert (
        await repo.find_channel_config(db_session, channel=domain.Channel.TELEGRAM, external_id=external_id)
        is None
    )


async def test_inbound_is_idempotent_and_reply_is_found(db_session):
    brand = await _brand(db_session)
    conversation = await repo.get_or_create_conversation(
        db_session,
        tenant_id=brand.tenant_id,
        brand_id=brand.id,
        channel=domain.Channel.WHATSAPP,
        customer_id="+15550001",
    )
    assert conversation.state == domain.ConversationState.BOT

    first = await repo.insert_inbound(db_session, conversation=conversation, message=_inbound(brand))
    again = await repo.insert_inbound(db_session, conversation=conversation, message=_inbound(brand))
    assert first is not None
    assert again is None
    count = await db_session.scalar(
        select(func.count()).select_from(MessageLog).where(MessageLog.conversation_id == conversation.id)
    )
    assert count == 1
    assert (
        await repo.find_inbound(
            db_session, brand_id=brand.id, channel=domain.Channel.WHATSAPP, provider_message_id="wamid.1"
        )
    ).id == first.id

    reply = await repo.insert_outbound(
        db_session,
        conversation=conversation,
        in_reply_to=first.id,
        text="Yes, we do.",
        citations=[{"chunk_id": "c1", "source": "faq.md", "heading_path": "Shipping", "score": 0.9}],
        guardrails=[{"rule": "pii", "action": "pass", "reason": ""}],
        prompt=[{"role": "user", "content": "Do you ship to Canada?"}],
        llm_usage={"prompt_tokens": 10, "completion_tokens": 4},
    )
    assert reply.created_at >= first.created_at
    assert (await repo.find_reply_to(db_session, inbound_id=first.id)).id == reply.id

    loaded = await repo.get_conversation_with_messages(db_session, conversation_id=conversation.id)
    assert loaded is not None
    assert [m.id for m in loaded[1]] == [first.id, reply.id]
    assert [
        m.id for m in await repo.recent_messages(db_session, conversation_id=conversation.id, limit=1)
    ] == [reply.id]
    assert await repo.get_conversation_with_messages(db_session, conversation_id=uuid.uuid4()) is None


async def test_outbox_add_unpublished_mark(db_session):
    stream = f"ematest-{uuid.uuid4().hex[:6]}"
    first = await repo.add_outbox(db_session, stream=stream, payload={"n": 1})
    second = await repo.add_outbox(db_session, stream=stream, payload={"n": 2})

    pending = [m for m in await repo.unpublished_outbox(db_session, limit=100) if m.stream == stream]
    assert [m.id for m in pending] == [first.id, second.id]

    assert await repo.mark_outbox_published(db_session, outbox_ids=[first.id]) == 1
    pending = [m for m in await repo.unpublished_outbox(db_session, limit=100) if m.stream == stream]
    assert [m.id for m in pending] == [second.id]
    assert first.published_at is not None
    assert await repo.mark_outbox_published(db_session, outbox_ids=[first.id]) == 0


def _chunk(brand: domain.BrandProfile, chunk_id: str, ordinal: int) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=chunk_id,
        tenant_id=brand.tenant_id,
        brand_id=brand.id,
        source="faq.md",
        heading_path="FAQ > Shipping",
        ordinal=ordinal,
        text=f"text {chunk_id}",
        content_hash=f"h-{chunk_id}",
    )


async def test_sync_source_chunks_reports_new_unchanged_deleted(db_session):
    brand = await _brand(db_session)
    source = await repo.upsert_knowledge_source(
        db_session,
        tenant_id=brand.tenant_id,
        brand_id=brand.id,
        uri="faq.md",
        title="FAQ",
        content_type="text/markdown",
        content_hash="v1",
    )
    ids = [f"{brand.id.hex}-{n}" for n in range(4)]

    result = await repo.sync_source_chunks(
        db_session, source=source, chunks=[_chunk(brand, i, n) for n, i in enumerate(ids[:3])]
    )
    assert result == (ids[:3], [], [])

    source = await repo.upsert_knowledge_source(
        db_session,
        tenant_id=brand.tenant_id,
        brand_id=brand.id,
        uri="faq.md",
        title="FAQ",
        content_type="text/markdown",
        content_hash="v2",
    )
    assert source.content_hash == "v2"
    second = [_chunk(brand, ids[1], 0), _chunk(brand, ids[3], 1)]
    new, unchanged, deleted = await repo.sync_source_chunks(db_session, source=source, chunks=second)
    assert (new, unchanged, deleted) == ([ids[3]], [ids[1]], sorted([ids[0], ids[2]]))

    stored = await repo.list_chunks(db_session, tenant_id=brand.tenant_id, brand_id=brand.id)
    assert [(c.id, c.ordinal) for c in stored] == [(ids[1], 0), (ids[3], 1)]


async def test_ingestion_job_lifecycle(db_session):
    brand = await _brand(db_session)
    job = await repo.create_ingestion_job(
        db_session, tenant_id=brand.tenant_id, brand_id=brand.id, source="upload"
    )
    assert (job.status, job.attempts, job.counts) == ("queued", 0, {})

    updated = await repo.update_ingestion_job(
        db_session, job_id=job.id, status="succeeded", counts={"documents": 1}, increment_attempts=True
    )
    assert updated is not None
    assert (updated.status, updated.attempts, updated.counts) == ("succeeded", 1, {"documents": 1})
    assert (await repo.get_ingestion_job(db_session, job_id=job.id)).status == "succeeded"
    assert await repo.get_ingestion_job(db_session, job_id=job.id, brand_id=uuid.uuid4()) is None
    assert await repo.update_ingestion_job(db_session, job_id=uuid.uuid4(), status="failed") is None


async def test_conversation_state_change(db_session):
    brand = await _brand(db_session)
    conversation = await repo.get_or_create_conversation(
        db_session,
        tenant_id=brand.tenant_id,
        brand_id=brand.id,
        channel=domain.Channel.WEBCHAT,
        customer_id="c1",
    )
    moved = await repo.set_conversation_state(
        db_session, conversation_id=conversation.id, state=domain.ConversationState.HANDOFF
    )
    assert moved is not None
    assert moved.state == "handoff"


# --- concurrency: separate sessions, real commits (a throwaway database, so no cleanup needed) ----------


async def _committed_brand(sessionmaker) -> domain.BrandProfile:
    async with session_scope(sessionmaker) as session:
        return await _brand(session)


async def test_get_or_create_conversation_under_concurrency(db_engine):
    sessionmaker = make_sessionmaker(db_engine)
    brand = await _committed_brand(sessionmaker)

    async def one() -> uuid.UUID:
        async with session_scope(sessionmaker) as session:
            conversation = await repo.get_or_create_conversation(
                session,
                tenant_id=brand.tenant_id,
                brand_id=brand.id,
                channel=domain.Channel.TELEGRAM,
                customer_id="42",
            )
            await asyncio.sleep(0.05)  # keep transactions open so the inserts really overlap
            return conversation.id

    ids = await asyncio.gather(*(one() for _ in range(5)))
    assert len(set(ids)) == 1
    async with sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).select_from(Conversation).where(Conversation.brand_id == brand.id)
        )
    assert count == 1


async def test_concurrent_duplicate_inbound_is_stored_once(db_engine):
    sessionmaker = make_sessionmaker(db_engine)
    brand = await _committed_brand(sessionmaker)
    async with session_scope(sessionmaker) as session:
        conversation = await repo.get_or_create_conversation(
            session,
            tenant_id=brand.tenant_id,
            brand_id=brand.id,
            channel=domain.Channel.WHATSAPP,
            customer_id="+1",
        )

    async def one() -> bool:
        async with session_scope(sessionmaker) as session:
            row = await repo.insert_inbound(
                session, conversation=conversation, message=_inbound(brand, "dup")
            )
            await asyncio.sleep(0.05)
            return row is not None

    results = await asyncio.gather(*(one() for _ in range(4)))
    assert sorted(results) == [False, False, False, True]
