"""Intake: make an inbound message durable and queue it for drafting (what webhooks and web chat wait for).

:meth:`Intake.accept` commits the inbound message with an outbox row for the ``inbound`` stream *before*
the provider gets its 200; the inbound worker then has it drafted and stored
(:meth:`common.conversation.orchestrator.MessageOrchestrator.process_stored`). A redelivery of the same
provider message id is recognised atomically (a unique key) and queues nothing. The gateway runs an
:class:`Intake` in its own process; the orchestrator holds one for the in-process wiring.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common import metrics, outbox
from common.config import Settings
from common.crypto import CredentialCipher
from common.db import repositories as repo
from common.domain import Accepted, BrandProfile, Channel, ChannelRoute, InboundMessage
from common.errors import PayloadTooLarge, StreamUnavailable
from common.observability import carrier, stage
from common.outbox import OutboxPublisher
from common.schemas import InboundQueued, OutboundPayload
from common.streams import INBOUND_STREAM
from common.ttl_cache import TTLCache


class Intake:
    """Stores and queues inbound messages; routes provider accounts to brands (both cached briefly)."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        outbox: OutboxPublisher,
        publish_after_ack: bool = False,
    ) -> None:
        """``publish_after_ack``: :meth:`accept` returns once the message is committed and queues it on
        the stream in the background (the gateway's intake: the XADD and the outbox update leave the
        webhook's acknowledgement path; if the process dies first, the outbox relay publishes it)."""
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._outbox = outbox
        self._publish_after_ack = publish_after_ack
        self._pending_publishes: set[asyncio.Task[None]] = set()
        ttl = settings.channels.route_cache_s
        self._intake_brands: TTLCache[uuid.UUID, BrandProfile | None] = TTLCache(ttl)
        self._routes: TTLCache[tuple[Channel, str], ChannelRoute | None] = TTLCache(ttl)
        self._connections: TTLCache[uuid.UUID, ChannelRoute | None] = TTLCache(ttl)
        self._apps: TTLCache[str, tuple[ChannelRoute, ...]] = TTLCache(ttl)
        self._cipher = CredentialCipher.from_settings(settings.secrets)

    async def accept(self, message: InboundMessage) -> Accepted:
        """Make an inbound message durable and queue it for :meth:`process_stored` (webhook path).

        Returns once the message is committed, so a webhook can acknowledge it; a redelivery of the same
        provider message id is recognised atomically and queues nothing.
        """
        check_size(self._settings, message)
        with stage("orchestrator.accept", channel=message.channel.value, brand_id=message.brand_id) as span:
            async with self._sessionmaker() as session:
                brand = await self._intake_brand(session, message.brand_id)
                conversation = await conversation_for(session, brand, message)
                inbound = await repo.insert_inbound(session, conversation=conversation, message=message)
                if inbound is None:
                    await session.rollback()
                    existing = await repo.find_inbound(
                        session,
                        brand_id=message.brand_id,
                        channel=message.channel,
                        provider_message_id=message.provider_message_id,
                    )
                    if existing is None:  # pragma: no cover - the unique key said it exists
                        raise StreamUnavailable("inbound message vanished during deduplication; retry")
                    span.set_attribute("duplicate", True)
                    return Accepted(existing.id, existing.conversation_id, duplicate=True)
                if message.media is not None:
                    # Only recorded here: the worker fetches it, so the acknowledgement never waits on it.
                    await repo.insert_media(session, message=inbound, media=message.media)
                # The worker continues this trace from the queued entry (through outbox and relay too).
                queued = InboundQueued(inbound_id=inbound.id, brand_id=brand.id, trace=carrier())
                payload = stream_payload(queued)
                entry = await outbox.add(session, stream=INBOUND_STREAM, payload=payload)
                await session.commit()
                accepted = Accepted(inbound.id, conversation.id, duplicate=False)
            span.set_attribute("inbound_id", str(inbound.id))
            count_inbound(message)
            if self._publish_after_ack:
                task = asyncio.create_task(self._outbox.publish(entry))
                self._pending_publishes.add(task)  # held until done: the loop keeps only weak references
                task.add_done_callback(self._pending_publishes.discard)
            else:
                await self._outbox.publish(entry)
            return accepted

    async def flush_publishes(self) -> None:
        """Wait for the stream publishes that :meth:`accept` left running (``publish_after_ack``)."""
        while self._pending_publishes:
            await asyncio.gather(*list(self._pending_publishes), return_exceptions=True)

    async def channel_route(self, channel: Channel, external_id: str) -> ChannelRoute | None:
        """The brand a provider account routes to (enabled or not), cached ``route_cache_s`` seconds."""

        async def load() -> ChannelRoute | None:
            async with self._sessionmaker() as session:
                config = await repo.find_channel_config(session, channel=channel, external_id=external_id)
            return None if config is None else repo.route_of(config, self._cipher)

        return await self._routes.get_or_load((channel, external_id), load)

    async def connection_route(self, connection_id: uuid.UUID) -> ChannelRoute | None:
        """A connection by id (its own webhook URL names it), enabled or not; cached as above."""

        async def load() -> ChannelRoute | None:
            async with self._sessionmaker() as session:
                config = await repo.get_channel_config(session, connection_id=connection_id)
            return None if config is None else repo.route_of(config, self._cipher)

        return await self._connections.get_or_load(connection_id, load)

    async def app_routes(self, app_id: str) -> tuple[ChannelRoute, ...]:
        """The enabled WhatsApp and Instagram connections delivered by one Meta app; cached as above."""

        async def load() -> tuple[ChannelRoute, ...]:
            async with self._sessionmaker() as session:
                configs = await repo.find_app_channel_configs(session, app_id=app_id)
            return tuple(repo.route_of(c, self._cipher) for c in configs)

        return await self._apps.get_or_load(app_id, load)

    async def forget_routes(self) -> None:
        """Drop this process's cached routes (after a connection changed here; others follow in the TTL)."""
        for cache in (self._routes, self._connections, self._apps):
            cache.clear()

    async def _intake_brand(self, session: AsyncSession, brand_id: uuid.UUID) -> BrandProfile:
        # accept only needs the brand's ids, which never change; the persona is read fresh when drafting.
        brand = await self._intake_brands.get_or_load(
            brand_id, lambda: repo.get_brand_profile(session, brand_id=brand_id)
        )
        if brand is None:
            self._intake_brands.invalidate(brand_id)  # a brand created a moment later must be found
            raise repo.unknown_brand(brand_id)
        return brand


def check_size(settings: Settings, message: InboundMessage) -> None:
    """413 for a message longer than ``max_message_chars``."""
    if len(message.text) > settings.max_message_chars:
        raise PayloadTooLarge(
            "message text is too long",
            details={"max_chars": settings.max_message_chars, "chars": len(message.text)},
        )


async def conversation_for(session: AsyncSession, brand: BrandProfile, message: InboundMessage) -> Any:
    """The customer's conversation with the brand on this channel, created on the first message."""
    return await repo.get_or_create_conversation(
        session,
        tenant_id=brand.tenant_id,
        brand_id=brand.id,
        channel=message.channel,
        customer_id=message.customer_id,
    )


def stream_payload(model: OutboundPayload | InboundQueued) -> dict[str, Any]:
    """JSON for a stream entry; without a ``trace`` key when there is no context to carry (tracing off),
    so entries stay as they were before tracing existed."""
    return model.model_dump(mode="json", exclude={"trace"} if model.trace is None else None)


def count_inbound(message: InboundMessage) -> None:
    metrics.inc(
        "ema_messages_total", channel=message.channel.value, brand=str(message.brand_id), direction="inbound"
    )
