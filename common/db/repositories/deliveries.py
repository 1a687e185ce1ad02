"""Delivery records: one per reply, claimed and leased by the dispatcher.

Part of :mod:`common.db.repositories` (the caller owns the transaction; see there)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import cast, func, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from common import domain
from common.db.models import Delivery
from common.db.repositories._shared import POPULATE_EXISTING


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
    return (
        await session.scalars(stmt.returning(Delivery), execution_options=POPULATE_EXISTING)
    ).one_or_none()


async def get_delivery(session: AsyncSession, *, message_id: uuid.UUID) -> Delivery | None:
    """The delivery record of an outbound message, if any."""
    stmt = select(Delivery).where(Delivery.message_id == message_id)
    return (await session.scalars(stmt, execution_options=POPULATE_EXISTING)).one_or_none()


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


async def record_receipt(
    session: AsyncSession,
    *,
    brand_id: uuid.UUID,
    channel: domain.Channel,
    provider_message_id: str,
    receipt: str,
    error: str | None = None,
    at: datetime | None = None,
) -> bool:
    """Apply a provider's receipt to the delivery of one of the brand's messages; False when none matches.

    Receipts arrive out of order and repeated: ``sent`` < ``delivered`` < ``read`` never goes back, and
    ``failed`` (with the provider's reason) wins over any of them. Only the brand's own deliveries can
    match (the webhook already proved which connection, and so which brand, it speaks for).
    """
    stmt = (
        select(Delivery)
        .where(
            Delivery.brand_id == brand_id,
            Delivery.channel == channel.value,
            or_(
                Delivery.provider_message_id == provider_message_id,
                # jsonb "?": the id is one of the string elements (a later part of a split reply)
                func.jsonb_exists(cast(Delivery.provider_message_ids, JSONB), provider_message_id),
            ),
        )
        .with_for_update()
    )
    row = (await session.scalars(stmt.limit(1))).first()
    if row is None:
        return False
    current = RECEIPT_RANK.get(row.receipt or "", 0)
    if receipt == "failed" or (row.receipt != "failed" and RECEIPT_RANK[receipt] > current):
        row.receipt, row.receipt_at = receipt, at or datetime.now(UTC)
        row.receipt_error = error if receipt == "failed" else None
        await session.flush()
    return True


async def deliveries_for(session: AsyncSession, *, message_ids: list[uuid.UUID]) -> dict[uuid.UUID, Delivery]:
    """The delivery records of some messages, by message id."""
    if not message_ids:
        return {}
    rows = await session.scalars(select(Delivery).where(Delivery.message_id.in_(message_ids)))
    return {r.message_id: r for r in rows}


#: Order of the receipts that can only move forward.
RECEIPT_RANK = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}
