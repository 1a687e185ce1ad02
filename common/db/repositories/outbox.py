"""Outbox rows (``common.outbox`` writes and publishes them).

Part of :mod:`common.db.repositories` (the caller owns the transaction; see there)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from common.db.models import OutboxMessage
from common.db.repositories._shared import POPULATE_EXISTING


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
    return len((await session.scalars(stmt, execution_options=POPULATE_EXISTING)).all())
