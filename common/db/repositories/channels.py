"""Channel configurations: a provider account → its brand.

Part of :mod:`common.db.repositories` (the caller owns the transaction; see there)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from common import domain
from common.db.models import ChannelConfig
from common.db.repositories._shared import POPULATE_EXISTING


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
    return (await session.scalars(stmt.returning(ChannelConfig), execution_options=POPULATE_EXISTING)).one()


async def find_channel_config(
    session: AsyncSession, *, channel: domain.Channel, external_id: str
) -> ChannelConfig | None:
    """The route for a provider account, enabled or not (the caller decides what disabled means)."""
    stmt = select(ChannelConfig).where(
        ChannelConfig.channel == channel.value, ChannelConfig.external_id == external_id
    )
    return (await session.scalars(stmt)).one_or_none()


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
