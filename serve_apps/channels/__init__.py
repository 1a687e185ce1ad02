"""Inbound channel webhooks: one adapter per provider behind :class:`base.ChannelAdapter`.

``ADAPTERS`` is the registry the routes use; adding a channel is one adapter module plus one entry
here (and its route in :mod:`serve_apps.gateway.webhooks`). Web chat is served elsewhere (it is not a
webhook).
"""

from __future__ import annotations

from common.domain import Channel
from serve_apps.channels.base import ChannelAdapter, ChannelEvent, IgnoredEvent, ParsedEvent
from serve_apps.channels.instagram import InstagramAdapter
from serve_apps.channels.telegram import TelegramAdapter
from serve_apps.channels.whatsapp import WhatsAppAdapter

ADAPTERS: dict[Channel, ChannelAdapter] = {
    Channel.WHATSAPP: WhatsAppAdapter(),
    Channel.INSTAGRAM: InstagramAdapter(),
    Channel.TELEGRAM: TelegramAdapter(),
}


def get_adapter(channel: Channel) -> ChannelAdapter:
    """The adapter for a webhook channel; KeyError for channels without webhooks (web chat)."""
    return ADAPTERS[channel]


__all__ = ["ADAPTERS", "ChannelAdapter", "ChannelEvent", "IgnoredEvent", "ParsedEvent", "get_adapter"]
