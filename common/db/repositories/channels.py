"""Channel connections (``channel_configs`` rows): a provider account → its brand, with its credentials.

Part of :mod:`common.db.repositories` (the caller owns the transaction; see there)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from common import domain
from common.crypto import CredentialCipher
from common.db.models import ChannelConfig
from common.db.repositories._shared import POPULATE_EXISTING

#: Meta products delivered through one app's webhook (``/webhooks/meta/{app_id}``).
META_CHANNELS = (domain.Channel.WHATSAPP.value, domain.Channel.INSTAGRAM.value)


def route_of(config: ChannelConfig, cipher: CredentialCipher) -> domain.ChannelRoute:
    """The connection as webhooks and senders use it, credentials decrypted (SecretStr values)."""
    return domain.ChannelRoute(
        brand_id=config.brand_id,
        enabled=config.enabled,
        settings=dict(config.settings or {}),
        id=config.id,
        tenant_id=config.tenant_id,
        channel=domain.Channel(config.channel),
        external_id=config.external_id,
        app_id=config.app_id,
        credentials=None if config.credentials is None else cipher.decrypt(config.credentials),
    )


async def insert_channel_config(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    channel: domain.Channel,
    external_id: str,
    settings: dict[str, Any],
    credentials: str | None,
    app_id: str | None,
    connection_id: uuid.UUID | None = None,
) -> ChannelConfig | None:
    """A new connection; None when the provider account is already connected (to any brand)."""
    stmt = (
        pg_insert(ChannelConfig)
        .values(
            id=connection_id or uuid.uuid4(),
            tenant_id=tenant_id,
            brand_id=brand_id,
            channel=channel.value,
            external_id=external_id,
            settings=settings,
            enabled=True,
            credentials=credentials,
            app_id=app_id,
        )
        .on_conflict_do_nothing(index_elements=[ChannelConfig.channel, ChannelConfig.external_id])
    )
    return (
        await session.scalars(stmt.returning(ChannelConfig), execution_options=POPULATE_EXISTING)
    ).one_or_none()


async def get_channel_config(
    session: AsyncSession, *, connection_id: uuid.UUID, tenant_id: uuid.UUID | None = None
) -> ChannelConfig | None:
    """One connection by id; with ``tenant_id``, None for a connection of another tenant."""
    stmt = select(ChannelConfig).where(ChannelConfig.id == connection_id)
    if tenant_id is not None:
        stmt = stmt.where(ChannelConfig.tenant_id == tenant_id)
    return (await session.scalars(stmt)).one_or_none()


async def list_channel_configs(
    session: AsyncSession, *, tenant_id: uuid.UUID, brand_id: uuid.UUID | None = None
) -> Sequence[ChannelConfig]:
    """The tenant's connections (of one brand when given), oldest first."""
    stmt = select(ChannelConfig).where(ChannelConfig.tenant_id == tenant_id)
    if brand_id is not None:
        stmt = stmt.where(ChannelConfig.brand_id == brand_id)
    return (await session.scalars(stmt.order_by(ChannelConfig.created_at, ChannelConfig.id))).all()


async def find_app_channel_configs(session: AsyncSession, *, app_id: str) -> Sequence[ChannelConfig]:
    """The enabled WhatsApp and Instagram connections that name Meta app ``app_id``."""
    stmt = select(ChannelConfig).where(
        ChannelConfig.app_id == app_id,
        ChannelConfig.channel.in_(META_CHANNELS),
        ChannelConfig.enabled.is_(True),
    )
    return (await session.scalars(stmt.order_by(ChannelConfig.id))).all()


async def encrypted_channel_configs(session: AsyncSession) -> Sequence[ChannelConfig]:
    """Every connection holding its own credentials, locked for update (``admin rotate-keys``)."""
    stmt = select(ChannelConfig).where(ChannelConfig.credentials.is_not(None)).with_for_update()
    return (await session.scalars(stmt.order_by(ChannelConfig.id))).all()


async def delete_channel_config(session: AsyncSession, *, connection_id: uuid.UUID) -> None:
    """Remove a connection (its conversations stay: they belong to the brand)."""
    await session.execute(delete(ChannelConfig).where(ChannelConfig.id == connection_id))


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
