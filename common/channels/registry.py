"""The channel registry: which adapter reads a channel's webhooks, which sender delivers its replies.

``ADAPTERS`` (stateless, one per webhook channel) is what the gateway's webhook routes use;
:func:`build_registry` registers the senders over one shared ``httpx.AsyncClient`` (inject a
``transport`` to test against ``httpx.MockTransport`` or point the settings' base URLs at the provider
simulator). Web chat has a sender (replies go out through Redis, ``WebchatSender(redis,
settings.redis)``, registered when a Redis client is given) but no adapter: it is not a webhook.
Anything else can be added with :meth:`SenderRegistry.register`.
"""

from __future__ import annotations

import httpx
import redis.asyncio as aioredis

from common.channels import instagram, telegram, whatsapp
from common.channels.base import ChannelAdapter, Sender
from common.channels.instagram import InstagramAdapter, InstagramSender
from common.channels.media import MediaFetcher
from common.channels.telegram import TelegramAdapter, TelegramSender
from common.channels.webchat import WebchatSender
from common.channels.whatsapp import WhatsAppAdapter, WhatsAppSender
from common.config import Settings
from common.domain import Channel
from common.errors import NotFound

#: Webhook channels: adding one is its module (adapter + sender) and an entry here and in build_registry.
ADAPTERS: dict[Channel, ChannelAdapter] = {
    Channel.WHATSAPP: WhatsAppAdapter(),
    Channel.INSTAGRAM: InstagramAdapter(),
    Channel.TELEGRAM: TelegramAdapter(),
}


#: How each webhook channel fetches the media its webhooks name (web chat takes no media yet).
FETCHERS: dict[Channel, MediaFetcher] = {
    Channel.WHATSAPP: whatsapp.fetch_media,
    Channel.INSTAGRAM: instagram.fetch_media,
    Channel.TELEGRAM: telegram.fetch_media,
}


def get_adapter(channel: Channel) -> ChannelAdapter:
    """The adapter for a webhook channel; KeyError for channels without webhooks (web chat)."""
    return ADAPTERS[channel]


class SenderRegistry:
    """Channel → sender, plus the HTTP client the senders share (closed with the registry)."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._senders: dict[Channel, Sender] = {}
        self._client = client

    def register(self, sender: Sender) -> None:
        """Add (or replace) the sender of ``sender.channel``."""
        self._senders[sender.channel] = sender

    def get(self, channel: Channel) -> Sender:
        """The sender of ``channel``; :class:`common.errors.NotFound` when none is registered."""
        try:
            return self._senders[channel]
        except KeyError:
            raise NotFound("no sender registered for channel", details={"channel": str(channel)}) from None

    @property
    def channels(self) -> frozenset[Channel]:
        """Channels that have a sender."""
        return frozenset(self._senders)

    async def aclose(self) -> None:
        """Close the shared HTTP client."""
        if self._client is not None:
            await self._client.aclose()


def build_registry(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    redis: aioredis.Redis | None = None,
) -> SenderRegistry:
    """Senders for every channel this deployment can deliver to, over one pooled HTTP client.

    Web chat replies go out through Redis (``redis``), so web chat is registered only when one is given.
    """
    client = httpx.AsyncClient(transport=transport, timeout=settings.delivery.http_timeout_s)
    registry = SenderRegistry(client)
    for cls in (WhatsAppSender, InstagramSender, TelegramSender):
        registry.register(cls(client=client, secrets=settings.channels))
    if redis is not None:
        registry.register(WebchatSender(redis, settings.redis))
    return registry
