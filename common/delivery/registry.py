"""Which sender delivers which channel.

:func:`build_registry` registers the provider senders over one shared ``httpx.AsyncClient`` (inject a
``transport`` to test against ``httpx.MockTransport`` or point the settings' base URLs at the provider
simulator). Web chat is registered from ``common/delivery/senders/webchat.py`` when that module exists
and a Redis client is given (``WebchatSender(redis, settings.redis)``). Anything else can be added with
:meth:`SenderRegistry.register`.
"""

from __future__ import annotations

import importlib
import importlib.util

import httpx
import redis.asyncio as aioredis

from common.config import Settings
from common.delivery.base import Sender
from common.delivery.senders import InstagramSender, TelegramSender, WhatsAppSender
from common.domain import Channel
from common.errors import NotFound

WEBCHAT_SENDER_MODULE = "common.delivery.senders.webchat"


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
    if redis is not None and importlib.util.find_spec(WEBCHAT_SENDER_MODULE) is not None:
        # Imported by name: web chat is another part's module and this one must work without it.
        module = importlib.import_module(WEBCHAT_SENDER_MODULE)
        registry.register(module.WebchatSender(redis, settings.redis))
    return registry
