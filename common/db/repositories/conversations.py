"""Conversations and their message log (inbound messages, replies), as pipeline, web chat and agents read it.

Part of :mod:`common.db.repositories` (the caller owns the transaction; see there)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy import text as sa_text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from common import domain
from common.db.models import Conversation, MessageLog
from common.db.repositories._shared import POPULATE_EXISTING
from common.errors import NotFound


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
    created = (
        await session.scalars(stmt.returning(Conversation), execution_options=POPULATE_EXISTING)
    ).one_or_none()
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
        sent_at=message.sent_at,
    )
    stmt = stmt.on_conflict_do_nothing(
        index_elements=[
            MessageLog.brand_id,
            MessageLog.channel,
            MessageLog.direction,
            MessageLog.provider_message_id,
        ]
    )
    return (
        await session.scalars(stmt.returning(MessageLog), execution_options=POPULATE_EXISTING)
    ).one_or_none()


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
    persona_version: int | None = None,
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
        persona_version=persona_version,
    )
    stmt = stmt.on_conflict_do_nothing(
        index_elements=[MessageLog.in_reply_to],
        index_where=sa_text("in_reply_to IS NOT NULL AND direction = 'outbound'"),
    )
    return (
        await session.scalars(stmt.returning(MessageLog), execution_options=POPULATE_EXISTING)
    ).one_or_none()


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
    return (await session.scalars(stmt, execution_options=POPULATE_EXISTING)).one_or_none()


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


async def last_inbound_at(session: AsyncSession, *, conversation_id: uuid.UUID) -> datetime | None:
    """When the customer last wrote in this conversation (the providers' windows start there): the
    provider's sending time where it gave one, never later than when the message reached us (a clock
    ahead of ours cannot stretch a window; ``LEAST`` ignores a missing ``sent_at``)."""
    started = func.least(MessageLog.sent_at, MessageLog.created_at)
    stmt = select(func.max(started)).where(
        MessageLog.conversation_id == conversation_id, MessageLog.direction == domain.Direction.INBOUND.value
    )
    latest: datetime | None = await session.scalar(stmt)
    return latest


async def set_message_text(session: AsyncSession, *, message_id: uuid.UUID, text: str) -> None:
    """Replace a logged message's text (a voice note's placeholder by its transcript)."""
    await session.execute(update(MessageLog).where(MessageLog.id == message_id).values(text=text))
