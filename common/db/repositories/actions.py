"""The action log: each action proposed, confirmed, run, and its result.

Part of :mod:`common.db.repositories` (the caller owns the transaction; see there)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from common.db.models import ActionLog, Conversation
from common.db.repositories._shared import POPULATE_EXISTING


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
    return (
        await session.scalars(stmt.returning(ActionLog), execution_options=POPULATE_EXISTING)
    ).one_or_none()


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
    return (await session.scalars(stmt, execution_options=POPULATE_EXISTING)).one_or_none()


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
    return (await session.scalars(stmt, execution_options=POPULATE_EXISTING)).one_or_none()


async def list_action_logs(session: AsyncSession, *, conversation_id: uuid.UUID) -> list[ActionLog]:
    """Every action of a conversation, oldest first."""
    stmt = (
        select(ActionLog)
        .where(ActionLog.conversation_id == conversation_id)
        .order_by(ActionLog.created_at, ActionLog.id)
    )
    return list(await session.scalars(stmt))
