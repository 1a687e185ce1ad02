"""Data access: async functions with keyword-only arguments.

The caller owns the transaction: these functions ``flush`` (so ids and server defaults are known) and never
``commit``. Inserts that race (conversations, inbound messages) use ``INSERT ... ON CONFLICT`` so concurrent
callers settle in the database, not in Python.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy import text as sa_text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from common import domain
from common.db.models import (
    ActionLog,
    AutomationRule,
    Brand,
    ChannelConfig,
    Conversation,
    Delivery,
    IngestionJob,
    KnowledgeChunk,
    KnowledgeSource,
    MessageLog,
    OutboxMessage,
    PersonaProfile,
    Tenant,
)
from common.errors import NotFound
from common.schemas import ChunkRecord

# Upserts return ORM objects; refresh any copy already in the identity map with the stored values.
_POPULATE = {"populate_existing": True}


# --- tenants and brands ---------------------------------------------------------------------------


async def upsert_tenant(
    session: AsyncSession, *, tenant_id: uuid.UUID, slug: str, name: str
) -> domain.Tenant:
    """Create the tenant or update its slug and name."""
    stmt = pg_insert(Tenant).values(id=tenant_id, slug=slug, name=name)
    stmt = stmt.on_conflict_do_update(index_elements=[Tenant.id], set_={"slug": slug, "name": name})
    row = (await session.scalars(stmt.returning(Tenant), execution_options=_POPULATE)).one()
    return domain.Tenant(id=row.id, slug=row.slug, name=row.name)


async def upsert_brand(
    session: AsyncSession,
    *,
    brand_id: uuid.UUID,
    tenant_id: uuid.UUID,
    slug: str,
    name: str,
    persona: domain.Persona,
) -> domain.BrandProfile:
    """Create or update a brand and its persona."""
    stmt = pg_insert(Brand).values(id=brand_id, tenant_id=tenant_id, slug=slug, name=name)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Brand.id], set_={"tenant_id": tenant_id, "slug": slug, "name": name}
    )
    brand = (await session.scalars(stmt.returning(Brand), execution_options=_POPULATE)).one()

    values = _persona_values(persona)
    persona_stmt = pg_insert(PersonaProfile).values(id=uuid.uuid4(), brand_id=brand_id, **values)
    persona_stmt = persona_stmt.on_conflict_do_update(
        index_elements=[PersonaProfile.brand_id], set_={**values, "updated_at": func.now()}
    )
    profile = (
        await session.scalars(persona_stmt.returning(PersonaProfile), execution_options=_POPULATE)
    ).one()
    return _brand_profile(brand, profile)


def unknown_brand(brand_id: uuid.UUID) -> NotFound:
    """The one 404 for a brand id that names no brand (the API's ``not_found`` with the id)."""
    return NotFound("unknown brand", details={"brand_id": str(brand_id)})


async def require_brand(session: AsyncSession, *, brand_id: uuid.UUID) -> domain.BrandProfile:
    """The brand with its persona; :func:`unknown_brand` when there is none."""
    brand = await get_brand_profile(session, brand_id=brand_id)
    if brand is None:
        raise unknown_brand(brand_id)
    return brand


async def get_brand_profile(session: AsyncSession, *, brand_id: uuid.UUID) -> domain.BrandProfile | None:
    """The brand with its persona (the default persona when none is stored), or None."""
    stmt = (
        select(Brand, PersonaProfile)
        .outerjoin(PersonaProfile, PersonaProfile.brand_id == Brand.id)
        .where(Brand.id == brand_id)
    )
    found = (await session.execute(stmt)).one_or_none()
    if found is None:
        return None
    brand, profile = found.tuple()
    return _brand_profile(brand, profile)


def _persona_values(persona: domain.Persona) -> dict[str, Any]:
    return {
        "tone": persona.tone,
        "languages": list(persona.languages),
        "greeting": persona.greeting,
        "sign_off": persona.sign_off,
        "avoid_topics": list(persona.avoid_topics),
        "escalation_message": persona.escalation_message,
        "fallback_message": persona.fallback_message,
    }


def _brand_profile(brand: Brand, profile: PersonaProfile | None) -> domain.BrandProfile:
    persona = domain.Persona()
    if profile is not None:
        persona = domain.Persona(
            tone=profile.tone,
            languages=tuple(profile.languages),
            greeting=profile.greeting,
            sign_off=profile.sign_off,
            avoid_topics=tuple(profile.avoid_topics),
            escalation_message=profile.escalation_message,
            fallback_message=profile.fallback_message,
        )
    return domain.BrandProfile(
        id=brand.id, tenant_id=brand.tenant_id, slug=brand.slug, name=brand.name, persona=persona
    )


# --- channels -------------------------------------------------------------------------------------


async def upsert_channel_config(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    channel: domain.Channel,
    external_id: str,
    settings: dict[str, Any],
    enabled: bool = True,
) -> ChannelConfig:
    """Route ``(channel, external_id)`` to a brand, replacing any earlier route for that account."""
    values = {"tenant_id": tenant_id, "brand_id": brand_id, "settings": settings, "enabled": enabled}
    stmt = pg_insert(ChannelConfig).values(
        id=uuid.uuid4(), channel=channel.value, external_id=external_id, **values
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[ChannelConfig.channel, ChannelConfig.external_id], set_=values
    )
    return (await session.scalars(stmt.returning(ChannelConfig), execution_options=_POPULATE)).one()


async def find_channel_config(
    session: AsyncSession, *, channel: domain.Channel, external_id: str
) -> ChannelConfig | None:
    """The route for a provider account, enabled or not (the caller decides what disabled means)."""
    stmt = select(ChannelConfig).where(
        ChannelConfig.channel == channel.value, ChannelConfig.external_id == external_id
    )
    return (await session.scalars(stmt)).one_or_none()


# --- conversations and messages -------------------------------------------------------------------


async def get_or_create_conversation(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    channel: domain.Channel,
    customer_id: str,
) -> Conversation:
    """The conversation for ``(brand, channel, customer)``, created if missing; safe under concurrency.

    A concurrent creator makes our INSERT wait for its commit and then do nothing; the SELECT that follows
    (a new statement, so a new READ COMMITTED snapshot) sees its row.
    """
    stmt = pg_insert(Conversation).values(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        brand_id=brand_id,
        channel=channel.value,
        customer_id=customer_id,
        state=domain.ConversationState.BOT.value,
    )
    stmt = stmt.on_conflict_do_nothing(
        index_elements=[Conversation.brand_id, Conversation.channel, Conversation.customer_id]
    )
    created = (await session.scalars(stmt.returning(Conversation), execution_options=_POPULATE)).one_or_none()
    if created is not None:
        return created
    existing = select(Conversation).where(
        Conversation.brand_id == brand_id,
        Conversation.channel == channel.value,
        Conversation.customer_id == customer_id,
    )
    return (await session.scalars(existing)).one()


async def find_inbound(
    session: AsyncSession, *, brand_id: uuid.UUID, channel: domain.Channel, provider_message_id: str
) -> MessageLog | None:
    """The logged inbound message with this provider id, if any."""
    stmt = select(MessageLog).where(
        MessageLog.brand_id == brand_id,
        MessageLog.channel == channel.value,
        MessageLog.direction == domain.Direction.INBOUND.value,
        MessageLog.provider_message_id == provider_message_id,
    )
    return (await session.scalars(stmt)).one_or_none()


async def find_reply_to(session: AsyncSession, *, inbound_id: uuid.UUID) -> MessageLog | None:
    """The first outbound message answering the inbound message ``inbound_id``, if any."""
    stmt = (
        select(MessageLog)
        .where(
            MessageLog.in_reply_to == inbound_id,
            MessageLog.direction == domain.Direction.OUTBOUND.value,
        )
        .order_by(MessageLog.created_at, MessageLog.id)
        .limit(1)
    )
    return (await session.scalars(stmt)).first()


async def insert_inbound(
    session: AsyncSession, *, conversation: Conversation, message: domain.InboundMessage
) -> MessageLog | None:
    """Log an inbound message; None when its idempotency key is already stored (a redelivery).

    ``ON CONFLICT DO NOTHING RETURNING`` makes concurrent duplicates atomic: exactly one caller gets a row.
    """
    stmt = pg_insert(MessageLog).values(
        id=uuid.uuid4(),
        conversation_id=conversation.id,
        tenant_id=conversation.tenant_id,
        brand_id=message.brand_id,
        channel=message.channel.value,
        direction=domain.Direction.INBOUND.value,
        provider_message_id=message.provider_message_id,
        text=message.text,
        citations=[],
        guardrails=[],
    )
    stmt = stmt.on_conflict_do_nothing(
        index_elements=[
            MessageLog.brand_id,
            MessageLog.channel,
            MessageLog.direction,
            MessageLog.provider_message_id,
        ]
    )
    return (await session.scalars(stmt.returning(MessageLog), execution_options=_POPULATE)).one_or_none()


async def insert_outbound(
    session: AsyncSession,
    *,
    conversation: Conversation,
    in_reply_to: uuid.UUID | None,
    text: str,
    citations: list[dict[str, Any]],
    guardrails: list[dict[str, Any]],
    prompt: list[dict[str, Any]] | None,
    llm_usage: dict[str, Any] | None,
    provider_message_id: str | None = None,
) -> MessageLog | None:
    """Log a reply; ``prompt`` and ``llm_usage`` are kept for audit.

    None when ``in_reply_to`` already has a reply (another worker answered it first): the unique partial
    index ``uq_message_logs_reply`` makes that check atomic.
    """
    stmt = pg_insert(MessageLog).values(
        id=uuid.uuid4(),
        conversation_id=conversation.id,
        tenant_id=conversation.tenant_id,
        brand_id=conversation.brand_id,
        channel=conversation.channel,
        direction=domain.Direction.OUTBOUND.value,
        provider_message_id=provider_message_id,
        in_reply_to=in_reply_to,
        text=text,
        citations=citations,
        guardrails=guardrails,
        prompt=prompt,
        llm_usage=llm_usage,
    )
    stmt = stmt.on_conflict_do_nothing(
        index_elements=[MessageLog.in_reply_to],
        index_where=sa_text("in_reply_to IS NOT NULL AND direction = 'outbound'"),
    )
    return (await session.scalars(stmt.returning(MessageLog), execution_options=_POPULATE)).one_or_none()


async def get_conversation(session: AsyncSession, *, conversation_id: uuid.UUID) -> Conversation:
    """A conversation by id; raises :class:`common.errors.NotFound` when it does not exist."""
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        raise NotFound("unknown conversation", details={"conversation_id": str(conversation_id)})
    return conversation


async def get_message(session: AsyncSession, *, message_id: uuid.UUID) -> MessageLog | None:
    """One logged message by id."""
    return await session.get(MessageLog, message_id)


async def set_conversation_state(
    session: AsyncSession, *, conversation_id: uuid.UUID, state: domain.ConversationState
) -> Conversation | None:
    """Move a conversation to ``state`` (bot, handoff, closed); None when it does not exist."""
    stmt = (
        update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(state=state.value, updated_at=func.now())
        .returning(Conversation)
    )
    return (await session.scalars(stmt, execution_options=_POPULATE)).one_or_none()


async def get_conversation_with_messages(
    session: AsyncSession, *, conversation_id: uuid.UUID
) -> tuple[Conversation, list[MessageLog]] | None:
    """The conversation and all its messages in chronological order, or None."""
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        return None
    stmt = (
        select(MessageLog)
        .where(MessageLog.conversation_id == conversation_id)
        .order_by(MessageLog.created_at, MessageLog.id)
    )
    return conversation, list(await session.scalars(stmt))


async def recent_messages(
    session: AsyncSession, *, conversation_id: uuid.UUID, limit: int
) -> list[MessageLog]:
    """The last ``limit`` messages of a conversation, oldest first (ready to become chat history)."""
    stmt = (
        select(MessageLog)
        .where(MessageLog.conversation_id == conversation_id)
        .order_by(MessageLog.created_at.desc(), MessageLog.id.desc())
        .limit(limit)
    )
    newest_first = list(await session.scalars(stmt))
    newest_first.reverse()
    return newest_first


# --- outbox ---------------------------------------------------------------------------------------


async def add_outbox(session: AsyncSession, *, stream: str, payload: dict[str, Any]) -> OutboxMessage:
    """Queue an event in the same transaction as the change it announces."""
    row = OutboxMessage(stream=stream, payload=payload)
    session.add(row)
    await session.flush()
    return row


async def unpublished_outbox(session: AsyncSession, *, limit: int) -> list[OutboxMessage]:
    """Oldest unpublished events, row-locked; rows locked by another relay are skipped, not waited for."""
    stmt = (
        select(OutboxMessage)
        .where(OutboxMessage.published_at.is_(None))
        .order_by(OutboxMessage.created_at, OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(await session.scalars(stmt))


async def mark_outbox_published(session: AsyncSession, *, outbox_ids: Sequence[uuid.UUID]) -> int:
    """Stamp events as published; returns how many rows changed."""
    if not outbox_ids:
        return 0
    stmt = (
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(list(outbox_ids)), OutboxMessage.published_at.is_(None))
        .values(published_at=func.now())
        .returning(OutboxMessage)  # refreshes rows already loaded in this session
    )
    return len((await session.scalars(stmt, execution_options=_POPULATE)).all())


# --- knowledge ------------------------------------------------------------------------------------


async def upsert_knowledge_source(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    uri: str,
    title: str,
    content_type: str,
    content_hash: str,
) -> KnowledgeSource:
    """Create or update the source ``uri`` of a brand."""
    values = {"title": title, "content_type": content_type, "content_hash": content_hash}
    stmt = pg_insert(KnowledgeSource).values(
        id=uuid.uuid4(), tenant_id=tenant_id, brand_id=brand_id, uri=uri, **values
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[KnowledgeSource.brand_id, KnowledgeSource.uri],
        set_={**values, "updated_at": func.now()},
    )
    return (await session.scalars(stmt.returning(KnowledgeSource), execution_options=_POPULATE)).one()


async def sync_source_chunks(
    session: AsyncSession, *, source: KnowledgeSource, chunks: list[ChunkRecord]
) -> tuple[list[str], list[str], list[str]]:
    """Make the stored chunks of ``source`` equal ``chunks``, comparing by chunk id.

    Returns ``(new_ids, unchanged_ids, deleted_ids)``: the first two in ``chunks`` order, the last sorted.
    Chunk ids are content-derived, so an unchanged id means unchanged text; only its position is refreshed.
    """
    existing_stmt = select(KnowledgeChunk.id).where(KnowledgeChunk.source_id == source.id)
    existing = set(await session.scalars(existing_stmt))
    wanted = {chunk.chunk_id: chunk for chunk in chunks}  # a repeated id is kept once

    new_ids = [cid for cid in wanted if cid not in existing]
    unchanged_ids = [cid for cid in wanted if cid in existing]
    deleted_ids = sorted(existing - wanted.keys())

    if deleted_ids:
        await session.execute(delete(KnowledgeChunk).where(KnowledgeChunk.id.in_(deleted_ids)))
    if wanted:
        rows = [_chunk_values(source, chunk) for chunk in wanted.values()]
        stmt = pg_insert(KnowledgeChunk).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=[KnowledgeChunk.id],
            set_={
                "source_id": stmt.excluded.source_id,
                "ordinal": stmt.excluded.ordinal,
                "heading_path": stmt.excluded.heading_path,
                "text": stmt.excluded.text,
                "content_hash": stmt.excluded.content_hash,
            },
        )
        await session.execute(stmt)
    return new_ids, unchanged_ids, deleted_ids


def _chunk_values(source: KnowledgeSource, chunk: ChunkRecord) -> dict[str, Any]:
    return {
        "id": chunk.chunk_id,
        "source_id": source.id,
        "tenant_id": source.tenant_id,
        "brand_id": source.brand_id,
        "ordinal": chunk.ordinal,
        "heading_path": chunk.heading_path,
        "text": chunk.text,
        "content_hash": chunk.content_hash,
    }


async def list_chunks(
    session: AsyncSession, *, tenant_id: uuid.UUID, brand_id: uuid.UUID
) -> list[KnowledgeChunk]:
    """Every stored chunk of a brand, grouped by source in reading order."""
    stmt = (
        select(KnowledgeChunk)
        .where(KnowledgeChunk.tenant_id == tenant_id, KnowledgeChunk.brand_id == brand_id)
        .order_by(KnowledgeChunk.source_id, KnowledgeChunk.ordinal)
    )
    return list(await session.scalars(stmt))


# --- ingestion jobs -------------------------------------------------------------------------------


async def create_ingestion_job(
    session: AsyncSession, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, source: str
) -> IngestionJob:
    """A new job in status ``queued``."""
    job = IngestionJob(tenant_id=tenant_id, brand_id=brand_id, source=source, status="queued", counts={})
    session.add(job)
    await session.flush()
    return job


async def update_ingestion_job(
    session: AsyncSession,
    *,
    job_id: uuid.UUID,
    status: str | None = None,
    counts: dict[str, Any] | None = None,
    error: str | None = None,
    increment_attempts: bool = False,
) -> IngestionJob | None:
    """Change the given fields of a job (None leaves a field alone); None when the job does not exist."""
    job = await session.get(IngestionJob, job_id)
    if job is None:
        return None
    if status is not None:
        job.status = status
    if counts is not None:
        job.counts = counts
    if error is not None:
        job.error = error
    if increment_attempts:
        job.attempts += 1
    await session.flush()
    return job


async def get_ingestion_job(
    session: AsyncSession, *, job_id: uuid.UUID, brand_id: uuid.UUID | None = None
) -> IngestionJob | None:
    """The job, or None; pass ``brand_id`` to refuse another brand's job."""
    stmt = select(IngestionJob).where(IngestionJob.id == job_id)
    if brand_id is not None:
        stmt = stmt.where(IngestionJob.brand_id == brand_id)
    return (await session.scalars(stmt)).one_or_none()


# --- web chat -------------------------------------------------------------------------------------


async def find_conversation(
    session: AsyncSession, *, brand_id: uuid.UUID, channel: domain.Channel, customer_id: str
) -> Conversation | None:
    """The conversation of ``(brand, channel, customer)`` if it exists; never creates one."""
    stmt = select(Conversation).where(
        Conversation.brand_id == brand_id,
        Conversation.channel == channel.value,
        Conversation.customer_id == customer_id,
    )
    return (await session.scalars(stmt)).one_or_none()


async def messages_after(
    session: AsyncSession,
    *,
    conversation_id: uuid.UUID,
    after_message_id: uuid.UUID,
    direction: domain.Direction,
    limit: int,
) -> list[MessageLog]:
    """Messages of ``direction`` logged after ``after_message_id`` in the same conversation, oldest first.

    An anchor that is not a message of this conversation yields nothing (the caller cannot page into
    another conversation through it).
    """
    from sqlalchemy import tuple_

    anchor = await session.get(MessageLog, after_message_id)
    if anchor is None or anchor.conversation_id != conversation_id:
        return []
    after = tuple_(MessageLog.created_at, MessageLog.id) > tuple_(anchor.created_at, anchor.id)
    stmt = (
        select(MessageLog)
        .where(
            MessageLog.conversation_id == conversation_id,
            MessageLog.direction == direction.value,
            after,
        )
        .order_by(MessageLog.created_at, MessageLog.id)
        .limit(limit)
    )
    return list(await session.scalars(stmt))


# --- outbound delivery ----------------------------------------------------------------------------


async def find_brand_channel_config(
    session: AsyncSession, *, brand_id: uuid.UUID, channel: domain.Channel
) -> ChannelConfig | None:
    """The brand's enabled account on ``channel`` (the one replies are sent from), or None.

    A brand with several enabled accounts on one channel gets the first by ``external_id`` (deterministic).
    """
    stmt = (
        select(ChannelConfig)
        .where(
            ChannelConfig.brand_id == brand_id,
            ChannelConfig.channel == channel.value,
            ChannelConfig.enabled.is_(True),
        )
        .order_by(ChannelConfig.external_id)
        .limit(1)
    )
    return (await session.scalars(stmt)).first()


async def claim_delivery(
    session: AsyncSession,
    *,
    message_id: uuid.UUID,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    conversation_id: uuid.UUID,
    channel: domain.Channel,
    lease_s: float,
) -> Delivery | None:
    """Reserve the delivery of ``message_id`` for ``lease_s`` seconds; None when it is not ours to send.

    One atomic statement: the row is created ``pending``, or an existing ``pending`` row whose lease has
    expired is taken over (``attempts`` + 1). A terminal row (sent, failed, skipped) or one leased by a
    live dispatcher returns None. ``sending_since`` is returned as it was: set, it means the last holder
    crashed while a provider call may have been in flight.
    """
    lease_end = func.now() + func.make_interval(0, 0, 0, 0, 0, 0, lease_s)
    stmt = pg_insert(Delivery).values(
        id=uuid.uuid4(),
        message_id=message_id,
        tenant_id=tenant_id,
        brand_id=brand_id,
        conversation_id=conversation_id,
        channel=channel.value,
        status="pending",
        provider_message_ids=[],
        attempts=1,
        claimed_until=lease_end,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[Delivery.message_id],
        set_={"attempts": Delivery.attempts + 1, "claimed_until": lease_end, "updated_at": func.now()},
        where=(Delivery.status == "pending")
        & (Delivery.claimed_until.is_(None) | (Delivery.claimed_until < func.now())),
    )
    return (await session.scalars(stmt.returning(Delivery), execution_options=_POPULATE)).one_or_none()


async def get_delivery(session: AsyncSession, *, message_id: uuid.UUID) -> Delivery | None:
    """The delivery record of an outbound message, if any."""
    stmt = select(Delivery).where(Delivery.message_id == message_id)
    return (await session.scalars(stmt, execution_options=_POPULATE)).one_or_none()


async def mark_delivery_sending(session: AsyncSession, *, message_id: uuid.UUID) -> None:
    """Note that a provider call is about to start (cleared when its outcome is recorded)."""
    stmt = (
        update(Delivery)
        .where(Delivery.message_id == message_id)
        .values(sending_since=func.now(), updated_at=func.now())
    )
    await session.execute(stmt)


async def release_delivery(
    session: AsyncSession,
    *,
    message_id: uuid.UUID,
    parts_sent: int,
    provider_message_ids: list[str],
    error: str,
) -> None:
    """Give a ``pending`` delivery back after a retryable failure, keeping the parts already sent."""
    stmt = (
        update(Delivery)
        .where(Delivery.message_id == message_id, Delivery.status == "pending")
        .values(
            parts_sent=parts_sent,
            provider_message_ids=provider_message_ids,
            last_error=error,
            claimed_until=None,
            sending_since=None,
            updated_at=func.now(),
        )
    )
    await session.execute(stmt)


async def finish_delivery(
    session: AsyncSession,
    *,
    message_id: uuid.UUID,
    status: str,
    parts_sent: int | None = None,
    provider_message_ids: list[str] | None = None,
    error: str | None = None,
) -> None:
    """Record the final outcome (``sent``, ``failed`` or ``skipped``) of a pending delivery."""
    values: dict[str, Any] = {
        "status": status,
        "claimed_until": None,
        "sending_since": None,
        "updated_at": func.now(),
    }
    if status == "sent":
        values["sent_at"] = func.now()
    if parts_sent is not None:
        values["parts_sent"] = parts_sent
    if provider_message_ids is not None:
        values["provider_message_ids"] = provider_message_ids
        values["provider_message_id"] = provider_message_ids[0] if provider_message_ids else None
    if error is not None:
        values["last_error"] = error
    stmt = (
        update(Delivery)
        .where(Delivery.message_id == message_id, Delivery.status == "pending")
        .values(**values)
    )
    await session.execute(stmt)


# --- escalation and actions -----------------------------------------------------------------------


async def list_automation_rules(session: AsyncSession, *, brand_id: uuid.UUID) -> list[AutomationRule]:
    """The brand's enabled automation rules, lowest ``priority`` first."""
    stmt = (
        select(AutomationRule)
        .where(AutomationRule.brand_id == brand_id, AutomationRule.enabled.is_(True))
        .order_by(AutomationRule.priority, AutomationRule.name)
    )
    return list(await session.scalars(stmt))


async def add_automation_rule(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    name: str,
    kind: str,
    config: dict[str, Any],
    priority: int = 100,
) -> AutomationRule:
    """Store a brand rule (``kind`` ``escalate`` or ``actions``; see ``common.conversation.escalation``)."""
    rule = AutomationRule(
        tenant_id=tenant_id, brand_id=brand_id, name=name, kind=kind, config=config, priority=priority
    )
    session.add(rule)
    await session.flush()
    return rule


async def list_conversations(
    session: AsyncSession, *, brand_id: uuid.UUID, state: domain.ConversationState, limit: int
) -> list[Conversation]:
    """A brand's conversations in ``state``, the longest waiting first."""
    stmt = (
        select(Conversation)
        .where(Conversation.brand_id == brand_id, Conversation.state == state.value)
        .order_by(Conversation.updated_at, Conversation.id)
        .limit(limit)
    )
    return list(await session.scalars(stmt))


async def insert_action_log(
    session: AsyncSession,
    *,
    conversation: Conversation,
    message_key: uuid.UUID,
    name: str,
    arguments: dict[str, Any],
    status: str,
    reason: str = "",
    result: dict[str, Any] | None = None,
) -> ActionLog | None:
    """Record a proposed action; None when the message ``message_key`` already has an action of that name.

    The unique ``(message_key, name)`` key makes the check atomic, so racing workers run it once.
    """
    stmt = pg_insert(ActionLog).values(
        id=uuid.uuid4(),
        tenant_id=conversation.tenant_id,
        brand_id=conversation.brand_id,
        conversation_id=conversation.id,
        message_key=message_key,
        name=name,
        arguments=arguments,
        status=status,
        reason=reason,
        result=result,
    )
    stmt = stmt.on_conflict_do_nothing(index_elements=[ActionLog.message_key, ActionLog.name])
    return (await session.scalars(stmt.returning(ActionLog), execution_options=_POPULATE)).one_or_none()


async def finish_action_log(
    session: AsyncSession,
    *,
    action_id: uuid.UUID,
    status: str,
    reason: str = "",
    result: dict[str, Any] | None = None,
) -> ActionLog | None:
    """Set an action's outcome; None when it does not exist."""
    stmt = (
        update(ActionLog)
        .where(ActionLog.id == action_id)
        .values(status=status, reason=reason, result=result, updated_at=func.now())
        .returning(ActionLog)
    )
    return (await session.scalars(stmt, execution_options=_POPULATE)).one_or_none()


async def pending_action(session: AsyncSession, *, conversation_id: uuid.UUID) -> ActionLog | None:
    """The newest action of a conversation waiting for the customer's confirmation, if any."""
    stmt = (
        select(ActionLog)
        .where(ActionLog.conversation_id == conversation_id, ActionLog.status == "pending_confirmation")
        .order_by(ActionLog.created_at.desc(), ActionLog.id.desc())
        .limit(1)
    )
    return (await session.scalars(stmt)).first()


async def claim_pending_action(
    session: AsyncSession, *, action_id: uuid.UUID, status: str
) -> ActionLog | None:
    """Move a pending action to ``status`` (running / declined); None when another caller got it first."""
    stmt = (
        update(ActionLog)
        .where(ActionLog.id == action_id, ActionLog.status == "pending_confirmation")
        .values(status=status, updated_at=func.now())
        .returning(ActionLog)
    )
    return (await session.scalars(stmt, execution_options=_POPULATE)).one_or_none()


async def list_action_logs(session: AsyncSession, *, conversation_id: uuid.UUID) -> list[ActionLog]:
    """Every action of a conversation, oldest first."""
    stmt = (
        select(ActionLog)
        .where(ActionLog.conversation_id == conversation_id)
        .order_by(ActionLog.created_at, ActionLog.id)
    )
    return list(await session.scalars(stmt))
